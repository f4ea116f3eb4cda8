"""The front's aiohttp application: routes, the request middleware, the broker link's lifetime.

Chat lives in chat.py, client errors are made in errors.py, keys and origins are checked in
guard.py; this module wires them: `make_app` (the app factory), `serve` (run until SIGTERM, then
drain open responses within BPOOL_DRAIN_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from bpool import config
from bpool.front.appstate import LINK, REQUEST_ID, SETTINGS
from bpool.front.broker_link import BrokerLink
from bpool.front.chat import chat_completions
from bpool.front.errors import (ApiError, error_body, error_response, error_type, json_response,
                                retry_after_header)
from bpool.front.guard import allowed_origin, check_key, cors_headers, health_view, preflight
from bpool.front import anthropic, gemini, metrics, pool_page
from bpool.front.shapes import format_errors
from bpool.front.schema import models_json
from bpool.front.server import FrontRunner
from bpool.front.settings import FrontSettings
from bpool.sessions import api as sessions_api

log = logging.getLogger("bpool.front")

OPEN_PATHS = frozenset({"/health", *pool_page.PUBLIC_PATHS})  # the page; never its data
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, origin and key checks, then the handler; every failure is answered by
    errors.error_response (OpenAI's error JSON, never a traceback)."""
    client_id = request.headers.get("x-request-id", "")
    rid = client_id if _CLIENT_REQUEST_ID.match(client_id) else f"req-{uuid.uuid4().hex}"
    request[REQUEST_ID] = rid
    try:
        settings = request.app[SETTINGS]
        origin = allowed_origin(request, settings)  # a page from elsewhere: 403
        answer = preflight(request, origin) if origin else None
        if answer is not None:
            return answer
        if request.path not in OPEN_PATHS and not metrics.is_public(request):
            check_key(request, settings)
        resp = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            exc.headers["x-request-id"] = rid
            raise
        return error_response(exc, rid, f"{request.method} {request.path}")
    except ConnectionResetError:
        raise  # the client is gone: nobody to answer
    except Exception as exc:
        return error_response(exc, rid, f"{request.method} {request.path}")
    if not resp.prepared:
        resp.headers["x-request-id"] = rid
    return resp


async def list_models(request: web.Request) -> web.Response:
    settings, link = request.app[SETTINGS], request.app[LINK]
    status = await link.status(settings.status_timeout_s)
    return json_response(models_json(status.workers))


POOL_MODE = web.AppKey("pool_mode", str)


async def demo_header(request: web.Request, response: web.StreamResponse) -> None:
    if request.app[POOL_MODE] == "demo":  # answers come from the simulator, not Google
        response.headers["x-bpool-demo"] = "1"


async def no_accounts(request: web.Request) -> web.Response:
    raise ApiError(503, "no accounts: the pool has no cookie file, so no worker runs; add one "
                   "and sync (docs/operations.md)", code="no_accounts")


async def health(request: web.Request) -> web.Response:
    settings, link = request.app[SETTINGS], request.app[LINK]
    front = {"in_flight": len(link.jobs), "broker_ok": link.broker_ok, "counters": link.counters}
    mode = {"mode": request.app[POOL_MODE]} if request.app[POOL_MODE] else {}
    try:
        status = await link.status(settings.status_timeout_s)
    except ApiError as exc:
        return json_response(health_view(request, {"status": "unavailable", "front": front,
                                                   **mode, **exc.body()}),
                             503, retry_after_header(exc.retry_after_s))
    workers = [
        {"profile_id": w.profile_id, "state": w.state, "account": w.account,
         "last_error": w.last_error, "engine": w.engine, "pid": w.pid,
         "jobs_served": w.jobs_served, "since_s": round(w.since_s, 3), "job_id": w.job_id,
         "cooldown_remaining_s": w.cooldown_remaining_s, "models": list(w.models),
         "cookie_expires_at": w.cookie_expires_at, "last_answer_s": w.last_answer_s,
         "cooling": w.cooling}  # model -> seconds left of its rate-limit cool-down
        for w in status.workers
    ]
    ok = any(w.state in ("idle", "busy") for w in status.workers)
    body = {
        "status": "ok" if ok else "unavailable",
        **mode,
        "broker_id": status.broker_id,
        "workers": workers,
        "idle": sum(w.state == "idle" for w in status.workers),
        "busy": sum(w.state == "busy" for w in status.workers),
        "queue_length": status.queue_length,
        "counters": status.counters,
        "usage": [{"profile_id": u.profile_id, "model": u.model, "requests": u.requests,
                   "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                   "errors": u.errors} for u in status.usage],
        "front": front,
    }
    if not ok and request.app[POOL_MODE] == "none":
        body.update(error_body("no accounts: the pool has no cookie file", error_type(503),
                               None, "no_accounts"))
    elif not ok:
        body.update(error_body("No worker is available", error_type(503), None, "no_workers"))
    return json_response(health_view(request, body), 200 if ok else 503)


def make_app(settings: FrontSettings) -> web.Application:
    app = web.Application(middlewares=[format_errors, openai_errors],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[POOL_MODE] = config.value("BPOOL_POOL_MODE")
    app.on_response_prepare.append(cors_headers)
    app.on_response_prepare.append(demo_header)

    async def broker_link(app: web.Application) -> AsyncIterator[None]:
        link = BrokerLink(settings.broker_endpoint, settings.heartbeat_interval_s,
                          settings.heartbeat_liveness)
        await link.start()
        app[LINK] = link
        yield
        await link.close()

    app.cleanup_ctx.append(broker_link)
    app.router.add_post("/v1/chat/completions",
                        no_accounts if app[POOL_MODE] == "none" else chat_completions)
    app.router.add_get("/v1/models", list_models)
    # The same pool in other clients' formats (docs/clients.md).
    none = app[POOL_MODE] == "none"
    app.router.add_post("/v1/messages", no_accounts if none else anthropic.messages)
    app.router.add_post("/v1beta/models/{target}", no_accounts if none else gemini.generate)
    app.router.add_get("/v1beta/models", gemini.list_models)
    app.router.add_get("/health", health)
    pool_page.install(app)
    metrics.install(app)
    sessions_api.install(app)  # browser sessions (docs/sessions.md)
    return app


def make_runner(app: web.Application, settings: FrontSettings) -> web.AppRunner:
    # access_log=None: chat.py logs one line per request (id, job, profile, outcome, duration);
    # aiohttp's access log would also print the raw request line.
    return FrontRunner(app, handler_cancellation=True, access_log=None,
                       # aiohttp reads 0 as "no limit": no drain must cut at once instead.
                       shutdown_timeout=settings.drain_timeout_s or 0.001,
                       keepalive_timeout=settings.keepalive_timeout_s)


async def serve(settings: FrontSettings) -> int:
    if not settings.api_keys:
        log.warning("no API keys configured (BPOOL_API_KEYS / BPOOL_API_KEYS_FILE): "
                    "the API is open to anyone who can reach %s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    config.stop_on_signals(stop.set, loop)  # the first only records; the loop below shuts down
    runner = make_runner(make_app(settings), settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
            return 2
        log.info("listening on http://%s:%d (broker %s)", settings.host, settings.port,
                 settings.broker_endpoint)
        await stop.wait()
        log.info("shutting down")
        return 0
    finally:
        await runner.cleanup()


