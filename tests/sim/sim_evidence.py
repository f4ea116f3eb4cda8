"""Facts about the live AI Studio page that the simulator's tests measure it against, and a few
readers written from those facts alone (not from bpool.sim or bpool.studio).

REAL_ANSWER: the captured GenerateContent response body in tests/studio/fixtures/aistudio/.
REAL_REQUEST: a real GenerateContent request body captured from the live page
(bamboo-pan/nexus-studio tests/test_input.json at 682c2acdbd3306d6dbbfc28557c70637fbc15737), with
its 2,000-character anti-bot token shortened. Index 6 carries three tools (code execution,
function declarations, Google Search), index 13 the time zone that comes with tools.
"""

from __future__ import annotations

import json
from pathlib import Path

REAL_ANSWER_FILE = (Path(__file__).parent.parent / "studio" / "fixtures" / "aistudio"
                    / "generate_thinking_nihao.json")

REAL_REQUEST = [
    "models/gemma-4-31b-it",
    [[[[None, "7777怎么凑成24点，禁止搜索"]], "user"]],
    [[None, None, 7, 4], [None, None, 8, 4], [None, None, 9, 4], [None, None, 10, 3]],
    [None, ["6"], None, 32768, 0.7, 0.95, 64, "application/json",
     [6, None, None, None, None, None, [["test_response", [1]]]] + [None] * 15 + [["test_response"]],
     None, None, None, None, None, None, None, [1, None, None, 3], 1],
    "!CQqlCm7NAAaT-qqNs_pCHZd",
    [[[None, "测试prompt"]], "user"],
    [[[]],
     [None, [["getWeather", "gets the weather for a requested city",
              [6, None, None, None, None, None, [["city", [1]]]] + [None] * 15 + [["city"]]]]],
     [None, None, None, [None, [[]]]]],
    None, None, None, 1,
    "v1_ChdhSmI1YVl1UEUtMmh6N0lQb2QzWG9BZxIXMXJyNWFaMmREX3ZMcXRzUHFfVGVnQVE",
    None,
    [[None, None, "Asia/Shanghai"], None, 1],
]
GOOGLE_SEARCH_TOOL = REAL_REQUEST[6][2]
THINKING_INDEX = 16  # generation_config[16] = [1, null, null, 3] in REAL_REQUEST


def real_answer() -> list:
    return json.loads(REAL_ANSWER_FILE.read_text(encoding="utf-8"))


def skeleton(value: object) -> object:
    """The shape of a JSON value: lists kept, leaves replaced by their kind."""
    if isinstance(value, list):
        return [skeleton(v) for v in value]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    if isinstance(value, str):
        return "str"
    return None


# ---------------------------------------------------------------- an independent reader of answers

def chunk_list(body: list) -> list:
    """[[chunk, ...]]: the outer array holds exactly one inner array."""
    assert isinstance(body, list) and len(body) == 1 and isinstance(body[0], list), "not [[...]]"
    return body[0]


def read_text(chunks: list, *, thought: bool) -> str:
    """The concatenated text (or thoughts) of a chunk list: chunk[0][0][0][0] are the parts."""
    out = []
    for c in chunks:
        if c[0] is None or c[0][0][0] is None:  # metadata, an error frame, a SAFETY candidate
            continue
        for part in c[0][0][0][0]:
            is_thought = len(part) > 12 and part[12] == 1
            if is_thought == thought and isinstance(part[1], str):
                out.append(part[1])
    return "".join(out)


def finish_of(chunks: list) -> int | None:
    return next((c[0][0][1] for c in chunks if c[0] is not None and len(c[0][0]) > 1), None)


def usage_rows(chunks: list) -> list[list]:
    return [c[2] for c in chunks if c[0] is not None]


def error_frames(chunks: list) -> list[list]:
    return [c[1] for c in chunks if c[0] is None and isinstance(c[1], list)]
