"""The page origin: the studio page, sign-in, static files and the admin API.

    GET  /prompts/new_chat[?model=<id>]     the studio page (302 to sign-in without a live SID)
    GET  /prompts/<id>                      the same page (a saved chat's URL; opens empty)
    GET|POST /accounts.google.com/ServiceLogin, GET /signin   "Sign in - Google Accounts" (signin.py)
    /__sim/...                              admin API for tests and benchmarks (admin.py)

The page calls the RPC host (rpc.py), another origin, with XMLHttpRequest and credentials.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from bpool.sim import NEW_CHAT_PATH, SIGNIN_PATH, admin, models, signin
from bpool.sim.context import SHARED, Shared, account_of, log, shared

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/_sim_static/"
HTML_HEADERS = {"Cache-Control": "no-store"}
PAGES = web.AppKey("pages", dict)
# A stand-in for the page's public API key header (the real page sends one; never a secret here).
API_KEY = "AIzaSy-simulated-studio-key-0000000000"


def _page(app: web.Application, name: str) -> str:
    pages = app[PAGES]
    if name not in pages:
        pages[name] = (STATIC_DIR / name).read_text(encoding="utf-8")
    return pages[name]


def boot_data(sh: Shared, email: str, name: str, tos: bool) -> str:
    """What the page's scripts start from, as JSON safe inside a <script> element."""
    data = {
        "email": email, "name": name, "tos": tos, "rpcOrigin": sh.origins.rpc,
        "pageToken": sh.state.mint_page_token(email), "visitId": secrets.token_hex(8),
        "apiKey": API_KEY, "knobs": sh.state.knobs.page(),
        "caps": {f"models/{m.id}": m.public() for m in models.MODELS},
    }
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound(NEW_CHAT_PATH)


async def studio_page(request: web.Request) -> web.Response:
    account = account_of(request)
    if account is None:
        raise web.HTTPFound(f"{SIGNIN_PATH}?continue={quote(str(request.url), safe='')}")
    sh = shared(request)
    if sh.state.knobs.region_blocked:
        text = _page(request.app, "regions.html")
    else:
        text = (_page(request.app, "new_chat.html")
                .replace("{{ACCOUNT_EMAIL}}", html.escape(account.email))
                .replace("{{ACCOUNT_NAME}}", html.escape(account.name))
                .replace("{{BOOT}}", boot_data(sh, account.email, account.name, account.tos)))
    return web.Response(text=text, content_type="text/html", headers=HTML_HEADERS)


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


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
        return web.json_response({"error": "internal error"}, status=500)


def create_page_app(sh: Shared) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=sh.settings.max_request_bytes)
    app[SHARED] = sh
    app[PAGES] = {}
    r = app.router
    r.add_get("/", root)
    r.add_get(NEW_CHAT_PATH, studio_page)
    r.add_get("/prompts/{prompt_id}", studio_page)
    signin.add_routes(app)
    r.add_get("/favicon.ico", no_content)  # keeps browser consoles free of 404 noise
    r.add_static(STATIC_URL, STATIC_DIR)
    admin.add_routes(app)
    return app
