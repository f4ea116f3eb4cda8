"""The RPC host: a second origin the page calls cross-origin, like
https://alkalimakersuite-pa.clients6.google.com on the real site (docs/aistudio-page.md).

    OPTIONS  /$rpc/...                      CORS preflight: only the page's origin, with credentials
    GET|POST .../ListModels                 ")]}'\\n" + [[model entry, ...]]
    POST     .../GenerateContent            the streamed answer (wire.py; generate.py)
    POST     .../StreamGenerateContentPerUserQuota   404 "Ambiguous request" (nexus-studio's live run)
    POST     .../CountTokens                [n, [], null, null, null, [[1, n]]]
    POST     .../CreatePrompt, UpdatePrompt the page saving a non-temporary chat to the account
    POST     .../AcceptTermsOfService       the consent dialog's Continue (assumption: name)

Requests without a live session cookie answer 401 `[,[16,...]]`.
"""

from __future__ import annotations

import asyncio
import json
import secrets

from aiohttp import web

from bpool.sim import (ACCEPT_TERMS, COUNT_TOKENS, CREATE_PROMPT, GENERATE, LIST_MODELS,
                       PER_USER_QUOTA, RPC_PREFIX, UPDATE_PROMPT, generate, models, request, wire)
from bpool.sim.accounts import set_tos
from bpool.sim.context import SHARED, Shared, account_of, log, shared

RPC_HEADERS = {"Content-Type": "application/json+protobuf; charset=UTF-8", "Cache-Control": "no-store"}
# What the real page sends besides the body (nexus-studio pure_capture.py, session tests; a
# public project's kept-header list): every one of them makes the browser preflight.
ALLOWED_HEADERS = ("content-type, authorization, x-goog-api-key, x-goog-authuser, x-user-agent, "
                   "x-goog-ext-519733851-bin, x-aistudio-visit-id")
AMBIGUOUS = ("Ambiguous request for service '' and method "
             "'/GenerativeService.StreamGenerateContentPerUserQuota'. Please use fully qualified names.")
ERR_AUTH = (401, 16, "Request had invalid authentication credentials.")
ERR_ARGUMENT = (400, 3, "Request contains an invalid argument.")
ERR_INTERNAL = (500, 13, "Internal error encountered.")


def http_error(err: tuple[int, int, str]) -> web.Response:
    status, code, message = err
    return web.Response(status=status, body=wire.error_body(code, message), headers=RPC_HEADERS)


def _cors_headers(sh: Shared, origin: str | None) -> dict[str, str]:
    if not origin or origin != sh.origins.page:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin"}


@web.middleware
async def cors(req: web.Request, handler) -> web.StreamResponse:
    sh = shared(req)
    headers = _cors_headers(sh, req.headers.get("Origin"))
    if req.method == "OPTIONS":
        sh.state.rpcs["OPTIONS"] += 1
        if not headers:
            return web.Response(status=403)
        return web.Response(status=200, headers={
            **headers, "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS, "Access-Control-Max-Age": "3600"})
    sh.state.rpcs[req.path.rsplit("/", 1)[-1]] += 1
    try:
        resp = await handler(req)
    except web.HTTPException as e:
        e.headers.update(headers)
        raise
    except (ConnectionError, asyncio.CancelledError):
        raise
    except BadBody:
        resp = http_error(ERR_ARGUMENT)
    except Exception:
        log.exception("sim: unexpected error on %s", req.path)
        resp = http_error(ERR_INTERNAL)
    if not resp.prepared:  # a streamed answer set its headers before it started (generate.py)
        resp.headers.update(headers)
    return resp


class BadBody(Exception):
    """The request body is not JSON: INVALID_ARGUMENT (the cors middleware answers it)."""


async def _json(req: web.Request) -> object:
    try:
        return json.loads(await req.text())
    except (ValueError, UnicodeDecodeError):
        raise BadBody from None


async def list_models(req: web.Request) -> web.Response:
    if account_of(req) is None:
        return http_error(ERR_AUTH)
    return web.Response(body=models.list_models_body(), headers=RPC_HEADERS)


async def per_user_quota(req: web.Request) -> web.Response:
    if account_of(req) is None:
        return http_error(ERR_AUTH)
    await req.read()
    return http_error((404, 5, AMBIGUOUS))


async def count_tokens(req: web.Request) -> web.Response:
    account = account_of(req)
    if account is None:
        return http_error(ERR_AUTH)
    try:
        _, text = request.parse_count_tokens(await _json(req))
    except ValueError:
        return http_error(ERR_ARGUMENT)
    if account.tos:
        return generate.service_error(shared(req).state.knobs, *generate.PERMISSION)
    n = wire.estimate_tokens(text) if text else 0
    return web.Response(body=wire.dumps([n, [], None, None, None, [[1, n]]]).encode(),
                        headers=RPC_HEADERS)


async def save_prompt(req: web.Request) -> web.Response:
    """[prompt id | null, contents, "models/<id>", "<response id>"] -> ["prompts/<id>"]."""
    account = account_of(req)
    if account is None:
        return http_error(ERR_AUTH)
    body = await _json(req)
    if not isinstance(body, list) or len(body) < 4 or not isinstance(body[3], str):
        return http_error(ERR_ARGUMENT)
    shared(req).state.mark_saved(account.email, body[3])
    prompt_id = body[0] if isinstance(body[0], str) else "prompts/" + secrets.token_urlsafe(24)
    return web.Response(body=wire.dumps([prompt_id]).encode(), headers=RPC_HEADERS)


async def accept_terms(req: web.Request) -> web.Response:
    account = account_of(req)
    if account is None:
        return http_error(ERR_AUTH)
    await req.read()
    set_tos(shared(req).book.path, account.email, False)
    return web.Response(body=b"[]", headers=RPC_HEADERS)


async def generate_handler(req: web.Request) -> web.StreamResponse:
    account = account_of(req)
    if account is None:
        return http_error(ERR_AUTH)
    sh = shared(req)
    return await generate.handle(req, account, sh, await _json(req),
                                 _cors_headers(sh, req.headers.get("Origin")))


def create_rpc_app(sh: Shared) -> web.Application:
    app = web.Application(middlewares=[cors], client_max_size=sh.settings.max_request_bytes)
    app[SHARED] = sh
    r = app.router
    r.add_route("*", RPC_PREFIX + LIST_MODELS, list_models)
    r.add_post(RPC_PREFIX + GENERATE, generate_handler)
    r.add_post(RPC_PREFIX + PER_USER_QUOTA, per_user_quota)
    r.add_post(RPC_PREFIX + COUNT_TOKENS, count_tokens)
    r.add_post(RPC_PREFIX + CREATE_PROMPT, save_prompt)
    r.add_post(RPC_PREFIX + UPDATE_PROMPT, save_prompt)
    r.add_post(RPC_PREFIX + ACCEPT_TERMS, accept_terms)
    return app
