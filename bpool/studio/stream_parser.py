"""Incremental parser for the body of AI Studio's GenerateContent response (sans-IO).

The body is one JSON array that grows while the answer streams: `[` chunk `,` chunk ... `]`, maybe
preceded by the `)]}'` anti-XSSI prefix. Each chunk is a positional array (AISTUDIO.md):

    chunk[0]            candidates; chunk[0][0] = candidate = [[parts, "model"], finish?, ...]
    part                [null, "text"]; a thought has a `1` at index 12; a function call has
                        [name, args] at index 10
    chunk[2]            usage: [prompt_tokens, candidate_tokens, total_tokens, null, [[mod, n]]]

`StreamParser.feed()` takes pieces split anywhere (inside a string, an escape or a multi-byte UTF-8
character) and returns the events of every top-level chunk completed by that piece, as soon as it
is complete. Chunk boundaries are found by tracking string/escape state and bracket depth (a text
may contain `]],"model"]`), then each chunk is decoded as JSON on its own.
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
_SCALAR_END = re.compile(r"[,\]\s]")

# Gemini's FinishReason enum (1 = STOP, 2 = MAX_TOKENS, the rest are refusals of some kind).
FINISH_STOP = 1
FINISH_MAX_TOKENS = 2


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

    @property
    def reasoning_tokens(self) -> int:
        # The total includes thinking tokens that are not counted as candidate tokens.
        return max(0, self.total_tokens - self.prompt_tokens - self.candidates_tokens)


@dataclass(frozen=True, slots=True)
class Finish:
    code: int

    @property
    def reason(self) -> str:
        """The OpenAI finish_reason for this marker."""
        return "length" if self.code == FINISH_MAX_TOKENS else "stop"


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    """An `[code, "message"]` status element, as found in error bodies."""

    code: int
    message: str


Event = Union[TextDelta, ThoughtDelta, FunctionCall, UsageInfo, Finish, ErrorStatus]


class StreamFormatError(ValueError):
    """The body is not the expected growing JSON array (e.g. an HTML error page)."""


_PRE, _ARRAY, _CHUNK, _TOP_STRING, _DONE = range(5)


class StreamParser:
    """Feed body pieces; get events per completed top-level chunk. One parser per response."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._buf = ""  # text not yet consumed; a chunk in progress starts at `_start`
        self._start = 0
        self._pos = 0  # where scanning resumes
        self._state = _PRE
        self._depth = 0  # bracket depth inside the current chunk
        self._in_string = False
        self._escape = False  # the previous piece ended right after a backslash in a string
        self.chunks = 0  # completed top-level chunks so far

    @property
    def complete(self) -> bool:
        """True once the closing bracket of the top-level array has been seen."""
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
            state = self._state
            if state == _CHUNK or state == _TOP_STRING:
                end = self._scan_value(buf, pos)
                if end < 0:
                    pos = n
                    break  # the value continues in the next piece
                if state == _CHUNK:
                    self._emit_chunk(buf[self._start:end], events)
                self._state, pos = _ARRAY, end
                continue
            ch = buf[pos]
            if state == _PRE:
                if ch == "[":
                    self._state = _ARRAY
                elif ch not in _PREAMBLE_CHARS:
                    raise StreamFormatError(f"body does not start with a JSON array: {buf[:40]!r}")
                pos += 1
            elif state == _ARRAY:
                if ch == "[":
                    self._state, self._start, self._depth = _CHUNK, pos, 0
                elif ch == "]":
                    self._state = _DONE
                    pos += 1
                elif ch == "," or ch.isspace():
                    pos += 1
                elif ch == '"':  # a top-level string carries no events: skip it
                    self._state, self._in_string = _TOP_STRING, True
                    pos += 1
                else:  # null / a number / true / false at top level
                    m = _SCALAR_END.search(buf, pos)
                    if m is None:
                        break  # the literal may continue in the next piece
                    pos = m.start()
            else:  # _DONE: whatever follows the array is ignored
                pos = n
        # Drop consumed text so a long stream does not rescan or keep its past.
        keep = self._start if self._state == _CHUNK else pos
        self._buf = buf[keep:]
        self._pos = pos - keep
        self._start = 0

    def _scan_value(self, buf: str, pos: int) -> int:
        """Scan inside a chunk or a top-level string; the index just past its end, or -1."""
        n = len(buf)
        while pos < n:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                m = _IN_STRING.search(buf, pos)
                if m is None:
                    return -1
                pos = m.end()
                if m.group() == "\\":
                    self._escape = True
                    continue
                self._in_string = False
                if self._state == _TOP_STRING:
                    return pos
                continue
            m = _STRUCTURAL.search(buf, pos)
            if m is None:
                return -1
            ch, pos = m.group(), m.end()
            if ch == '"':
                self._in_string = True
            elif ch == "[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return pos
        return -1

    def _emit_chunk(self, text: str, events: list[Event]) -> None:
        try:
            chunk = json.loads(text)
        except ValueError as exc:
            raise StreamFormatError(f"chunk {self.chunks} is not valid JSON: {exc}") from None
        self.chunks += 1
        events.extend(chunk_events(chunk))


# ---------------------------------------------------------------------------- chunk meaning


def _at(seq: Any, i: int) -> Any:
    return seq[i] if isinstance(seq, list) and len(seq) > i else None


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


def chunk_events(chunk: Any) -> list[Event]:
    """The events carried by one decoded top-level chunk (unknown shapes carry none)."""
    if not isinstance(chunk, list):
        return []
    if len(chunk) >= 2 and type(chunk[0]) is int and isinstance(chunk[1], str):
        return [ErrorStatus(chunk[0], chunk[1])]
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
        events.append(UsageInfo(p, c, t or p + c))
    return events


def strip_xssi(text: str) -> str:
    """`)]}'` + newline precedes some JSON bodies (ListModels); JSON parsers need it gone."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(XSSI_PREFIX):
        stripped = stripped[len(XSSI_PREFIX):]
    return stripped


def parse_error_body(body: str) -> ErrorStatus | None:
    """The `[code, "message"]` status of a (complete) error body, if it has one."""
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
