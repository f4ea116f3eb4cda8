"""What the simulated RPC host says, byte for byte, with no I/O and no clock.

`GenerateContent` answers with ONE JSON value that grows while it streams. Its shape copies the
real captured body (bamboo-pan/nexus-studio tests/test_output.json), position by position:

    body      = [ [ chunk, chunk, ... ] ]          outer array holding ONE inner array of chunks
                [ chunk, chunk, ... ]               with nesting="flat" (an older variant)
    chunk     = [ [candidate], null, usage, null, null, null, null, "<response id>" ]
    candidate = [ [parts, "model"] ]                while streaming
                [ [[[null, ""]], "model"], finish, null, null, safety_ratings ]   the last one
                [ null, 3, null, null, safety_ratings ]       SAFETY: no content at all
    part      = [null, "text"]                      answer text
                [null, "text", null x 10, 1]        a thought: 1 at index 12
    usage     = [prompt, candidates|null, total, null, [[1, prompt]], null, null, null, null,
                 thought_tokens]                    on every chunk, counts so far
    metadata  = [null, null, null, ["<response id>", n, n]]       a trailing chunk (docs/aistudio-page.md)
    error     = [null, [code, "message"]]           an element of the chunk list, or the whole
                                                    body with errors="bare"

`plan_writes` turns a body into timed writes; each chunk is cut into two writes inside its JSON
text (between characters, or inside a UTF-8 character with split="bytes") so that stream parsers
meet arbitrary boundaries.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass

STOP = 1
MAX_TOKENS = 2
SAFETY = 3
SPLIT_MODES = ("none", "chars", "bytes")
NESTINGS = ("nested", "flat")
# Categories 7..10 as in the captured body; 1 = NEGLIGIBLE. A blocked answer rates one HIGH (4).
SAFETY_RATINGS = [[None, None, c, 1] for c in (7, 8, 9, 10)]
BLOCKED_RATINGS = [[None, None, 7, 1], [None, None, 8, 4, None, 1], [None, None, 9, 1], [None, None, 10, 1]]


def new_response_id() -> str:
    return "v1_" + secrets.token_urlsafe(52)


def error_frame(code: int, message: str) -> list:
    return [None, [code, message]]


def error_body(code: int, message: str) -> bytes:
    """Google's JSPB error shape for non-2xx answers, elided leading null included (not strict JSON)."""
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


def usage(prompt: int, candidates: int, thoughts: int) -> list:
    """Counts so far; `candidates` is null until the first answer token, as in the capture."""
    out: list = [prompt, candidates or None, prompt + candidates + thoughts, None, [[1, prompt]]]
    if thoughts:
        out += [None, None, None, None, thoughts]
    return out


def chunk(candidate: list, use: list, response_id: str) -> list:
    return [[candidate], None, use, None, None, None, None, response_id]


def metadata_chunk(response_id: str, prompt: int, total: int) -> list:
    # The two numbers' meaning is not in the evidence; the sim puts token counts there.
    return [None, None, None, [response_id, prompt, total]]


@dataclass(frozen=True)
class Answer:
    chunks: list[list]  # JSON-able chunks in stream order
    text: str  # the visible answer (thoughts excluded)
    finish: int
    response_id: str


def build_answer(
    email: str, prompt: str, *, thinking: bool, max_tokens: int | None, stops: list[str],
    prompt_tokens: int | None = None, response_id: str | None = None, metadata: bool = True,
    safety: bool = False, text: str | None = None,
) -> Answer:
    """The whole deterministic answer: thoughts, the echo, the finish chunk, the metadata chunk."""
    rid = response_id or new_response_id()
    p_tok = prompt_tokens if prompt_tokens is not None else estimate_tokens(prompt)
    thoughts = [p for t in thought_texts(email, prompt) for p in split_pieces(t)] if thinking else []
    said = answer_text(email, prompt) if text is None else text  # text: an instructed answer
    pieces = [] if safety else split_pieces(apply_stops(said, stops))
    finish = SAFETY if safety else STOP
    if max_tokens is not None and max_tokens > 0 and len(pieces) > max_tokens:
        pieces, finish = pieces[:max_tokens], MAX_TOKENS
    chunks: list[list] = []
    n_thought = n_text = 0
    for t in thoughts:
        n_thought += 1
        chunks.append(chunk([[[thought_part(t)], "model"]], usage(p_tok, 0, n_thought), rid))
    for t in pieces:
        n_text += 1
        chunks.append(chunk([[[text_part(t)], "model"]], usage(p_tok, n_text, n_thought), rid))
    end = usage(p_tok, n_text, n_thought)
    if safety:
        chunks.append(chunk([None, SAFETY, None, None, BLOCKED_RATINGS], end, rid))
    else:
        chunks.append(chunk([[[text_part("")], "model"], finish, None, None, SAFETY_RATINGS], end, rid))
    if metadata:
        chunks.append(metadata_chunk(rid, p_tok, end[2]))
    return Answer(chunks=chunks, text="".join(pieces), finish=finish, response_id=rid)


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


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def body_bytes(chunks: list[list], nesting: str = "nested") -> bytes:
    """The complete body, as one write (errors and tests)."""
    return dumps([chunks] if nesting == "nested" else chunks).encode()


def plan_writes(chunks: list[list], pace: Pace, nesting: str = "nested") -> list[tuple[float, bytes]]:
    """Timed writes that together form the body; each chunk's second half is sent half way to the
    next chunk so the reader really sees the split."""
    opening, closing = ("[[", "]]") if nesting == "nested" else ("[", "]")
    times = chunk_times(len(chunks), pace)
    writes: list[tuple[float, bytes]] = []
    for i, c in enumerate(chunks):
        text = (opening if i == 0 else ",") + dumps(c)
        if i == len(chunks) - 1:
            text += closing
        halves = _halves(text, pace.split)
        nxt = times[i + 1] if i + 1 < len(times) else times[i]
        mid = (times[i] + nxt) / 2
        writes.append((times[i], halves[0]))
        writes += [(mid, h) for h in halves[1:]]
    return writes
