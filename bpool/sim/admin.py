"""The simulator's admin API: knobs, injected failures, log-outs and stats for tests and benchmarks.

    GET  /__sim/health                 {"ok": true, "accounts": N}
    GET  /__sim/config                 the knobs (state.Knobs)
    POST /__sim/config   {knob: value, ...}          change knobs at runtime; answers the new knobs
    POST /__sim/fail     {"mode": "error"|"hang"|"cut", "count": 1, "status": 500, "account": null}
    POST /__sim/expire   {"account": name|email, "expired": true}    log an account out (or back in)
    POST /__sim/reset                  forget stats, quota windows and pending failures
    GET  /__sim/stats                  per-account counts and one record per GenerateContent request
    GET  /__sim/accounts               [{"name", "email", "expired"}] (never the session values)

It has no authentication: the sim is a local test site and binds 127.0.0.1 by default.
"""

from __future__ import annotations

from aiohttp import web

from bpool.sim.accounts import AccountBook, set_expired
from bpool.sim.state import FailRule, SimState

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


def add_routes(app: web.Application, state_key: web.AppKey, book_key: web.AppKey) -> None:
    def state(request: web.Request) -> SimState:
        return request.app[state_key]

    def book(request: web.Request) -> AccountBook:
        return request.app[book_key]

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "accounts": len(book(request).all())})

    async def get_config(request: web.Request) -> web.Response:
        return web.json_response(state(request).snapshot()["knobs"])

    async def set_config(request: web.Request) -> web.Response:
        st = state(request)
        try:
            st.knobs = st.knobs.updated(await _json_object(request))
        except ValueError as e:
            return _bad(str(e))
        return web.json_response(st.snapshot()["knobs"])

    async def fail(request: web.Request) -> web.Response:
        body = await _json_object(request)
        who = body.get("account")
        if who is not None:  # rules match on the email; accept a name too
            match = [a.email for a in book(request).all() if who in (a.name, a.email)]
            if not match:
                return web.json_response({"error": f"unknown account {who!r}"}, status=404)
            who = match[0]
        try:
            rule = FailRule(mode=str(body.get("mode", "error")), count=int(body.get("count", 1)),
                            status=int(body.get("status", 500)), account=who)
            state(request).add_fail_rule(rule)
        except (TypeError, ValueError) as e:
            return _bad(str(e))
        return web.json_response({"fail_rules": state(request).snapshot()["fail_rules"]})

    async def expire(request: web.Request) -> web.Response:
        body = await _json_object(request)
        who, expired = body.get("account"), body.get("expired", True)
        if not isinstance(who, str) or not isinstance(expired, bool):
            return _bad('expected {"account": name or email, "expired": true|false}')
        if not set_expired(book(request).path, who, expired):
            return web.json_response({"error": f"unknown account {who!r}"}, status=404)
        return web.json_response({"account": who, "expired": expired})

    async def reset(request: web.Request) -> web.Response:
        state(request).reset()
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        snap = state(request).snapshot()
        return web.json_response({"accounts": snap["accounts"], "requests": snap["requests"],
                                  "fail_rules": snap["fail_rules"]})

    async def accounts(request: web.Request) -> web.Response:
        return web.json_response([{"name": a.name, "email": a.email, "expired": a.expired}
                                  for a in book(request).all()])

    r = app.router
    r.add_get(PREFIX + "health", health)
    r.add_get(PREFIX + "config", get_config)
    r.add_post(PREFIX + "config", set_config)
    r.add_post(PREFIX + "fail", fail)
    r.add_post(PREFIX + "expire", expire)
    r.add_post(PREFIX + "reset", reset)
    r.add_get(PREFIX + "stats", stats)
    r.add_get(PREFIX + "accounts", accounts)
