"""The front's HTTP server: aiohttp's, with parser-level errors answered in OpenAI's shape.

Requests that aiohttp's parser refuses (oversized headers, a bad request line, broken chunking)
never reach the app or its middleware: aiohttp answers them with plain text and logs the parser's
exception, whose message quotes the raw request line (which may carry a key or a prompt). The
request handler below answers with OpenAI error JSON instead and logs one line naming only the
kind of error. aiohttp offers no public hook for this; `test_front_hardening` pins the behaviour
so an aiohttp upgrade that moves it fails a test instead of silently reverting.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from bpool.front.errors import error_body, error_type

log = logging.getLogger("bpool.front")

_MESSAGES = {
    400: "The HTTP request is malformed",
    413: "The request body is too large",
    431: "The request headers are too large",
}


class OpenAIRequestHandler(RequestHandler):
    __slots__ = ()  # same layout as RequestHandler, so an instance can take this class

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer went out already: no second status line is possible.
            raise ConnectionError("Response is sent already, cannot send another response")
        if isinstance(exc, HttpProcessingError):
            code = exc.code if 400 <= exc.code < 500 else 400
            # The exception's text quotes the raw request line: name only its kind.
            log.info("refused a malformed request from %s: %s (%d)", request.remote,
                     type(exc).__name__, code)
            status = code
        elif status >= 500:
            log.error("request %s %s failed outside the app: %s", request.method, request.path,
                      type(exc).__name__ if exc else "timeout")
        text = _MESSAGES.get(status, "Internal error" if status >= 500 else "Bad request")
        resp = web.Response(
            body=msgspec.json.encode(error_body(text, error_type(status), None,
                                                "bad_request" if status < 500 else "internal")),
            status=status, content_type="application/json")
        resp.force_close()
        return resp


class OpenAIServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        handler.__class__ = OpenAIRequestHandler
        return handler


class FrontRunner(web.AppRunner):
    """AppRunner whose connections use OpenAIRequestHandler."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = OpenAIServer
        return server
