"""What the simulated studio says, byte for byte, with no I/O and no clock.

`GenerateContent` answers with one JSON array that grows while it streams (AISTUDIO.md):

    [ chunk , chunk , ... ]
    chunk     = [candidates, null, usage?]           usage only on the last chunk
    candidates= [candidate]
    candidate = [[parts, "model"]]                    [[parts, "model"], 1] on the last chunk (STOP,
                                                      2 = MAX_TOKENS when max output tokens cut it)
    text part = [null, "text"]
    thought   = [null, "text", null x 10, 1]         13 elements, 1 at index 12
    usage     = [prompt_tokens, candidate_tokens, total_tokens, null, [[1, prompt_tokens]]]

`plan_writes` turns the chunks into timed writes. Each chunk is split into two writes inside its
JSON text (between characters, or anywhere in the UTF-8 bytes with split="bytes") so that stream
parsers meet arbitrary boundaries, and the halves are spaced so they arrive as separate reads.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

STOP = 1
MAX_TOKENS = 2
SPLIT_MODES = ("none", "chars", "bytes")


@dataclass(frozen=True)
class Model:
    id: str
    display_name: str
    description: str
    max_output_tokens: int


MODELS: tuple[Model, ...] = (
    Model("gemini-2.5-pro", "Gemini 2.5 Pro", "Our most powerful thinking model", 65536),
    Model("gemini-2.5-flash", "Gemini 2.5 Flash", "Fast and intelligent model", 65536),
    Model("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", "Our smallest model", 65536),
    Model("gemini-2.0-flash", "Gemini 2.0 Flash", "The previous generation workhorse", 8192),
)


def find_model(name: str) -> Model | None:
    """`name` is "models/<id>" (what the page sends) or a bare id."""
    bare = name.removeprefix("models/")
    return next((m for m in MODELS if m.id == bare), None)


def list_models_body() -> bytes:
    """The ListModels answer: the anti-JSON-hijacking prefix, then [[entry, ...]]."""
    entries = [
        [f"models/{m.id}", None, None, m.display_name, m.description, None,
         m.max_output_tokens, 1048576, None, 1, 0.95, 64, 2]
        for m in MODELS
    ]
    return b")]}'\n" + json.dumps([entries], ensure_ascii=False).encode()


def error_body(code: int, message: str) -> bytes:
    """Google's JSPB error shape, elided leading null included (it is not strict JSON)."""
    return ("[," + json.dumps([code, message], ensure_ascii=False, separators=(",", ":")) + "]").encode()


def answer_text(email: str, prompt: str) -> str:
    return f"Hello from {email}. You said: {prompt}"


def thought_texts(email: str, prompt: str) -> list[str]:
    return [
        f"**Reading the request** The user wrote {len(prompt)} characters to {email}. ",
        "**Planning** I will greet them and repeat what they said, exactly.",
    ]


_PIECE = re.compile(r"\s*\S{1,6}|\s+")


def split_pieces(text: str) -> list[str]:
    """Token-ish pieces (up to 6 visible characters with their leading space); joins back to `text`."""
    return _PIECE.findall(text)


def apply_stops(text: str, stops: list[str]) -> str:
    """Cut the answer before the first stop sequence, as the real service does."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def text_part(text: str) -> list:
    return [None, text]


def thought_part(text: str) -> list:
    return [None, text] + [None] * 10 + [1]


def chunk(parts: list, *, finish: int | None = None, usage: list | None = None) -> list:
    candidate: list = [[parts, "model"]]
    if finish is not None:
        candidate.append(finish)
    out: list = [[candidate]]
    if usage is not None:
        out += [None, usage]
    return out


@dataclass(frozen=True)
class Answer:
    chunks: list[list]  # JSON-able chunks in stream order
    text: str  # the visible answer (thoughts excluded)
    finish: int


def build_answer(
    email: str, prompt: str, *, thinking: bool, max_tokens: int | None, stops: list[str],
    prompt_tokens: int | None = None,
) -> Answer:
    """The whole deterministic answer as chunks: optional thoughts, then the echo, then finish+usage."""
    thoughts = [p for t in thought_texts(email, prompt) for p in split_pieces(t)] if thinking else []
    pieces = split_pieces(apply_stops(answer_text(email, prompt), stops))
    finish = STOP
    if max_tokens is not None and max_tokens > 0 and len(pieces) > max_tokens:
        pieces, finish = pieces[:max_tokens], MAX_TOKENS
    if not pieces:  # the last chunk must still carry the finish marker and usage
        pieces = [""]
    p_tok = prompt_tokens if prompt_tokens is not None else estimate_tokens(prompt)
    c_tok = len(pieces) + len(thoughts)
    usage = [p_tok, c_tok, p_tok + c_tok, None, [[1, p_tok]]]
    chunks = [chunk([thought_part(t)]) for t in thoughts]
    chunks += [chunk([text_part(t)]) for t in pieces[:-1]]
    chunks.append(chunk([text_part(pieces[-1])], finish=finish, usage=usage))
    return Answer(chunks=chunks, text="".join(pieces), finish=finish)


@dataclass(frozen=True)
class Pace:
    tokens_per_s: float = 50.0  # 0 = as fast as possible
    first_token_s: float = 0.2
    answer_s: float = 0.0  # > 0: the last chunk lands exactly this long after the request
    split: str = "chars"


def chunk_times(n: int, pace: Pace) -> list[float]:
    """Offset (s from request start) of each chunk's first write."""
    first = max(0.0, pace.first_token_s)
    if pace.answer_s > 0:
        first = min(first, pace.answer_s)
        if n == 1:
            return [pace.answer_s]
        step = (pace.answer_s - first) / (n - 1)
        return [first + i * step for i in range(n)]
    step = 1.0 / pace.tokens_per_s if pace.tokens_per_s > 0 else 0.0
    return [first + i * step for i in range(n)]


def _halves(text: str, mode: str) -> list[bytes]:
    if mode == "none" or len(text) < 2:
        return [text.encode()]
    if mode == "bytes":
        raw = text.encode()
        # A cut inside a multi-byte character is the hardest case for decoders: prefer it.
        cut = next((i for i in range(1, len(raw)) if raw[i] & 0xC0 == 0x80), None)
        if cut is not None:
            return [raw[:cut], raw[cut:]]
    # Cut inside the first string literal, where a naive parser is most likely to trip.
    quote = text.find('"')
    cut = quote + 1 + max(1, (text.find('"', quote + 1) - quote) // 2) if quote >= 0 else len(text) // 2
    cut = min(max(cut, 1), len(text) - 1)
    return [text[:cut].encode(), text[cut:].encode()]


def plan_writes(chunks: list[list], pace: Pace) -> list[tuple[float, bytes]]:
    """Timed writes that together form `[chunk,chunk,...]`; each chunk's second half is sent half
    way to the next chunk so the reader really sees the split."""
    times = chunk_times(len(chunks), pace)
    writes: list[tuple[float, bytes]] = []
    for i, c in enumerate(chunks):
        text = ("[" if i == 0 else ",") + json.dumps(c, ensure_ascii=False, separators=(",", ":"))
        if i == len(chunks) - 1:
            text += "]"
        halves = _halves(text, pace.split)
        nxt = times[i + 1] if i + 1 < len(times) else times[i]
        mid = (times[i] + nxt) / 2
        writes.append((times[i], halves[0]))
        writes += [(mid, h) for h in halves[1:]]
    return writes
