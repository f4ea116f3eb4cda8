"""The one place where client errors are made: OpenAI's error JSON, from every kind of failure.

Every failure reaches the client through `openai_errors`, the app's only error middleware:
an `ApiError` raised anywhere in the front (validation, keys, the broker link, timeouts), a
broker/worker failure (`ErrorInfo`, carried in `ApiError` by `error_of`: its `kind` says whose
fault it is and its `status` the HTTP status), aiohttp's own HTTP errors, and any bug (a 500 with
no traceback). Each answer carries `x-request-id`, and `Retry-After` where a retry makes sense.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from bpool.protocol import ErrorInfo

log = logging.getLogger("bpool.front")

class ApiError(Exception):
    """A failure to report to the client as OpenAI error JSON with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_type(status: int) -> str:
    """OpenAI's `error.type` for an HTTP status (the SDK maps classes by status, not type)."""
    if status == 401:
        return "invalid_request_error"  # what OpenAI itself sends with code invalid_api_key
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status == 503:
        return "service_unavailable_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_of(info: ErrorInfo) -> ApiError:
    retry = info.retry_after_s
    if retry is None and info.status in (429, 503):
        retry = 1.0  # "try again later" statuses always tell the client when
    return ApiError(info.status, info.message, code=info.kind, retry_after_s=retry)


def retry_after_header(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, int(-(-seconds // 1))))}


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


def error_response(exc: Exception, request_id: str, what: str) -> web.Response:
    """The client's answer for any failure: OpenAI's error JSON with its status, `x-request-id`
    and `Retry-After` when the client may retry. A bug is logged here, never shown."""
    if isinstance(exc, ApiError):
        err = exc
    elif isinstance(exc, web.HTTPException):
        err = _http_error(exc)
    else:
        log.error("request %s %s failed", request_id, what, exc_info=exc)
        err = ApiError(500, "Internal error", code="internal")
    headers = {"x-request-id": request_id, **retry_after_header(err.retry_after_s)}
    return json_response(err.body(), err.status, headers)
