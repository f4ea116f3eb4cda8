"""The front's browser-session API (same API keys as chat; docs/sessions.md):

    POST   /v1/sessions                {timeout_s?, idle_timeout_s?, record?, queue_s?, profile?}
    GET    /v1/sessions[?state=&limit=]
    GET    /v1/sessions/{id}
    DELETE /v1/sessions/{id}
    GET    /v1/sessions/{id}/ws           the CDP WebSocket (relay.py)
    GET    /v1/sessions/{id}/json/version for clients that discover the socket over HTTP
    GET    /v1/sessions/{id}/recording

`install(app)` adds the routes, the placement link's lifetime and the session metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any, AsyncIterator, ClassVar

import aiohttp
import msgspec
from aiohttp import web

from bpool import config
from bpool.front.appstate import LINK as BROKER
from bpool.front.errors import ApiError, json_response
from bpool.front.settings import presented_key
from bpool.sessions import protocol as sp
from bpool.sessions.book import open_book
from bpool.sessions.log import key_id_of
from bpool.sessions.leases import FrontLeases
from bpool.sessions.link import PlacementUnavailable, SessionLink
from bpool.sessions.metrics import install_metrics
from bpool.sessions.placement_shell import front_endpoint
from bpool.sessions.store import CONTENT_TYPES, RecordingNotFound, open_store
from bpool.sessions.relay import CLOSE_GOING_AWAY, Relays, relay

log = logging.getLogger("bpool.front")

SESSION_ID = re.compile(r"^s-[0-9a-f]{24}$")
FIELDS = {"timeout_s", "idle_timeout_s", "record", "queue_s", "profile"}


@dataclass(frozen=True)
class SessionApiSettings:
    ENV: ClassVar[dict[str, str]] = {
        "timeout_s": "BPOOL_SESSION_TIMEOUT_S", "idle_timeout_s": "BPOOL_SESSION_IDLE_TIMEOUT_S",
        "queue_max_s": "BPOOL_SESSION_QUEUE_MAX_S",
        "start_timeout_s": "BPOOL_SESSION_START_TIMEOUT_S",
        "heartbeat_interval_s": "BPOOL_HEARTBEAT_INTERVAL_S",
        "heartbeat_liveness": "BPOOL_HEARTBEAT_LIVENESS",
        "status_timeout_s": "BPOOL_STATUS_TIMEOUT_S",
        "account_leases": "BPOOL_ACCOUNT_LEASES",
    }
    endpoint: str
    timeout_s: config.Positive = config.default("BPOOL_SESSION_TIMEOUT_S")
    idle_timeout_s: config.Positive = config.default("BPOOL_SESSION_IDLE_TIMEOUT_S")
    queue_max_s: config.NonNegative = config.default("BPOOL_SESSION_QUEUE_MAX_S")
    start_timeout_s: config.Positive = config.default("BPOOL_SESSION_START_TIMEOUT_S")
    heartbeat_interval_s: config.Positive = config.default("BPOOL_HEARTBEAT_INTERVAL_S")
    heartbeat_liveness: config.Count = config.default("BPOOL_HEARTBEAT_LIVENESS")
    status_timeout_s: config.Positive = config.default("BPOOL_STATUS_TIMEOUT_S")
    account_leases: bool = config.default("BPOOL_ACCOUNT_LEASES")

    @classmethod
    def from_env(cls) -> "SessionApiSettings":
        return config.build(cls, {"endpoint": front_endpoint()})


SETTINGS = web.AppKey("session_settings", SessionApiSettings)
LINK = web.AppKey("session_link", SessionLink)
RELAYS = web.AppKey("session_relays", Relays)
LEASES = web.AppKey("session_leases", FrontLeases)
HTTP = web.AppKey("session_http", aiohttp.ClientSession)


def _number(body: dict, name: str, low: float, high: float, default: float,
            low_ok: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number of seconds", param=name,
                       code="invalid_value")
    if value < low or (value == low and not low_ok) or value > high:
        bound = f"{'at least' if low_ok else 'more than'} {low:g} and at most {high:g}"
        raise ApiError(400, f"{name} must be {bound} (got {value:g})", param=name,
                       code="invalid_value")
    return float(value)


def parse_create(raw: bytes, s: SessionApiSettings, key_id: str = "anonymous",
                 leases: bool = False) -> sp.CreateSession:
    """The request body as a CreateSession (req 0), or ApiError 400 / 501 saying what is wrong.
    With `leases`, a `profile` is allowed (create() reads it itself)."""
    try:
        body: Any = msgspec.json.decode(raw) if raw.strip() else {}
    except msgspec.DecodeError:
        raise ApiError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (known: {', '.join(sorted(FIELDS))})",
                       param=unknown[0], code="unknown_field")
    profile = body.get("profile")
    if profile is not None and leases:
        if not isinstance(profile, str) or not profile.strip():
            raise ApiError(400, "profile must be a profile's name", param="profile",
                           code="invalid_value")
        if body.get("record") not in (None, "none"):
            raise ApiError(400, "a lease of an account's browser is not recorded",
                           param="record", code="invalid_value")
    elif profile is not None:
        raise ApiError(501, "leasing an account's browser (profile) is off on this pool "
                            "(BPOOL_ACCOUNT_LEASES=1 turns it on)",
                       param="profile", code="not_supported")
    record = body.get("record") or "none"
    if record not in sp.RECORD_KINDS:
        raise ApiError(400, "record must be one of har, video, none", param="record",
                       code="invalid_value")
    timeout = _number(body, "timeout_s", 0, s.timeout_s, s.timeout_s)
    idle = _number(body, "idle_timeout_s", 0, s.idle_timeout_s, min(s.idle_timeout_s, timeout))
    queue = _number(body, "queue_s", 0, s.queue_max_s, 0.0, low_ok=True)
    return sp.CreateSession(0, timeout, idle, record, queue, key_id)


def public(request: web.Request, info: sp.SessionInfo) -> dict[str, Any]:
    """A session as the client sees it: the front's relay URL, never the browser's own."""
    scheme = "wss" if request.secure else "ws"
    out = {f: getattr(info, f) for f in sp.SessionInfo.__struct_fields__ if f != "ws_url"}
    out["ws_url"] = f"{scheme}://{request.host}/v1/sessions/{info.id}/ws"
    return out


async def _ask(request: web.Request, make, timeout_s: float | None = None):
    s, link = request.app[SETTINGS], request.app[LINK]
    try:
        return await link.ask(make, timeout_s or s.status_timeout_s)
    except PlacementUnavailable as exc:
        raise ApiError(503, f"{exc}; try again shortly", code="sessions_unavailable",
                       retry_after_s=1.0) from None


def _reply_error(reply: sp.SessionReply) -> ApiError:
    if reply.error == "not_found":
        return ApiError(404, "no such session", code="session_not_found")
    if reply.error == "no_capacity":
        return ApiError(429, f"no free browser: {reply.message}", code="no_capacity",
                        retry_after_s=reply.retry_after_s or 1.0)
    return ApiError(503, f"the session's browser did not start: {reply.message}",
                    code=reply.error or "start_failed", retry_after_s=1.0)


def _session_id(request: web.Request) -> str:
    sid = request.match_info["id"]
    if not SESSION_ID.match(sid):
        raise ApiError(404, "no such session", code="session_not_found")
    return sid


async def create(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    key = presented_key(request.headers.get("Authorization"), request.headers.get("X-API-Key"))
    raw = await request.read()
    ask = parse_create(raw, s, key_id_of(key), leases=s.account_leases)
    profile = msgspec.json.decode(raw).get("profile") if raw.strip() else None
    if profile is not None:  # an account lease, through the broker (sessions/leases.py)
        info = await request.app[LEASES].create(
            request.app[BROKER], profile.strip(), ask.timeout_s, ask.idle_timeout_s, ask.key_id,
            s.start_timeout_s + 5)
        return json_response(public(request, info), 201)
    reply = await _ask(request, lambda req: msgspec.structs.replace(ask, req=req),
                       ask.queue_s + s.start_timeout_s + 10)  # the placement's bound + 5 s
    if reply.error is not None or reply.session is None:
        log.info("session refused: %s %s", reply.error, reply.message)
        raise _reply_error(reply)
    i = reply.session
    log.info("session %s created on %s (timeout %g s, idle %g s, record %s, key %s)", i.id,
             i.host, i.timeout_s, i.idle_timeout_s, i.record, i.key_id)
    return json_response(public(request, i), 201)


async def get_one(request: web.Request) -> web.Response:
    sid = _session_id(request)
    leased = request.app[LEASES].get(sid)
    if leased is not None:
        return json_response(public(request, leased))
    reply = await _ask(request, lambda req: sp.GetSession(req, sid))
    if reply.session is None:
        raise _reply_error(reply)
    return json_response(public(request, reply.session))


async def list_all(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in sp.STATES:
        raise ApiError(400, f"state must be one of {', '.join(sp.STATES)}", param="state",
                       code="invalid_value")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise ApiError(400, "limit must be a whole number from 1 to 1000", param="limit",
                       code="invalid_value")
    reply = await _ask(request, lambda req: sp.ListSessions(req, state, limit))
    leased = [i for i in request.app[LEASES].all() if state is None or i.state == state]
    return json_response({"object": "list",
                          "data": [public(request, i) for i in [*leased, *reply.sessions]][:limit]})


async def delete(request: web.Request) -> web.Response:
    sid = _session_id(request)
    leased = await request.app[LEASES].delete(request.app[BROKER], sid)
    if leased is not None:
        log.info("session %s (lease of %s) deleted", sid, leased.profile)
        return json_response(public(request, leased))
    reply = await _ask(request, lambda req: sp.DeleteSession(req, sid))
    if reply.session is None:
        raise _reply_error(reply)
    log.info("session %s deleted", sid)
    return json_response(public(request, reply.session))


async def _live(request: web.Request) -> sp.SessionInfo:
    sid = _session_id(request)
    info = request.app[LEASES].get(sid)
    if info is None:
        reply = await _ask(request, lambda req: sp.GetSession(req, sid))
        if reply.session is None:
            raise _reply_error(reply)
        info = reply.session
    if info.state == "ended":
        raise ApiError(410, f"the session has ended ({info.end_reason})", code="session_ended")
    if not info.ws_url:
        raise ApiError(409, "the session's browser is still starting", code="session_starting",
                       retry_after_s=1.0)
    return info


async def websocket(request: web.Request) -> web.StreamResponse:
    info = await _live(request)
    relays = request.app[RELAYS]
    if relays.busy(info.id):
        raise ApiError(409, "another client is connected to this session", code="session_busy")

    async def ended_reason(sid: str) -> str | None:
        """Why the session's browser went away. A host that died is noticed by the placement
        only after its heartbeats stop: wait that long for the reason before saying none."""
        deadline = loop.time() + s.heartbeat_interval_s * s.heartbeat_liveness + 1.0
        while (leased := request.app[LEASES].get(sid)) is not None:
            if leased.state == "ended":
                return leased.end_reason
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.2)
        while True:
            try:
                reply = await request.app[LINK].ask(lambda req: sp.GetSession(req, sid), 2.0)
            except PlacementUnavailable:
                return None
            i = reply.session
            if i is not None and i.state == "ended":
                return i.end_reason
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.2)

    s, loop = request.app[SETTINGS], asyncio.get_running_loop()
    return await relay(request, info, relays, request.app[HTTP], ended_reason)


async def json_version(request: web.Request) -> web.Response:
    """What Chromium answers at /json/version, pointing at the relay: CDP clients given an
    http:// endpoint (Playwright's connect_over_cdp, Puppeteer's browserURL) read it first."""
    info = await _live(request)
    return json_response({"Browser": "Chromium (bpool session)", "Protocol-Version": "1.3",
                          "webSocketDebuggerUrl": public(request, info)["ws_url"]})


async def recording(request: web.Request) -> web.StreamResponse:
    sid = _session_id(request)
    reply = await _ask(request, lambda req: sp.GetSession(req, sid))
    if reply.session is None:
        raise _reply_error(reply)
    if not reply.session.recording:
        raise ApiError(404, "this session has no recording", code="no_recording")
    try:
        data = await open_store().get(reply.session.recording)
    except RecordingNotFound:
        raise ApiError(404, "the recording is no longer stored", code="no_recording") from None
    name = reply.session.recording.rsplit("/", 1)[-1]
    kind = CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
    return web.Response(body=data, content_type=kind,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def install(app: web.Application) -> None:
    """The session routes on the front's app (after metrics.install)."""
    s = SessionApiSettings.from_env()
    app[SETTINGS] = s
    relays = app[RELAYS] = Relays()
    leases = app[LEASES] = FrontLeases(relays)
    install_metrics(app, relays)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        link = SessionLink(s.endpoint, s.heartbeat_interval_s, relays.traffic)
        await link.start()
        app[LINK] = link
        app[HTTP] = aiohttp.ClientSession()
        if s.account_leases:  # leases are written to the log by the front that holds them
            leases.book = open_book(config.run_dir())
            await leases.book.open()
        yield
        if leases.book is not None:  # on_shutdown has ended (and written) the leases
            await leases.book.close()
        await relays.close_all(CLOSE_GOING_AWAY, "the front is shutting down")
        await app[HTTP].close()
        await link.close()

    async def on_shutdown(app: web.Application) -> None:
        await relays.close_all(CLOSE_GOING_AWAY, "the front is shutting down")
        if BROKER in app:
            await leases.close_all(app[BROKER])  # the accounts go back to rotation

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_post("/v1/sessions", create)
    r.add_get("/v1/sessions", list_all)
    r.add_get("/v1/sessions/{id}", get_one)
    r.add_delete("/v1/sessions/{id}", delete)
    r.add_get("/v1/sessions/{id}/ws", websocket)
    r.add_get("/v1/sessions/{id}/json/version", json_version)
    r.add_get("/v1/sessions/{id}/json/version/", json_version)
    r.add_get("/v1/sessions/{id}/recording", recording)
