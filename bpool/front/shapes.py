"""Errors in each client format's own shape. errors.py makes every error as OpenAI's JSON; for
the Gemini and Anthropic routes this outer middleware rewrites that body (status, headers and
message kept) into the shape their SDKs read."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import msgspec
from aiohttp import web

from bpool.front import anthropic, gemini

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def shaper(path: str) -> Callable[[int, str], dict[str, Any]] | None:
    if path.startswith("/v1beta/"):
        return gemini.error_json
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return anthropic.error_json
    return None


@web.middleware
async def format_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    shape = shaper(request.path)
    if shape is None or resp.status < 400 or not isinstance(resp, web.Response) or resp.prepared:
        return resp
    try:
        message = msgspec.json.decode(resp.body)["error"]["message"]  # type: ignore[arg-type]
    except (msgspec.DecodeError, KeyError, TypeError):
        return resp
    resp.body = msgspec.json.encode(shape(resp.status, message))
    return resp
