"""Reading an answer (sans-IO: a scripted tap stream, no browser) and what its failures mean:
error frames, HTTP statuses, empty bodies, finish codes, the daily-quota reset clock."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from bpool.protocol import ERROR_KINDS, Usage
from bpool.studio.answer import AnswerLimits, read_answer
from bpool.studio.outcomes import (Cooldowns, StepError, http_problem, notice_problem,
                                   seconds_until_quota_reset, status_problem)
from test_stream_parser_real import ANSWER, BODY, REASONING

# 04:00 in Los Angeles (PST, UTC-8): the daily quota resets in 20 hours.
NOON_UTC = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
QUOTA_PHRASES = ("exceeded quota", "quota exceeded", "out of free generations")
LIMITS = AnswerLimits(5.0, 5.0, 30.0, QUOTA_PHRASES, Cooldowns(rate_limit_s=120.0, quota_s=7200.0),
                      clock=lambda: NOON_UTC)


@dataclass(frozen=True)
class Piece:
    event: str
    data: str = ""
    status: int | None = None
    message: str = ""


class ScriptedStream:
    """Plays tapped pieces in order; past the script it is a page that went quiet."""

    def __init__(self, pieces: list[Piece]):
        self.pieces = list(pieces)

    async def next(self, timeout: float | None) -> Piece:
        if not self.pieces:
            raise asyncio.TimeoutError
        return self.pieces.pop(0)


class Recorder:
    def __init__(self) -> None:
        self.content = ""
        self.reasoning = ""
        self.calls: list = []

    def emit(self, content: str = "", reasoning: str = "", tool_calls: tuple = ()) -> None:
        self.content += content
        self.reasoning += reasoning
        self.calls += tool_calls


def script(body: str | bytes, status: int = 200, size: int = 50) -> list[Piece]:
    text = body.decode() if isinstance(body, bytes) else body
    pieces = [Piece("start", status=status)]
    pieces += [Piece("data", text[i:i + size]) for i in range(0, len(text), size)]
    return pieces + [Piece("end")]


def read(body: str | bytes, status: int = 200, limits: AnswerLimits = LIMITS):
    rec = Recorder()
    result = asyncio.run(read_answer(ScriptedStream(script(body, status)), rec.emit, limits))
    return result, rec


def fail(body: str | bytes, status: int = 200, limits: AnswerLimits = LIMITS):
    rec = Recorder()
    with pytest.raises(StepError) as ei:
        asyncio.run(read_answer(ScriptedStream(script(body, status)), rec.emit, limits))
    return ei.value, rec


def live(*chunks: list) -> str:
    return json.dumps([list(chunks)], ensure_ascii=False)


def text_chunk(text: str, finish: int | None = None) -> list:
    candidate: list = [[[[None, text]], "model"]]
    if finish is not None:
        candidate.append(finish)
    return [[candidate]]


# ---------------------------------------------------------------------------- success


def test_the_real_body_streams_reasoning_then_answer_with_usage():
    (finish, usage), rec = read(BODY)
    assert rec.reasoning == REASONING and rec.content == ANSWER
    assert finish == "stop"
    # OpenAI counts reasoning inside completion tokens: 8 answer + 153 thinking.
    assert usage == Usage(prompt_tokens=5, completion_tokens=161, total_tokens=166,
                          reasoning_tokens=153)


class Calls(Recorder):
    """Also keeps each emit call: how many messages the answer became, and in what order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def emit(self, content: str = "", reasoning: str = "") -> None:
        super().emit(content, reasoning)
        self.calls.append((content, reasoning))


def thought_chunk(text: str) -> list:
    return [[[[[[None, text] + [None] * 10 + [1]], "model"]]]]


def test_what_one_piece_completes_goes_out_as_one_emit_per_run_of_a_kind():
    chunks = [thought_chunk("a"), thought_chunk("b"), text_chunk("c"), text_chunk("d"),
              thought_chunk("e"), text_chunk("f", finish=1)]
    rec = Calls()
    whole = [Piece("start", status=200), Piece("data", live(*chunks)), Piece("end")]
    assert asyncio.run(read_answer(ScriptedStream(whole), rec.emit, LIMITS))[0] == "stop"
    assert rec.calls == [("", "ab"), ("cd", ""), ("", "e"), ("f", "")]
    # Pieces that each complete one chunk still go out one by one, as they arrive.
    rec = Calls()
    assert asyncio.run(read_answer(ScriptedStream(script(live(*chunks), size=20)), rec.emit,
                                   LIMITS))[0] == "stop"
    assert (rec.reasoning, rec.content) == ("abe", "cdf") and len(rec.calls) > 4


def test_text_before_an_error_frame_in_the_same_piece_is_passed_on_first():
    frame = [None, [8, QUOTA]]
    rec = Calls()
    one = [Piece("start", status=200), Piece("data", live(text_chunk("par"), text_chunk("tial"),
                                                          frame)), Piece("end")]
    with pytest.raises(StepError) as ei:
        asyncio.run(read_answer(ScriptedStream(one), rec.emit, LIMITS))
    assert ei.value.kind == "rate_limited" and rec.calls == [("partial", "")]


def test_refusal_without_parts_is_content_filter_not_a_failure():
    (finish, usage), rec = read(live([[[None, 3]]]))
    assert (finish, usage, rec.content) == ("content_filter", None, "")
    (finish, _), rec = read(live(text_chunk("Once upon"), [[[[[], "model"], 4]]]))
    assert (finish, rec.content) == ("content_filter", "Once upon")


def test_max_tokens_is_length_and_function_calls_are_tool_calls():
    assert read(live(text_chunk("abc", finish=2)))[0][0] == "length"
    call = [None, None] + [None] * 8 + [["get_weather", [[["city", [None, None, "Paris"]],
                                                          ["days", [None, 3]],
                                                          ["hourly", [None, None, None, 1]]]]]]
    (reason, _), rec = read(live([[[[[call], "model"], 1]]]))
    assert reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in rec.calls] == [
        ("get_weather", {"city": "Paris", "days": 3, "hourly": True})]


# ---------------------------------------------------------------------------- empty bodies


@pytest.mark.parametrize("body", [
    "[[]]",
    "[]",
    live([None, None, None, ["v1_x", 1, 2]]),  # metadata only
    live([[[[[[None, "thinking"] + [None] * 10 + [1]], "model"]]]]),  # thoughts, no answer
    live(text_chunk("")),  # an empty text part
], ids=["no-chunks", "older-empty", "metadata-only", "thoughts-only", "empty-text"])
def test_a_body_with_no_answer_is_a_site_failure(body):
    err, rec = fail(body)
    assert err.kind == "site" and "empty" in err.message, err
    assert rec.content == ""


def test_a_cut_body_is_a_broken_stream():
    err, _ = fail(live(text_chunk("half"))[:-2])
    assert err.kind == "site" and "broke" in err.message


# ---------------------------------------------------------------------------- error frames

DAILY = ("Quota exceeded for metric: generativelanguage.googleapis.com/"
         "generate_content_free_tier_requests, limit: 50, model: gemini-2.5-pro "
         "(GenerateRequestsPerDayPerProjectPerModel-FreeTier)")
QUOTA = ("You exceeded your current quota, please check your plan and billing details. For more "
         "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.")


@pytest.mark.parametrize("code,message,kind,status,retry", [
    (8, QUOTA, "rate_limited", 429, 120.0),  # a burst limit: the rate-limit cool-down
    (8, DAILY, "rate_limited", 429, 20 * 3600.0),  # a daily quota: until midnight in LA
    (3, "Thinking level MINIMAL is not supported", "bad_request", 400, None),
    (7, "The caller does not have permission", "paused", 503, None),
    (16, "Request had invalid authentication credentials.", "logged_out", 503, None),
    (13, "Internal error encountered.", "site", 502, None),
])
@pytest.mark.parametrize("after_text", [False, True], ids=["alone", "after-text"])
def test_error_frames_are_typed_failures(code, message, kind, status, retry, after_text):
    frame = [None, [code, message]]
    body = live(text_chunk("partial"), frame) if after_text else live(frame)
    err, rec = fail(body)
    assert (err.kind, err.retry_after_s) == (kind, retry)
    assert message in err.message and f"error {code}" in err.message
    info = err.to_error()
    assert (info.kind, info.status) == (kind, status)
    assert rec.content == ("partial" if after_text else "")


def test_a_whole_body_error_frame_with_status_200_is_the_error():
    err, _ = fail('[,[8,"%s"]]' % QUOTA)
    assert err.kind == "rate_limited"
    err, _ = fail('[null,[3,"Thinking level MINIMAL is not supported"]]')
    assert err.kind == "bad_request" and "Thinking level MINIMAL is not supported" in str(err)


# ---------------------------------------------------------------------------- HTTP statuses


@pytest.mark.parametrize("status,body,kind", [
    (429, '[,[8,"Resource has been exhausted (e.g. check quota)."]]', "rate_limited"),
    (401, '[,[16,"Request had invalid authentication credentials."]]', "logged_out"),
    (403, '[,[7,"The caller does not have permission"]]', "paused"),
    (403, "<html>Forbidden</html>", "site"),
    (400, '[,[3,"Thinking level MINIMAL is not supported"]]', "bad_request"),
    (500, "", "site"),
])
def test_http_statuses(status, body, kind):
    err, _ = fail(body, status=status)
    assert err.kind == kind and f"HTTP {status}" in err.message
    assert err.to_error().status == ERROR_KINDS[kind]


def test_a_daily_quota_in_a_429_rests_until_the_reset():
    err, _ = fail('[,[8,"%s"]]' % DAILY, status=429)
    assert err.retry_after_s == 20 * 3600.0


# ---------------------------------------------------------------------------- pure classifiers


def test_quota_reset_is_midnight_in_los_angeles():
    utc = timezone.utc
    assert seconds_until_quota_reset(NOON_UTC) == 20 * 3600
    # 23:59:30 PDT on 30 June: 30 seconds left.
    assert seconds_until_quota_reset(datetime(2026, 7, 1, 6, 59, 30, tzinfo=utc)) == 30
    # Midnight PDT exactly: the next reset is a full day away.
    assert seconds_until_quota_reset(datetime(2026, 7, 1, 7, 0, tzinfo=utc)) == 24 * 3600
    # The days the clocks change are 23 and 25 hours long.
    assert seconds_until_quota_reset(datetime(2026, 3, 8, 8, 0, tzinfo=utc)) == 23 * 3600
    assert seconds_until_quota_reset(datetime(2026, 11, 1, 7, 0, tzinfo=utc)) == 25 * 3600


def test_status_and_http_classification():
    cd = Cooldowns(rate_limit_s=60.0, quota_s=7200.0)
    late = datetime(2026, 7, 1, 6, 0, tzinfo=timezone.utc)  # 23:00 PDT
    assert status_problem(8, "limit of requests per day reached", QUOTA_PHRASES, cd, late)[::2] \
        == ("rate_limited", 3600.0)
    assert status_problem(8, "Daily limit", QUOTA_PHRASES, cd, late)[2] == 3600.0
    assert status_problem(8, "You exceeded quota", QUOTA_PHRASES, cd, late)[2] == 7200.0
    assert status_problem(8, "Too many requests", QUOTA_PHRASES, cd, late)[2] == 60.0
    assert http_problem(403, "The caller does not have permission", QUOTA_PHRASES, cd, code=7) \
        == ("paused", "HTTP 403: The caller does not have permission", None)
    assert http_problem(429, "x per day", QUOTA_PHRASES, cd, now=late)[2] == 3600.0


def test_a_permission_toast_pauses_the_account():
    cd = Cooldowns()
    said = notice_problem(["Failed to generate content: permission denied"], QUOTA_PHRASES,
                          ("too many requests",), cd)
    assert said == ("paused", "the page says: Failed to generate content: permission denied", None)
