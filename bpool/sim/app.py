"""The simulator's aiohttp shell: the studio page, its two RPCs, sign-in, and the admin API.

Routes (all on the sim's one origin):
    GET  /prompts/new_chat          the studio page (302 to sign-in without a live SID cookie)
    GET  /accounts.google.com/ServiceLogin, /signin    "Sign in - Google Accounts"
    GET|POST  /$rpc/...MakerSuiteService/ListModels    ")]}'\\n" + [[model entry, ...]]
    POST /$rpc/...MakerSuiteService/GenerateContent    the streamed answer (wire.py)
    /__sim/...                      admin API for tests and benchmarks (see admin.py)
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from bpool.sim import GENERATE_PATH, LIST_MODELS_PATH, NEW_CHAT_PATH, SIGNIN_PATH
from bpool.sim import admin, wire
from bpool.sim.accounts import SESSION_COOKIE, Account, AccountBook, accounts_path
from bpool.sim.settings import SimSettings
from bpool.sim.state import Record, SimState

log = logging.getLogger("bpool.sim")
STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/_sim_static/"

SETTINGS = web.AppKey("settings", SimSettings)
STATE = web.AppKey("state", SimState)
BOOK = web.AppKey("book", AccountBook)
PAGES = web.AppKey("pages", dict)

RPC_HEADERS = {"Content-Type": "application/json+protobuf; charset=UTF-8", "Cache-Control": "no-store"}
HTML_HEADERS = {"Cache-Control": "no-store"}

ERR_ARGUMENT = (400, 3, "Request contains an invalid argument.")
ERR_NOT_FOUND = (404, 5, "Requested entity was not found.")
ERR_PERMISSION = (403, 7, "The caller does not have permission")
ERR_QUOTA = (429, 8, "Resource has been exhausted (e.g. check quota).")
ERR_AUTH = (401, 16, "Request had invalid authentication credentials.")
ERR_INTERNAL = (500, 13, "Internal error encountered.")


def rpc_error(err: tuple[int, int, str]) -> web.Response:
    status, code, message = err
    return web.Response(status=status, body=wire.error_body(code, message), headers=RPC_HEADERS)


def _page(app: web.Application, name: str) -> str:
    pages = app[PAGES]
    if name not in pages:
        pages[name] = (STATIC_DIR / name).read_text(encoding="utf-8")
    return pages[name]


def _account(request: web.Request) -> Account | None:
    return request.app[BOOK].by_session(request.cookies.get(SESSION_COOKIE))


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound(NEW_CHAT_PATH)


async def new_chat(request: web.Request) -> web.Response:
    account = _account(request)
    if account is None:
        raise web.HTTPFound(f"{SIGNIN_PATH}?continue={quote(str(request.url), safe='')}")
    state = request.app[STATE]
    if state.knobs.region_blocked:
        text = _page(request.app, "regions.html")
    else:
        text = (_page(request.app, "new_chat.html")
                .replace("{{ACCOUNT_EMAIL}}", html.escape(account.email))
                .replace("{{ACCOUNT_NAME}}", html.escape(account.name))
                .replace("{{PAGE_TOKEN}}", state.mint_page_token(account.email)))
    return web.Response(text=text, content_type="text/html", headers=HTML_HEADERS)


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def signin(request: web.Request) -> web.Response:
    return web.Response(text=_page(request.app, "signin.html"), content_type="text/html",
                        headers=HTML_HEADERS)


async def list_models(request: web.Request) -> web.Response:
    if _account(request) is None:
        return rpc_error(ERR_AUTH)
    return web.Response(body=wire.list_models_body(), headers=RPC_HEADERS)


def parse_generate(body: object) -> dict:
    """The page's request (a JSON object; see static/studio.js). ValueError if malformed."""
    if not isinstance(body, dict):
        raise ValueError("body must be an object")
    contents = body.get("contents")
    if (not isinstance(contents, list) or not contents
            or not all(isinstance(c, dict) and isinstance(c.get("text"), str)
                       and c.get("role") in ("user", "model") for c in contents)
            or contents[-1]["role"] != "user"):
        raise ValueError("contents must be a list of {role, text} ending with a user turn")
    model = body.get("model")
    stops = body.get("stopSequences", [])
    max_tokens = body.get("maxOutputTokens")
    if not isinstance(model, str):
        raise ValueError("model must be a string")
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ValueError("stopSequences must be a list of strings")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise ValueError("maxOutputTokens must be an integer")
    return {
        "model": model, "contents": contents, "stops": stops, "max_tokens": max_tokens,
        "thinking": body.get("thinking") is True, "token": body.get("token"),
        "params": {k: body.get(k) for k in ("temperature", "topP", "maxOutputTokens", "stopSequences",
                                            "thinking", "thinkingBudget", "temporary")},
    }


async def generate(request: web.Request) -> web.StreamResponse:
    account = _account(request)
    if account is None:
        return rpc_error(ERR_AUTH)
    state = request.app[STATE]
    rec = state.begin(account.email, time.time())
    outcome, status = "error", 500
    try:
        resp, outcome = await _generate(request, account, state, rec)
        status = 499 if outcome == "aborted" else resp.status  # 499: client closed the request
        return resp
    except asyncio.CancelledError:  # the client went away and aiohttp cancelled the handler
        outcome, status = ("hang", 504) if rec.outcome == "hang" else ("aborted", 499)
        raise
    finally:
        state.end(rec, status, outcome, time.time())


async def _generate(request: web.Request, account: Account, state: SimState,
                    rec: Record) -> tuple[web.StreamResponse, str]:
    """The response and how it ended. A client that goes away is not an error: the handler returns
    quietly and aiohttp drops the connection."""
    try:
        req = parse_generate(await request.json())
    except ValueError:  # also JSONDecodeError and bad UTF-8
        return rpc_error(ERR_ARGUMENT), "error"
    prompt = req["contents"][-1]["text"]
    rec.model, rec.prompt_chars, rec.turns = req["model"], len(prompt), len(req["contents"])
    rec.params = req["params"]
    if not state.check_request_token(account.email, req["token"]):
        return rpc_error(ERR_PERMISSION), "error"
    if wire.find_model(req["model"]) is None:
        return rpc_error(ERR_NOT_FOUND), "error"
    if not state.take_quota(account.email, time.time()):
        return rpc_error(ERR_QUOTA), "error"
    rule = state.take_fail_rule(account.email)
    if rule is not None and rule.mode == "error":
        code, message = (ERR_INTERNAL[1:] if rule.status >= 500 else (9, "Simulated failure."))
        return rpc_error((rule.status, code, message)), "error"
    if rule is not None and rule.mode == "hang":
        rec.outcome = "hang"
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.1)
        return web.Response(status=504), "hang"

    history = "".join(c["text"] for c in req["contents"])
    answer = wire.build_answer(account.email, prompt, thinking=req["thinking"],
                               max_tokens=req["max_tokens"], stops=req["stops"],
                               prompt_tokens=wire.estimate_tokens(history))
    writes = wire.plan_writes(answer.chunks, state.knobs.pace)
    cut_at = len(writes) // 2 if rule is not None and rule.mode == "cut" else None

    resp = web.StreamResponse(status=200, headers=RPC_HEADERS)
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, (offset, data) in enumerate(writes):
            if i == cut_at and request.transport is not None:
                request.transport.close()  # the data so far, then EOF without the last chunk
                return resp, "cut"
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(data)
            if rec.first_byte is None:
                rec.first_byte = time.time()
        await resp.write_eof()
    except ConnectionError:
        return resp, "aborted"
    return resp, "ok"


@web.middleware
async def errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("sim: unexpected error on %s", request.path)
        if request.path.startswith(admin.PREFIX):
            return web.json_response({"error": "internal error"}, status=500)
        return rpc_error(ERR_INTERNAL)


def create_app(settings: SimSettings) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[STATE] = SimState(settings.knobs)
    app[BOOK] = AccountBook(accounts_path(settings.dir))
    app[PAGES] = {}
    r = app.router
    r.add_get("/", root)
    r.add_get(NEW_CHAT_PATH, new_chat)
    r.add_get(SIGNIN_PATH, signin)
    r.add_get("/signin", signin)
    r.add_get("/favicon.ico", no_content)  # keeps browser consoles free of 404 noise
    r.add_route("*", LIST_MODELS_PATH, list_models)
    r.add_post(GENERATE_PATH, generate)
    r.add_static(STATIC_URL, STATIC_DIR)
    admin.add_routes(app, STATE, BOOK)
    return app
