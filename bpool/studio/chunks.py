"""What one decoded GenerateContent chunk means (sans-IO): the events it carries, the finish and
error codes, and the ListModels body. The incremental scanning of the growing body that finds the
chunks is stream_parser.py; the format itself is described in its docstring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Union

XSSI_PREFIX = ")]}'"

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

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments as a plain object (see struct_value)."""
        value = struct_value(self.args)
        return value if isinstance(value, dict) else {}


def struct_value(node: Any) -> Any:
    """A google.protobuf Struct / Value in the page's positional (JSPB) form, as plain JSON.

    Assumption (no captured body holds a function call): positions follow the protobuf field
    numbers, as everywhere else in this format. Struct = [[[key, Value], ...]]; Value =
    [null_value, number, string, bool, Struct, ListValue] with trailing nulls left out;
    ListValue = [[Value, ...]]. A dict (the JSON form) passes through."""
    if not isinstance(node, list):
        return node
    fields = _at(node, 0)
    if isinstance(fields, list) and all(isinstance(f, list) and isinstance(_at(f, 0), str)
                                        for f in fields):
        return {f[0]: _value(_at(f, 1)) for f in fields}
    return _value(node)


def _value(v: Any) -> Any:
    if not isinstance(v, list):
        return v
    for i, x in enumerate(v[:6]):
        if x is None:
            continue
        if i == 0:
            return None
        if i in (1, 2):
            return x
        if i == 3:
            return bool(x)
        if i == 4:
            return struct_value(x)
        return [_value(item) for item in (_at(x, 0) or [])]
    return None


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
