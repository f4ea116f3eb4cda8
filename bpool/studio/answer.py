"""Reading one answer from the tapped GenerateContent response while it streams.

Pieces come from tap.js in order; the parser turns them into events as soon as each chunk of the
body is complete: text → `emit(content=...)`, thoughts → `emit(reasoning=...)` (what one piece
completes goes out as one emit per run of one kind), function calls → `emit(tool_calls=...)`,
usage and the finish marker are kept for `Done`. What is not an answer is a typed failure (StepError, kind from protocol.ERROR_KINDS),
never an empty success:

- a non-2xx status: classified by outcomes.http_problem (429, 401, 403 + code 7, 400, ...);
- an error frame inside a 2xx body, before or after some text: outcomes.status_problem
  (8 → rate_limited, 3 → bad_request, 7 → paused, 16 → logged_out, other → site);
- a body that ends with no text, no function call and no finish reason: kind "site".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

from bpool.protocol import NativeCall, Usage
from bpool.studio.outcomes import (BrowserGone, Clock, Cooldowns, StepError, http_problem,
                                   status_problem, utc_now)
from bpool.studio.stream_parser import (ErrorStatus, Finish, FunctionCall, StreamFormatError,
                                        StreamParser, TextDelta, ThoughtDelta, UsageInfo,
                                        parse_error_body)
from bpool.studio.tap import TapStream

log = logging.getLogger("bpool.driver")
STEP = "read answer"

Emit = Callable[..., None]  # emit(content=..., reasoning=..., tool_calls=...)


@dataclass(frozen=True)
class AnswerLimits:
    first_chunk_s: float  # request sent → first body piece
    idle_s: float  # silence between pieces
    total_s: float  # the whole answer
    quota_phrases: tuple[str, ...]
    cooldowns: Cooldowns
    clock: Clock = utc_now  # wall clock, for the time until a daily quota resets


async def read_answer(stream: TapStream, emit: Emit, limits: AnswerLimits) -> tuple[str, Usage | None]:
    """Stream one answer through `emit`; returns (finish_reason, usage). Raises StepError
    (kind "timeout" when the page went quiet, "site" when the stream broke or was empty, or
    what the HTTP status or an error frame says) or BrowserGone."""
    parser = StreamParser()
    started = time.monotonic()
    finish: Finish | None = None
    usage: UsageInfo | None = None
    tool_calls = 0
    got_text = False
    got_data = False
    while True:
        wait = limits.idle_s if got_data else limits.first_chunk_s
        wait = max(0.0, min(wait, limits.total_s - (time.monotonic() - started)))
        try:
            piece = await stream.next(wait)
        except asyncio.TimeoutError:
            raise StepError(STEP, f"no answer data for {wait:.0f}s", "timeout") from None
        if piece.event == "gone":
            raise BrowserGone(f"{STEP}: the page closed")
        if piece.event == "start":
            if not 200 <= (piece.status or 0) < 300:
                raise await _http_error(stream, piece.status or 0, limits)
            continue
        if piece.event == "data":
            got_data = True
            try:
                events = parser.feed(piece.data)
            except StreamFormatError as exc:
                raise StepError(STEP, f"unexpected answer format: {exc}") from None
            out = Deltas(emit)
            for ev in events:
                if isinstance(ev, TextDelta):
                    got_text = True
                    out.add("content", ev.text)
                elif isinstance(ev, ThoughtDelta):
                    out.add("reasoning", ev.text)
                elif isinstance(ev, UsageInfo):
                    usage = ev
                elif isinstance(ev, Finish):
                    finish = ev
                elif isinstance(ev, FunctionCall):
                    tool_calls += 1
                    out.flush()
                    emit(tool_calls=(NativeCall(ev.name, json.dumps(ev.arguments)),))
                elif isinstance(ev, ErrorStatus):
                    # Whatever came before, the answer is cut: the error is the outcome.
                    out.flush()
                    raise frame_error(ev, limits)
            out.flush()
            continue
        if piece.event == "error" or not parser.complete:
            why = piece.message or "the body ended early"
            raise StepError(STEP, f"the answer stream broke ({why})")
        break
    if not (got_text or tool_calls or finish):
        raise StepError(STEP, f"the answer was empty: the body ({parser.chunks} chunks) held no "
                              "text, no function call and no finish reason")
    if tool_calls:
        log.info("answer held %d function calls", tool_calls)
    if finish is not None and finish.reason == "content_filter":
        log.info("the site ended the answer with finish code %d (%s)", finish.code, finish.name)
    reason = "tool_calls" if tool_calls else (finish.reason if finish else "stop")
    return reason, to_usage(usage)


class Deltas:
    """The deltas of one body piece, passed on as few emits as keep their order: a piece often
    completes many chunks at once (a burst of thoughts, then text), and each emit is a message
    through worker, broker and front. A run of one kind becomes one emit; reasoning and content
    never share one (clients may read only one field of a delta)."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.kind = ""
        self.parts: list[str] = []

    def add(self, kind: str, text: str) -> None:
        if kind != self.kind:
            self.flush()
            self.kind = kind
        self.parts.append(text)

    def flush(self) -> None:
        if self.parts:
            self.emit(**{self.kind: "".join(self.parts)})
            self.parts = []


def frame_error(ev: ErrorStatus, limits: AnswerLimits) -> StepError:
    """The typed failure for an error frame found in a 2xx body."""
    kind, text, retry = status_problem(ev.code, ev.message, limits.quota_phrases,
                                       limits.cooldowns, limits.clock())
    return StepError(STEP, f"GenerateContent answered {text}", kind, retry)


async def _http_error(stream: TapStream, status: int, limits: AnswerLimits) -> StepError:
    body: list[str] = []
    with contextlib.suppress(asyncio.TimeoutError):
        async with asyncio.timeout(5):  # error bodies are tiny; do not wait on a hung one
            while True:
                piece = await stream.next(None)
                if piece.event != "data":
                    break
                body.append(piece.data)
    status_info = parse_error_body("".join(body))
    message = status_info.message if status_info else "".join(body)[:200]
    kind, text, retry = http_problem(status, message, limits.quota_phrases, limits.cooldowns,
                                     code=status_info.code if status_info else None,
                                     now=limits.clock())
    return StepError(STEP, f"GenerateContent answered {text}", kind, retry)


def to_usage(u: UsageInfo | None) -> Usage | None:
    if u is None:
        return None
    # OpenAI counts reasoning inside completion_tokens; the page's total includes it too.
    completion = max(u.candidates_tokens + u.reasoning_tokens, u.total_tokens - u.prompt_tokens)
    return Usage(u.prompt_tokens, completion, u.total_tokens, u.reasoning_tokens)
