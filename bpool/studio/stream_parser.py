"""Incremental parser for the body of AI Studio's GenerateContent response (sans-IO).

The body is ONE JSON value that grows while the answer streams, maybe preceded by the `)]}'`
anti-XSSI prefix (AISTUDIO.md; tests/fixtures/aistudio/ holds a real captured body):

    [[chunk, chunk, ...]]        the live page: an outer array holding one array of chunks
    [chunk, chunk, ...]          the older form, one level less (still accepted)
    [null, [code, "message"]]    a whole-body error frame; a 403 body elides the null:
                                 `[,[7,"The caller does not have permission"]]`

Which nesting a body uses is decided from the body itself, at its first chunk: in the live form
the first element inside the first array is a whole chunk, in the older form it is that chunk's
list of candidates (`[[[parts, "model"], ...]]`). Deciding costs no latency: the first chunk's
events come out as soon as it is complete, in either form.

A chunk is a positional array:

    chunk[0]        candidates; chunk[0][0] = candidate = [[parts, "model"], finish?, ...]
    part            [null, "text"]; a thought (reasoning) has `1` at index 12; a function call
                    has [name, args] at index 10
    chunk[2]        usage: [prompt, candidates, total, null, [[modality, n]], null, null, null,
                    null, thought_tokens]
    [null, null, null, ["<id>", n, n]]   trailing metadata: no events
    [null, [code, "message"]]            an error frame inside a 2xx body -> ErrorStatus

Finish codes (Gemini's FinishReason, `candidate[1]`) and the OpenAI finish_reason they become:

    1 STOP -> "stop";  2 MAX_TOKENS -> "length";
    any other code -> "content_filter": 3 SAFETY (often with no parts at all), 4 RECITATION,
    5 OTHER, 6 BLOCKLIST, 7 PROHIBITED_CONTENT, 8 SPII, ... The site cut or refused the answer
    for a reason of its own, and "content_filter" is the one OpenAI reason that says so.

Error frame codes are google.rpc codes (8 RESOURCE_EXHAUSTED, 3 INVALID_ARGUMENT,
7 PERMISSION_DENIED, 16 UNAUTHENTICATED, ...); what each means for the pool is decided in
outcomes.py, not here.

`StreamParser.feed()` takes pieces split anywhere (inside a string, an escape or a multi-byte UTF-8
character) and returns the events of every chunk completed by that piece, as soon as it is
complete. Chunk boundaries are found by tracking string/escape state and bracket depth (a text
may contain `]],"model"]`); then each chunk is decoded as JSON on its own.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any, Union

XSSI_PREFIX = ")]}'"
# Characters allowed before the opening bracket: the anti-XSSI prefix and whitespace.
_PREAMBLE_CHARS = frozenset(XSSI_PREFIX + " \t\r\n\ufeff")
_STRUCTURAL = re.compile(r'[\[\]"]')  # outside strings only brackets and quotes matter
_IN_STRING = re.compile(r'["\\]')  # inside strings only the closing quote and escapes matter
# A JSON string, or an elided array element: `[` or `,` followed by `,` or `]`.
_HOLE = re.compile(r'"(?:[^"\\]|\\.)*"|([\[,])(\s*)(?=[,\]])', re.S)

# Gemini's FinishReason enum (see the module docstring for the mapping).
FINISH_STOP = 1
FINISH_MAX_TOKENS = 2
FINISH_SAFETY = 3
FINISH_RECITATION = 4
FINISH_REASONS = {FINISH_STOP: "stop", FINISH_MAX_TOKENS: "length"}
REFUSED_REASON = "content_filter"  # every other finish code
FINISH_NAMES = {1: "STOP", 2: "MAX_TOKENS", 3: "SAFETY", 4: "RECITATION", 5: "OTHER",
                6: "BLOCKLIST", 7: "PROHIBITED_CONTENT", 8: "SPII",
                9: "MALFORMED_FUNCTION_CALL"}

# google.rpc.Code values seen in error frames.
RPC_INVALID_ARGUMENT = 3
RPC_PERMISSION_DENIED = 7
RPC_RESOURCE_EXHAUSTED = 8
RPC_UNAUTHENTICATED = 16
RPC_NAMES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
             5: "NOT_FOUND", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
             9: "FAILED_PRECONDITION", 13: "INTERNAL", 14: "UNAVAILABLE", 16: "UNAUTHENTICATED"}


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ThoughtDelta:
    text: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    name: str
    args: Any  # AI Studio's positional encoding, passed through undecoded


@dataclass(frozen=True, slots=True)
class UsageInfo:
    prompt_tokens: int
    candidates_tokens: int
    total_tokens: int
    thought_tokens: int | None = None  # usage[9], when the page sends it

    @property
    def reasoning_tokens(self) -> int:
        if self.thought_tokens is not None:
            return self.thought_tokens
        # Without usage[9]: the total includes thinking tokens not counted as candidate tokens.
        return max(0, self.total_tokens - self.prompt_tokens - self.candidates_tokens)


@dataclass(frozen=True, slots=True)
class Finish:
    code: int

    @property
    def reason(self) -> str:
        """The OpenAI finish_reason for this marker."""
        return FINISH_REASONS.get(self.code, REFUSED_REASON)

    @property
    def name(self) -> str:
        return FINISH_NAMES.get(self.code, f"FINISH_{self.code}")


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    """An error frame `[code, "message"]` (google.rpc code), from a 2xx body or an error body."""

    code: int
    message: str

    @property
    def name(self) -> str:
        return RPC_NAMES.get(self.code, f"CODE_{self.code}")


Event = Union[TextDelta, ThoughtDelta, FunctionCall, UsageInfo, Finish, ErrorStatus]


class StreamFormatError(ValueError):
    """The body is not the expected growing JSON array (e.g. an HTML error page)."""


_PRE, _BODY, _DONE = range(3)
# Bracket depth at which chunks open (the body's own array is depth 1); 0 while undecided.
_FLAT, _NESTED = 2, 3


class StreamParser:
    """Feed body pieces; get the events of each chunk once it is complete. One per response."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._buf = ""  # text not yet consumed, from the earliest start still needed
        self._pos = 0  # where scanning resumes
        self._state = _PRE
        self._depth = 0
        self._in_string = False
        self._escape = False  # the previous piece ended right after a backslash in a string
        self._level = 0  # _FLAT or _NESTED once decided
        self._peek = False  # undecided: the next non-space character says if an array follows
        self._start = -1  # where the chunk (or, undecided, the first inner element) starts
        self._first = -1  # undecided: where the body's first element starts
        self.chunks = 0  # chunks decoded so far
        self.nested: bool | None = None  # True: the live `[[chunk, ...]]` form; None: undecided

    @property
    def complete(self) -> bool:
        """True once the closing bracket of the body's array has been seen."""
        return self._state == _DONE

    def feed(self, data: bytes | str) -> list[Event]:
        if not isinstance(data, str):
            try:
                data = self._decoder.decode(bytes(data))
            except UnicodeDecodeError as exc:
                raise StreamFormatError(f"body is not UTF-8: {exc}") from None
        if not data:
            return []
        self._buf += data
        events: list[Event] = []
        self._scan(events)
        return events

    def close(self) -> list[Event]:
        """Call at the end of the body: raises StreamFormatError if it was cut short."""
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise StreamFormatError("body ends inside a UTF-8 character") from None
        if self._state != _DONE:
            where = "before the array started" if self._state == _PRE else "inside the array"
            raise StreamFormatError(f"body ended {where} (after {self.chunks} chunks)")
        return []

    # -- scanning

    def _scan(self, events: list[Event]) -> None:
        buf, pos, n = self._buf, self._pos, len(self._buf)
        while pos < n:
            if self._state == _BODY:
                if self._in_string:
                    if self._escape:
                        self._escape = False
                        pos += 1
                        continue
                    m = _IN_STRING.search(buf, pos)
                    if m is None:
                        pos = n
                        break
                    pos = m.end()
                    if m.group() == "\\":
                        self._escape = True
                    else:
                        self._in_string = False
                    continue
                if self._peek:
                    if buf[pos].isspace():
                        pos += 1
                        continue
                    self._peek = False
                    if buf[pos] != "[":  # a scalar, an elision or `]`: the older, flat form
                        self._decide(_FLAT)
                m = _STRUCTURAL.search(buf, pos)
                if m is None:
                    pos = n
                    break
                ch, pos = m.group(), m.end()
                if ch == '"':
                    self._in_string = True
                elif ch == "[":
                    self._open(pos - 1)
                else:
                    self._close(pos, events)
            elif self._state == _PRE:
                ch = buf[pos]
                if ch == "[":
                    self._state, self._depth, self._peek = _BODY, 1, True
                elif ch not in _PREAMBLE_CHARS:
                    raise StreamFormatError(f"body does not start with a JSON array: {buf[:40]!r}")
                pos += 1
            else:  # _DONE: whatever follows the array is ignored
                pos = n
        # Drop consumed text so a long stream does not rescan or keep its past.
        keep = pos
        for start in (self._start, self._first):
            if 0 <= start < keep:
                keep = start
        self._buf = buf[keep:]
        self._pos = pos - keep
        if self._start >= 0:
            self._start -= keep
        if self._first >= 0:
            self._first -= keep

    def _open(self, at: int) -> None:
        self._depth += 1
        depth = self._depth
        if self._level:
            if depth == self._level:
                self._start = at
        elif depth == 2:  # the body's first element: a chunk list, or a chunk (older form)
            self._first, self._peek = at, True
        elif depth == 3:
            self._start = at

    def _close(self, end: int, events: list[Event]) -> None:
        depth = self._depth
        self._depth -= 1
        if depth == 1:
            self._state = _DONE
        elif self._level:
            if depth == self._level:
                self._emit(_decode(self._buf[self._start:end], self.chunks), events)
                self._start = -1
        elif depth == 3:  # undecided: the first element inside the body's first element
            value = _decode(self._buf[self._start:end], self.chunks)
            if _is_candidate_list(value):
                self._decide(_FLAT)  # that was a chunk's candidates: keep collecting the chunk
            else:
                self._decide(_NESTED)
                self._emit(value, events)

    def _decide(self, level: int) -> None:
        self._level = level
        self.nested = level == _NESTED
        if level == _FLAT:
            # The body's first element (if one has opened) is itself a chunk.
            self._start = self._first if self._depth >= 2 else -1
        else:
            self._start = -1
        self._first = -1

    def _emit(self, chunk: Any, events: list[Event]) -> None:
        self.chunks += 1
        events.extend(chunk_events(chunk))


def _decode(text: str, index: int) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        error = exc
    # Google's JS-style arrays may elide nulls (`[,[7,"..."]]`); fill the holes and try again.
    filled = _fill_holes(text)
    if filled != text:
        try:
            return json.loads(filled)
        except ValueError:
            pass
    raise StreamFormatError(f"chunk {index} is not valid JSON: {error}") from None


def _fill_holes(text: str) -> str:
    def fill(m: re.Match) -> str:
        if m.group(1) is None:
            return m.group()  # a string: left alone
        opener, space = m.group(1), m.group(2)
        if text[m.end()] == ",":
            return opener + "null" + space
        # `,]`: a trailing comma adds no element (JavaScript); `[]` stays empty.
        return ("" if opener == "," else opener) + space

    return _HOLE.sub(fill, text)


# ---------------------------------------------------------------------------- chunk meaning


def _at(seq: Any, i: int) -> Any:
    return seq[i] if isinstance(seq, list) and len(seq) > i else None


def _is_candidate_list(value: Any) -> bool:
    """True for a chunk's candidates `[[[parts, "model"], finish?], ...]` (or a refused
    candidate with no content, `[[null, 3]]`); False for a whole chunk, whose [0] is the
    candidate list or null."""
    if value == []:
        return True  # an empty first element is no chunk of the live form
    candidate = _at(value, 0)
    if not isinstance(candidate, list) or not candidate:
        return False
    content = candidate[0]
    return content is None or (isinstance(content, list) and _at(content, 1) == "model")


def part_event(part: Any) -> Event | None:
    if not isinstance(part, list):
        return None
    call = _at(part, 10)
    if isinstance(call, list) and isinstance(_at(call, 0), str):
        return FunctionCall(call[0], _at(call, 1))
    text = _at(part, 1)
    if isinstance(text, str):
        # `True` is `1` in Python; the page sends the integer 1.
        return ThoughtDelta(text) if _at(part, 12) == 1 else TextDelta(text)
    return None


def error_frame(chunk: Any) -> ErrorStatus | None:
    """`[null, [code, "message", ...]]` (or a bare `[code, "message"]`) as an ErrorStatus."""
    status = chunk
    if _at(chunk, 0) is None and isinstance(_at(chunk, 1), list):
        status = chunk[1]
    code, message = _at(status, 0), _at(status, 1)
    if type(code) is int and isinstance(message, str):
        return ErrorStatus(code, message)
    return None


def chunk_events(chunk: Any) -> list[Event]:
    """The events carried by one decoded chunk (unknown shapes carry none)."""
    if not isinstance(chunk, list):
        return []
    err = error_frame(chunk)
    if err is not None:
        return [err]
    events: list[Event] = []
    candidate = _at(_at(chunk, 0), 0)
    if isinstance(candidate, list):
        parts = _at(_at(candidate, 0), 0)
        if isinstance(parts, list):
            for part in parts:
                ev = part_event(part)
                if ev is not None and not (isinstance(ev, (TextDelta, ThoughtDelta)) and not ev.text):
                    events.append(ev)
        finish = _at(candidate, 1)
        if type(finish) is int and finish > 0:
            events.append(Finish(finish))
    usage = _at(chunk, 2)
    if isinstance(usage, list) and len(usage) >= 3 and all(
        type(x) is int or x is None for x in usage[:3]
    ):
        p, c, t = (x or 0 for x in usage[:3])
        thoughts = _at(usage, 9)
        events.append(UsageInfo(p, c, t or p + c, thoughts if type(thoughts) is int else None))
    return events


def strip_xssi(text: str) -> str:
    """`)]}'` + newline precedes some JSON bodies (ListModels); JSON parsers need it gone."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(XSSI_PREFIX):
        stripped = stripped[len(XSSI_PREFIX):]
    return stripped


def parse_error_body(body: str) -> ErrorStatus | None:
    """The error frame of a (complete) error body, if it has one."""
    parser = StreamParser()
    try:
        events = parser.feed(body)
    except StreamFormatError:
        return None
    for ev in events:
        if isinstance(ev, ErrorStatus):
            return ev
    return None


def parse_models(body: str) -> list[tuple[str, str]]:
    """(id, display name) per ListModels entry (`[0]` = "models/<id>", `[3]` = display name);
    [] when the body has another shape."""
    try:
        data = json.loads(strip_xssi(body))
    except ValueError:
        return []
    found: dict[str, str] = {}

    def walk(node: Any, depth: int) -> None:
        # The entries sit one or two arrays deep depending on the page version.
        if not isinstance(node, list) or depth > 3:
            return
        first = _at(node, 0)
        if isinstance(first, str) and first.startswith("models/"):
            display = _at(node, 3)
            found.setdefault(first[len("models/"):], display if isinstance(display, str) else "")
            return
        for child in node:
            walk(child, depth + 1)

    walk(data, 0)
    return list(found.items())


def parse_model_list(body: str) -> list[str]:
    """Model ids (without `models/`) from a ListModels body."""
    return [mid for mid, _ in parse_models(body)]
