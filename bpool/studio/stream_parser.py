"""Incremental parser for the body of AI Studio's GenerateContent response (sans-IO).

The body is ONE JSON value that grows while the answer streams, maybe preceded by the `)]}'`
anti-XSSI prefix (docs/aistudio-page.md; tests/studio/fixtures/aistudio/ holds a real captured body):

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
from typing import Any

from bpool.studio.chunks import (  # re-exported: the parser's events and codes
    XSSI_PREFIX, FINISH_STOP, FINISH_MAX_TOKENS, FINISH_SAFETY, FINISH_RECITATION, FINISH_REASONS, REFUSED_REASON, FINISH_NAMES, RPC_INVALID_ARGUMENT, RPC_PERMISSION_DENIED, RPC_RESOURCE_EXHAUSTED, RPC_UNAUTHENTICATED, RPC_NAMES, TextDelta, ThoughtDelta, FunctionCall, UsageInfo, Finish, ErrorStatus, Event, chunk_events, part_event, error_frame, strip_xssi, parse_models, _is_candidate_list,
)

__all__ = [
    'XSSI_PREFIX',
    'FINISH_STOP',
    'FINISH_MAX_TOKENS',
    'FINISH_SAFETY',
    'FINISH_RECITATION',
    'FINISH_REASONS',
    'REFUSED_REASON',
    'FINISH_NAMES',
    'RPC_INVALID_ARGUMENT',
    'RPC_PERMISSION_DENIED',
    'RPC_RESOURCE_EXHAUSTED',
    'RPC_UNAUTHENTICATED',
    'RPC_NAMES',
    'TextDelta',
    'ThoughtDelta',
    'FunctionCall',
    'UsageInfo',
    'Finish',
    'ErrorStatus',
    'Event',
    'chunk_events',
    'part_event',
    'error_frame',
    'strip_xssi',
    'parse_models',
    'StreamFormatError',
    'StreamParser',
    'parse_error_body',
]

# Characters allowed before the opening bracket: the anti-XSSI prefix and whitespace.
_PREAMBLE_CHARS = frozenset(XSSI_PREFIX + " \t\r\n\ufeff")
_STRUCTURAL = re.compile(r'[\[\]"]')  # outside strings only brackets and quotes matter
_IN_STRING = re.compile(r'["\\]')  # inside strings only the closing quote and escapes matter
# A JSON string, or an elided array element: `[` or `,` followed by `,` or `]`.
_HOLE = re.compile(r'"(?:[^"\\]|\\.)*"|([\[,])(\s*)(?=[,\]])', re.S)

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
