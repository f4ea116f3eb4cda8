"""Who may call the front and how every failure is told, as plain functions on mocked requests
(no sockets): API keys, origins and CORS, /health for callers without a key, OpenAI's error JSON,
statuses, Retry-After. Fast: these are the tests `scripts/mutation guard` runs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bpool.front import errors, guard
from bpool.front.appstate import SETTINGS
from bpool.front.errors import ApiError
from bpool.front.settings import FrontSettings, key_matches, presented_key
from bpool.protocol import ErrorInfo

KEY = "sk-test-1234"
ORIGIN = "https://ok.example"


def req(method: str = "GET", path: str = "/v1/models", *, keys: tuple[str, ...] = (KEY,),
        origins: tuple[str, ...] = (ORIGIN,), **headers: str) -> web.Request:
    app = web.Application()
    app[SETTINGS] = FrontSettings(api_keys=keys, cors_origins=origins)
    hdrs = {name.replace("_", "-"): value for name, value in headers.items()}
    return make_mocked_request(method, path, headers=hdrs, app=app)


def settings(r: web.Request) -> FrontSettings:
    return r.app[SETTINGS]


# ---------------------------------------------------------------------------- keys


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"},
    {"Authorization": f"  Bearer   {KEY}  "}, {"X-API-Key": KEY}, {"X-API-Key": f" {KEY} "},
    {"Authorization": "Basic abc", "X-API-Key": KEY},  # not Bearer: the other header counts
])
def test_a_valid_key_is_accepted(headers: dict[str, str]) -> None:
    r = req(**headers)
    assert guard.has_valid_key(r, settings(r))
    guard.check_key(r, settings(r))  # no exception


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"Bearer x{KEY}"},
    {"Authorization": f"Bearer {KEY[:-1]}"}, {"Authorization": f"Bearer {KEY} extra"},
    {"Authorization": f"Token {KEY}"}, {"Authorization": KEY}, {"Authorization": "Bearer "},
    {"X-API-Key": f"{KEY}{KEY}"}, {"X-API-Key": KEY.upper()}, {"X-API-Key": "   "},
])
def test_anything_but_the_whole_key_is_refused_with_401(headers: dict[str, str]) -> None:
    r = req(**headers)
    assert not guard.has_valid_key(r, settings(r))
    with pytest.raises(ApiError) as ei:
        guard.check_key(r, settings(r))
    err = ei.value
    assert (err.status, err.code, err.type) == (401, "invalid_api_key", "invalid_request_error")
    assert err.message == ("Missing or invalid API key (send 'Authorization: Bearer KEY' or "
                           "'X-API-Key: KEY')")


def test_gemini_clients_may_send_the_key_their_way() -> None:
    r = req(x_goog_api_key=KEY)
    assert guard.has_valid_key(r, settings(r))
    r = req(path=f"/v1beta/models?key={KEY}")
    assert guard.has_valid_key(r, settings(r))
    r = req(path=f"/v1/models?key={KEY}")  # a key in the URL only where Gemini clients put it
    assert not guard.has_valid_key(r, settings(r))
    r = req(path=f"/v1beta/models?key={KEY}x")
    assert not guard.has_valid_key(r, settings(r))
    r = req(x_goog_api_key=KEY + "x")
    assert not guard.has_valid_key(r, settings(r))


def test_without_configured_keys_nobody_needs_one() -> None:
    r = req(keys=())
    guard.check_key(r, settings(r))
    assert not guard.has_valid_key(r, settings(r))  # and nobody has one


def test_every_configured_key_works_and_none_other() -> None:
    keys = ("first-key", "second-key", "third")
    for key in keys:
        assert key_matches(key, keys)
    assert not key_matches("fourth", keys)
    assert not key_matches(None, keys)
    assert not key_matches("", ("",)) or presented_key("", "") is None  # empty is never presented


def test_a_header_that_is_not_utf8_is_a_wrong_key_not_a_crash() -> None:
    # aiohttp hands such bytes over as lone surrogates.
    assert not key_matches("\udcff", (KEY,))
    assert key_matches("k\udcff", ("k\udcff",))


def test_presented_key_prefers_a_bearer_token_and_strips_blanks() -> None:
    assert presented_key("Bearer a", "b") == "a"
    assert presented_key("Basic a", "b") == "b"
    assert presented_key(" Bearer  a ", None) == "a"
    assert presented_key("Bearer", "b") == "b"
    assert presented_key(None, None) is None and presented_key("", "") is None


# ---------------------------------------------------------------------------- origins, CORS


def test_no_origin_is_a_tool_and_passes() -> None:
    r = req()
    assert guard.allowed_origin(r, settings(r)) is None


@pytest.mark.parametrize("origin", [ORIGIN, ORIGIN + "/"])
def test_a_listed_origin_passes(origin: str) -> None:
    r = req(Origin=origin)
    assert guard.allowed_origin(r, settings(r)) == origin


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "https://ok.example.evil",
                                    "http://ok.example", "", ORIGIN + "X", ORIGIN + "//x"])
def test_any_other_origin_is_403(origin: str) -> None:
    r = req(Origin=origin)
    with pytest.raises(ApiError) as ei:
        guard.allowed_origin(r, settings(r))
    assert (ei.value.status, ei.value.code, ei.value.type) == (
        403, "origin_not_allowed", "permission_error")
    assert ei.value.message == ("Requests from web pages are refused; the operator can allow "
                                "an origin with BPOOL_CORS_ORIGINS")


def test_preflight_answers_only_a_real_preflight() -> None:
    r = req("OPTIONS", Origin=ORIGIN, Access_Control_Request_Method="POST")
    resp = guard.preflight(r, ORIGIN)
    assert resp is not None and resp.status == 204
    assert {k: resp.headers.get(k) for k in (
        "Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers", "Access-Control-Max-Age", "Vary")} == {
        "Access-Control-Allow-Origin": ORIGIN,
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": resp.headers["Access-Control-Allow-Headers"],
        "Access-Control-Max-Age": "600", "Vary": "Origin"}
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed >= {"authorization", "content-type", "x-api-key", "x-request-id",
                       "x-goog-api-key", "anthropic-version"}
    assert guard.preflight(req("OPTIONS", Origin=ORIGIN), ORIGIN) is None  # no request method
    assert guard.preflight(req("POST", Origin=ORIGIN, Access_Control_Request_Method="POST"),
                           ORIGIN) is None


def test_a_page_may_end_the_browser_session_it_started() -> None:
    r = req("OPTIONS", "/v1/sessions/s-1", Origin=ORIGIN, Access_Control_Request_Method="DELETE")
    resp = guard.preflight(r, ORIGIN)
    assert resp is not None
    methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
    assert "DELETE" in methods and {"GET", "POST"} <= methods


async def test_cors_headers_only_for_listed_origins() -> None:
    for origin, expected in [(ORIGIN, True), (ORIGIN + "/", True), ("https://x.example", False),
                             (ORIGIN + "X", False), (None, False)]:
        r = req(**({"Origin": origin} if origin else {}))
        resp = web.StreamResponse()
        await guard.cors_headers(r, resp)
        if expected:
            assert resp.headers["Access-Control-Allow-Origin"] == origin
            assert resp.headers["Access-Control-Expose-Headers"] == (
                "x-request-id, x-bpool-profile, Retry-After")
            assert resp.headers["Vary"] == "Origin"
        else:
            assert not any(h.startswith("Access-Control") for h in resp.headers)
            assert "Vary" not in resp.headers


# ---------------------------------------------------------------------------- /health


BODY = {"status": "ok", "queue_length": 2, "busy": True, "mode": "real",
        "workers": [{"profile_id": "a", "account": "a@x"}, {"profile_id": "b"}],
        "models": ["m1", "m2", "m3"], "counters": {"jobs_done": 5}}


def test_health_without_a_key_shows_only_status_and_counts() -> None:
    r = req()
    view = guard.health_view(r, dict(BODY))
    assert view == {"status": "ok", "queue_length": 2, "worker_count": 2,
                    "details": "send an API key for worker details"}
    err = guard.health_view(r, {"status": "down", "error": {"code": "broker_lost"}})
    assert err["error"] == {"code": "broker_lost"} and err["status"] == "down"


def test_health_with_a_key_or_in_open_mode_shows_everything() -> None:
    assert guard.health_view(req(X_API_Key=KEY), dict(BODY)) == BODY
    assert guard.health_view(req(keys=()), dict(BODY)) == BODY


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("status, kind", [
    (400, "invalid_request_error"), (401, "invalid_request_error"), (403, "permission_error"),
    (404, "invalid_request_error"), (413, "invalid_request_error"), (429, "rate_limit_error"),
    (499, "invalid_request_error"), (500, "server_error"), (502, "server_error"),
    (503, "service_unavailable_error"), (504, "server_error"),
])
def test_error_type_follows_openai(status: int, kind: str) -> None:
    assert errors.error_type(status) == kind
    assert ApiError(status, "m").type == kind


def test_api_error_body_is_openai_shaped() -> None:
    err = ApiError(400, "bad thing", param="messages", code="bad")
    assert str(err) == "bad thing"
    assert err.body() == {"error": {"message": "bad thing", "type": "invalid_request_error",
                                    "param": "messages", "code": "bad"}}
    assert ApiError(400, "x", type="custom").type == "custom"
    plain = ApiError(500, "y")
    assert (plain.param, plain.code, plain.retry_after_s) == (None, None, None)


@pytest.mark.parametrize("status", [429, 503])
def test_try_again_statuses_always_say_when(status: int) -> None:
    err = errors.error_of(ErrorInfo("rate_limited", "slow down", status))
    assert err.retry_after_s == 1.0
    assert (err.status, err.code, err.message) == (status, "rate_limited", "slow down")
    assert errors.error_of(ErrorInfo("k", "m", status, retry_after_s=42.0)).retry_after_s == 42.0


@pytest.mark.parametrize("status", [400, 500, 502, 504])
def test_other_statuses_give_no_retry_time(status: int) -> None:
    assert errors.error_of(ErrorInfo("site", "m", status)).retry_after_s is None


@pytest.mark.parametrize("seconds, header", [
    (None, None), (0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (2.2, "3"), (59.0, "59"),
])
def test_retry_after_is_whole_seconds_rounded_up_at_least_1(seconds: float | None,
                                                           header: str | None) -> None:
    assert errors.retry_after_header(seconds) == ({} if header is None else {"Retry-After": header})


def test_json_response_is_json() -> None:
    resp = errors.json_response({"a": 1}, 418, {"X-Y": "z"})
    assert (resp.status, resp.content_type, resp.headers["X-Y"]) == (418, "application/json", "z")
    assert json.loads(resp.body) == {"a": 1}
    assert errors.json_response([]).status == 200


def answer(exc: Exception, rid: str = "rid-1") -> tuple[web.Response, dict[str, Any]]:
    resp = errors.error_response(exc, rid, "POST /v1/chat/completions")
    return resp, json.loads(resp.body)["error"]


def test_api_errors_are_answered_with_status_request_id_and_retry_after() -> None:
    resp, err = answer(ApiError(429, "later", code="rate_limited", retry_after_s=2.5))
    assert resp.status == 429 and resp.headers["x-request-id"] == "rid-1"
    assert resp.headers["Retry-After"] == "3"
    assert err == {"message": "later", "type": "rate_limit_error", "param": None,
                   "code": "rate_limited"}
    resp, _ = answer(ApiError(400, "bad"))
    assert "Retry-After" not in resp.headers


class _NoAllow(web.HTTPException):
    status_code = 405


class _NoReason(web.HTTPException):
    status_code = 418


@pytest.mark.parametrize("exc, status, code, message", [
    (web.HTTPNotFound(), 404, "unknown_url",
     "Unknown URL; see /v1/chat/completions, /v1/models, /health"),
    (web.HTTPMethodNotAllowed("PUT", ["GET", "POST"]), 405, "method_not_allowed",
     "Method not allowed; use GET,POST"),
    (_NoAllow(), 405, "method_not_allowed", "Method not allowed; use ?"),
    (web.HTTPRequestEntityTooLarge(100, 200), 413, "request_too_large",
     "The request body is too large"),
    (web.HTTPBadRequest(reason="Broken"), 400, None, "Broken"),
    (_NoReason(reason=""), 418, None, "HTTP error"),
])
def test_aiohttp_errors_become_openai_errors(exc: web.HTTPException, status: int,
                                             code: str | None, message: str) -> None:
    resp, err = answer(exc)
    assert (resp.status, err["code"], err["message"]) == (status, code, message)
    assert resp.headers["x-request-id"] == "rid-1"


def test_a_bug_is_a_500_logged_but_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="bpool.front"):
        resp, err = answer(RuntimeError("secret detail"), "rid-9")
    assert resp.status == 500
    assert err == {"message": "Internal error", "type": "server_error", "param": None,
                   "code": "internal"}
    assert "secret detail" not in resp.body.decode()
    [rec] = caplog.records
    assert rec.getMessage() == "request rid-9 POST /v1/chat/completions failed"
    assert rec.exc_info is not None
