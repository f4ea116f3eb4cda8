"""Who may call the front: API keys, web pages (`Origin`, CORS) and what /health shows whom.

A browser attaches `Origin` to every cross-site request a web page makes (and to every POST),
so a page the user merely visits could otherwise drive a front on loopback or the LAN. Requests
that carry an `Origin` are refused unless the operator listed that origin (BPOOL_CORS_ORIGINS);
tools and SDKs send no `Origin` and are unaffected.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bpool.front.appstate import SETTINGS
from bpool.front.settings import FrontSettings, key_matches, presented_key
from bpool.front.errors import ApiError

# DELETE: a page that started a browser session must be able to end it.
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = ("Authorization, Content-Type, X-API-Key, X-Request-Id, x-goog-api-key, "
                   "anthropic-version")
EXPOSED_HEADERS = "x-request-id, x-bpool-profile, Retry-After"
PREFLIGHT_MAX_AGE_S = 600


def has_valid_key(request: web.Request, settings: FrontSettings) -> bool:
    # Gemini clients send `x-goog-api-key` or `?key=` (the latter only on the Gemini routes).
    other = request.headers.get("X-API-Key") or request.headers.get("x-goog-api-key") or (
        request.query.get("key") if request.path.startswith("/v1beta/") else None)
    return key_matches(presented_key(request.headers.get("Authorization"), other),
                       settings.api_keys)


def check_key(request: web.Request, settings: FrontSettings) -> None:
    if settings.api_keys and not has_valid_key(request, settings):
        raise ApiError(401, "Missing or invalid API key (send 'Authorization: Bearer KEY' or "
                       "'X-API-Key: KEY')", code="invalid_api_key")


def allowed_origin(request: web.Request, settings: FrontSettings) -> str | None:
    """The request's `Origin` if it is an allowed one; None when it sends no `Origin`.
    Raises ApiError(403) for any other origin (including `null`, unless listed)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if origin.rstrip("/") in settings.cors_origins:
        return origin
    raise ApiError(403, "Requests from web pages are refused; the operator can allow an origin "
                   "with BPOOL_CORS_ORIGINS", code="origin_not_allowed")


def preflight(request: web.Request, origin: str) -> web.Response | None:
    """The answer to a CORS preflight from an allowed origin; None if this is not a preflight."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        "Vary": "Origin",
    })


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: allowed origins may read every answer, streams included."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") in request.app[SETTINGS].cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers["Vary"] = "Origin"


def health_view(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """/health for whoever asks. With keys configured, a caller without a valid key sees only
    the status and counts; account e-mails, pids, job ids and errors need a key. With no keys
    (open mode, loopback by default) everyone sees everything, as before."""
    settings = request.app[SETTINGS]
    if not settings.api_keys or has_valid_key(request, settings):
        return body
    public: dict[str, Any] = {"status": body.get("status")}
    for name, value in body.items():
        if isinstance(value, int) and not isinstance(value, bool):
            public[name] = value
        elif name == "workers" and isinstance(value, list):
            public["worker_count"] = len(value)
    if "error" in body:
        public["error"] = body["error"]
    public["details"] = "send an API key for worker details"
    return public
