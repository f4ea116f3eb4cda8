"""The OpenAI-compatible HTTP front: validates, authenticates, streams. Holds no pool state.

    python -m bpool.http_front [--host H] [--port P]

Settings come from BPOOL_* variables (bpool.front.settings); the broker is reached over a DEALER
(bpool.front.broker_link). Every failure, including unknown routes, is answered in OpenAI's error
shape, and every response carries `x-request-id`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import uuid
from typing import AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web

from bpool import config
from bpool.front.broker_link import BrokerLink
from bpool.front.chat import chat_completions, retry_after_header
from bpool.front.guard import allowed_origin, check_key, cors_headers, health_view, preflight
from bpool.front.keys import LINK, REQUEST_ID, SETTINGS
from bpool.front.server import FrontRunner
from bpool.front.settings import FrontSettings
from bpool.openai_schema import ApiError, error_body, error_type, models_json

log = logging.getLogger("bpool.front")

OPEN_PATHS = frozenset({"/health"})
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, headers=headers,
                        content_type="application/json")


def _http_error(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return ApiError(404, "Unknown URL; see /v1/chat/completions, /v1/models, /health",
                        code="unknown_url")
    if exc.status == 405:
        return ApiError(405, f"Method not allowed; use {exc.headers.get('Allow', '?')}",
                        code="method_not_allowed")
    if exc.status == 413:
        return ApiError(413, "The request body is too large", code="request_too_large")
    return ApiError(exc.status, exc.reason or "HTTP error", code=None)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place that turns failures into OpenAI error JSON (never a traceback)."""
    client_id = request.headers.get("x-request-id", "")
    rid = client_id if _CLIENT_REQUEST_ID.match(client_id) else f"req-{uuid.uuid4().hex}"
    request[REQUEST_ID] = rid
    headers = {"x-request-id": rid}
    try:
        settings = request.app[SETTINGS]
        origin = allowed_origin(request, settings)  # a page from elsewhere: 403
        answer = preflight(request, origin) if origin else None
        if answer is not None:
            return answer
        if request.path not in OPEN_PATHS:
            check_key(request, settings)
        resp = await handler(request)
    except ApiError as exc:
        err = exc
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            exc.headers.update(headers)
            raise
        err = _http_error(exc)
    except ConnectionResetError:
        raise  # the client is gone: nobody to answer
    except Exception:
        log.exception("request %s %s %s failed", rid, request.method, request.path)
        err = ApiError(500, "Internal error", code="internal")
    else:
        if not resp.prepared:
            resp.headers.update(headers)
        return resp
    headers.update(retry_after_header(err.retry_after_s))
    return json_response(err.body(), err.status, headers)


async def list_models(request: web.Request) -> web.Response:
    settings, link = request.app[SETTINGS], request.app[LINK]
    status = await link.status(settings.status_timeout_s)
    return json_response(models_json(status.workers))


async def health(request: web.Request) -> web.Response:
    settings, link = request.app[SETTINGS], request.app[LINK]
    front = {"in_flight": len(link.jobs), "broker_ok": link.broker_ok, "counters": link.counters}
    try:
        status = await link.status(settings.status_timeout_s)
    except ApiError as exc:
        return json_response(health_view(request, {"status": "unavailable", "front": front,
                                                   **exc.body()}),
                             503, retry_after_header(exc.retry_after_s))
    workers = [
        {"profile_id": w.profile_id, "state": w.state, "account": w.account,
         "last_error": w.last_error, "engine": w.engine, "pid": w.pid,
         "jobs_served": w.jobs_served, "since_s": round(w.since_s, 3), "job_id": w.job_id,
         "cooldown_remaining_s": w.cooldown_remaining_s, "models": list(w.models)}
        for w in status.workers
    ]
    ok = any(w.state in ("idle", "busy") for w in status.workers)
    body = {
        "status": "ok" if ok else "unavailable",
        "broker_id": status.broker_id,
        "workers": workers,
        "idle": sum(w.state == "idle" for w in status.workers),
        "busy": sum(w.state == "busy" for w in status.workers),
        "queue_length": status.queue_length,
        "counters": status.counters,
        "front": front,
    }
    if not ok:
        body.update(error_body("No worker is available", error_type(503), None, "no_workers"))
    return json_response(health_view(request, body), 200 if ok else 503)


def make_app(settings: FrontSettings) -> web.Application:
    app = web.Application(middlewares=[openai_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app.on_response_prepare.append(cors_headers)

    async def broker_link(app: web.Application) -> AsyncIterator[None]:
        link = BrokerLink(settings.broker_endpoint, settings.heartbeat_interval_s,
                          settings.heartbeat_liveness)
        await link.start()
        app[LINK] = link
        yield
        await link.close()

    app.cleanup_ctx.append(broker_link)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    return app


def make_runner(app: web.Application, settings: FrontSettings) -> web.AppRunner:
    # access_log=None: chat.py logs one line per request (id, job, profile, outcome, duration);
    # aiohttp's access log would also print the raw request line.
    return FrontRunner(app, handler_cancellation=True, access_log=None,
                       shutdown_timeout=settings.drain_timeout_s,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpool.http_front", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="listen address (BPOOL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (BPOOL_PORT, default 2048)")
    args = parser.parse_args(argv)
    try:
        config.setup_logging("front")
        settings = FrontSettings.from_env({"host": args.host, "port": args.port})
    except config.ConfigError as exc:
        print(f"bpool front: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    config.add_secret(*settings.api_keys)  # scrubbed from every log line, whatever logs it
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    raise SystemExit(main())
