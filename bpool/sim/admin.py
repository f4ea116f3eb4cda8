"""The simulator's admin API (on the page origin): knobs, injected failures, account flags, stats.

    GET  /__sim/health                 {"ok": true, "accounts": N, "url": page origin, "rpc_url": ...}
    GET  /__sim/config                 the knobs (knobs.Knobs)
    POST /__sim/config   {knob: value, ...}          change knobs at runtime; answers the new knobs
    POST /__sim/fail     {"mode": "error"|"hang"|"cut"|"frame"|"safety", "count": 1,
                          "status": 500, "code": 13, "message": null, "after": 0, "account": null}
    POST /__sim/expire   {"account": name|email, "expired": true}    log an account out (or back in)
    POST /__sim/tos      {"account": name|email, "required": true}   terms of service not accepted
    POST /__sim/reset                  forget stats, quota windows and pending failures
    GET  /__sim/stats                  per-account counts, one record per GenerateContent request,
                                       and calls per RPC method ("OPTIONS" = CORS preflights)
    GET  /__sim/accounts               [{"name", "email", "expired", "tos"}] (never the session values)

It has no authentication: the sim is a local test site and binds 127.0.0.1 by default.
"""

from __future__ import annotations

from aiohttp import web

from bpool.sim.accounts import set_expired, set_tos
from bpool.sim.context import shared
from bpool.sim.state import FailRule

PREFIX = "/__sim/"


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json_object(request: web.Request) -> dict:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}', content_type="application/json")
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be an object"}',
                                 content_type="application/json")
    return body


async def health(request: web.Request) -> web.Response:
    sh = shared(request)
    return web.json_response({"ok": True, "accounts": len(sh.book.all()),
                              "url": sh.origins.page, "rpc_url": sh.origins.rpc})


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(shared(request).state.snapshot()["knobs"])


async def set_config(request: web.Request) -> web.Response:
    st = shared(request).state
    try:
        st.knobs = st.knobs.updated(await _json_object(request))
    except ValueError as e:
        return _bad(str(e))
    return web.json_response(st.snapshot()["knobs"])


async def fail(request: web.Request) -> web.Response:
    sh = shared(request)
    body = await _json_object(request)
    who = body.get("account")
    if who is not None:  # rules match on the email; accept a name too
        acc = sh.book.find(str(who))
        if acc is None:
            return web.json_response({"error": f"unknown account {who!r}"}, status=404)
        who = acc.email
    try:
        message = body.get("message")
        rule = FailRule(mode=str(body.get("mode", "error")), count=int(body.get("count", 1)),
                        status=int(body.get("status", 500)), account=who,
                        code=int(body.get("code", 13)), after=int(body.get("after", 0)),
                        message=None if message is None else str(message))
        sh.state.add_fail_rule(rule)
    except (TypeError, ValueError) as e:
        return _bad(str(e))
    return web.json_response({"fail_rules": sh.state.snapshot()["fail_rules"]})


def _flag(setter, field: str):
    async def handler(request: web.Request) -> web.Response:
        body = await _json_object(request)
        who, value = body.get("account"), body.get(field, True)
        if not isinstance(who, str) or not isinstance(value, bool):
            return _bad(f'expected {{"account": name or email, "{field}": true|false}}')
        if not setter(shared(request).book.path, who, value):
            return web.json_response({"error": f"unknown account {who!r}"}, status=404)
        return web.json_response({"account": who, field: value})
    return handler


async def reset(request: web.Request) -> web.Response:
    shared(request).state.reset()
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    snap = shared(request).state.snapshot()
    return web.json_response({k: snap[k] for k in ("accounts", "requests", "fail_rules", "rpcs")})


async def accounts(request: web.Request) -> web.Response:
    return web.json_response([{"name": a.name, "email": a.email, "expired": a.expired, "tos": a.tos}
                              for a in shared(request).book.all()])


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(PREFIX + "health", health)
    r.add_get(PREFIX + "config", get_config)
    r.add_post(PREFIX + "config", set_config)
    r.add_post(PREFIX + "fail", fail)
    r.add_post(PREFIX + "expire", _flag(set_expired, "expired"))
    r.add_post(PREFIX + "tos", _flag(set_tos, "required"))
    r.add_post(PREFIX + "reset", reset)
    r.add_get(PREFIX + "stats", stats)
    r.add_get(PREFIX + "accounts", accounts)
