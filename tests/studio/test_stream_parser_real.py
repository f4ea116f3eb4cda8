"""The parser against a real captured GenerateContent body (tests/studio/fixtures/aistudio/README.md):
a thinking model answering "你好". The expected texts below were read off the file by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpool.studio.stream_parser import (Finish, StreamParser, TextDelta, ThoughtDelta,
                                        UsageInfo)

BODY = (Path(__file__).parent / "fixtures" / "aistudio" / "generate_thinking_nihao.json").read_bytes()

ANSWER = "你好！有什么我可以帮你的吗？"
REASONING = (
    'The user said "你好" (Nǐ hǎo), which is the standard Chinese greeting meaning "Hello."\n'
    "\n"
    "The user is initiating a conversation in Chinese.\n"
    "\n"
    "    *   Acknowledge the greeting.\n"
    "    *   Respond politely.\n"
    "    *   Offer assistance.\n"
    "\n"
    "    *   *Option 1 (Simple):* 你好！ (Hello!)\n"
    "    *   *Option 2 (Helpful):* 你好！请问有什么我可以帮你的吗？ "
    "(Hello! Is there anything I can help you with?)\n"
    "    *   *Option 3 (Friendly):* 你好！很高兴见到你。今天想聊点什么？ "
    "(Hello! Nice to meet you. What would you like to talk about today?)"
)


def parse(pieces) -> tuple[list, StreamParser]:
    p = StreamParser()
    events = []
    for piece in pieces:
        events += p.feed(piece)
    p.close()
    return events, p


def summary(events: list) -> tuple[str, str, list, UsageInfo]:
    reasoning = "".join(e.text for e in events if isinstance(e, ThoughtDelta))
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    finishes = [e for e in events if isinstance(e, Finish)]
    usages = [e for e in events if isinstance(e, UsageInfo)]
    return reasoning, answer, finishes, usages[-1]


def test_the_real_body_gives_the_reasoning_the_answer_the_finish_and_the_usage():
    events, p = parse([BODY])
    assert p.complete and p.nested and p.chunks == 10
    reasoning, answer, finishes, usage = summary(events)
    assert reasoning == REASONING
    assert answer == ANSWER
    assert finishes == [Finish(1)] and finishes[0].reason == "stop"
    assert (usage.prompt_tokens, usage.candidates_tokens, usage.total_tokens) == (5, 8, 166)
    assert usage.thought_tokens == 153 and usage.reasoning_tokens == 153
    # The thinking streams before the answer, in seven pieces, then the answer in two.
    kinds = [type(e).__name__ for e in events if isinstance(e, (ThoughtDelta, TextDelta))]
    assert kinds == ["ThoughtDelta"] * 7 + ["TextDelta"] * 2


def test_each_chunk_of_the_real_body_comes_out_when_it_completes():
    # The first chunk ends at the first line that closes it: `        ],` at 8 spaces.
    first_end = BODY.index(b"\n        ],") + len(b"\n        ]")
    p = StreamParser()
    assert p.feed(BODY[:first_end - 1]) == []
    got = p.feed(BODY[first_end - 1:first_end])
    assert got[0] == ThoughtDelta('The user said "你好" (Nǐ hǎo), which is')
    assert p.nested is True and not p.complete


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 997, 4096])
def test_the_real_body_in_pieces_of_every_size(size):
    whole, _ = parse([BODY])
    pieces = [BODY[i:i + size] for i in range(0, len(BODY), size)]
    if size in (2, 5, 7):  # these sizes cut inside multi-byte characters: prove it
        assert any(_cuts_a_character(piece) for piece in pieces[:-1])
    events, _ = parse(pieces)
    assert events == whole
    assert summary(events)[:2] == (REASONING, ANSWER)


def test_the_real_body_split_in_two_where_it_matters():
    # Every byte of the first two chunks (where the nesting is decided) and every byte position
    # inside or next to a multi-byte character; pieces of size 1 above cover the rest.
    whole, _ = parse([BODY])
    second_end = BODY.index(b"\n        ],", BODY.index(b"\n        ],") + 1) + 10
    at = set(range(second_end))
    at |= {i + d for i, b in enumerate(BODY) if b >= 0x80 for d in (0, 1)}
    assert len(at) > second_end + 100  # the multi-byte positions past the first two chunks
    for i in sorted(at):
        events, _ = parse([BODY[:i], BODY[i:]])
        assert events == whole, f"split at byte {i}"


def _cuts_a_character(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
