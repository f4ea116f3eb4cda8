"""The GenerateContent body parser: chunk boundaries, split pieces, part kinds, usage, errors."""

from __future__ import annotations

import json

import pytest

from bpool.studio.stream_parser import (
    ErrorStatus,
    Finish,
    FunctionCall,
    StreamFormatError,
    StreamParser,
    TextDelta,
    ThoughtDelta,
    UsageInfo,
    parse_error_body,
    parse_model_list,
    strip_xssi,
)


def text_part(text: str) -> list:
    return [None, text]


def thought_part(text: str) -> list:
    return [None, text] + [None] * 10 + [1]


def call_part(name: str, args: object) -> list:
    return [None, None] + [None] * 8 + [[name, args]]


def chunk(parts: list, finish: int | None = None, usage: list | None = None) -> list:
    candidate: list = [[parts, "model"]]
    if finish is not None:
        candidate.append(finish)
    out: list = [[candidate]]
    if usage is not None:
        out += [None, usage]
    return out


def body(chunks: list, prefix: str = "") -> str:
    # The page's own serialisation: compact JSON, non-ASCII kept as is.
    return prefix + "[" + ",".join(json.dumps(c, ensure_ascii=False, separators=(",", ":"))
                                   for c in chunks) + "]"


def run(pieces) -> list:
    p = StreamParser()
    events = []
    for piece in pieces:
        events += p.feed(piece)
    p.close()
    return events


def texts(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


RECORDED_LIKE = [
    chunk([thought_part("**Planning** the answer")]),
    chunk([thought_part(" then [checking] \"quotes\"")]),
    chunk([text_part("Hello")]),
    chunk([text_part(", wörld ✓ 🚀 — ]],\"model\"] {x} \\n")]),
    chunk([text_part("\n```py\nprint('[1]')\n```")], finish=1,
          usage=[12, 34, 60, None, [[1, 12]]]),
]


def test_recorded_like_sequence_gives_events_in_order():
    events = run([body(RECORDED_LIKE, prefix=")]}'\n")])
    assert events == [
        ThoughtDelta("**Planning** the answer"),
        ThoughtDelta(" then [checking] \"quotes\""),
        TextDelta("Hello"),
        TextDelta(", wörld ✓ 🚀 — ]],\"model\"] {x} \\n"),
        TextDelta("\n```py\nprint('[1]')\n```"),
        Finish(1),
        UsageInfo(12, 34, 60),
    ]
    usage = events[-1]
    assert usage.reasoning_tokens == 14
    assert events[-2].reason == "stop"


def test_each_chunk_is_emitted_as_soon_as_it_is_complete():
    whole = body(RECORDED_LIKE)
    p = StreamParser()
    first_end = len("[" + json.dumps(RECORDED_LIKE[0], separators=(",", ":")))
    assert p.feed(whole[: first_end - 1]) == []  # last bracket of the first chunk missing
    assert p.feed(whole[first_end - 1: first_end]) == [ThoughtDelta("**Planning** the answer")]
    assert not p.complete
    rest = p.feed(whole[first_end:])
    assert len(rest) == 6 and p.complete
    assert p.chunks == 5


@pytest.mark.parametrize("as_bytes", [False, True])
def test_every_split_position_gives_the_same_events(as_bytes):
    small = [
        chunk([text_part('a"\\]é😀')]),
        chunk([thought_part("t[")]),
        chunk([text_part("\u00e9\\u")], finish=1, usage=[1, 2, 3]),
    ]
    whole = body(small, prefix=")]}'\n")
    data = whole.encode() if as_bytes else whole
    expected = run([data])
    assert texts(expected) == 'a"\\]é😀' + "\u00e9\\u"
    for i in range(len(data) + 1):
        assert run([data[:i], data[i:]]) == expected, f"split at {i}"
    for i in range(0, len(data), 3):  # three pieces, the middle one a single unit
        assert run([data[:i], data[i:i + 1], data[i + 1:]]) == expected, f"split at {i}"


def test_byte_by_byte_feed_across_multibyte_characters():
    whole = body([chunk([text_part("日本語 ünïcödé 👩‍👩‍👧")])]).encode()
    p = StreamParser()
    got = []
    for i in range(len(whole)):
        got += p.feed(whole[i:i + 1])
    assert got == [TextDelta("日本語 ünïcödé 👩‍👩‍👧")]


def test_escapes_split_inside_a_unicode_escape_and_after_a_backslash():
    raw = '[[[[[[[null,"q\\"uote \\\\ back \\u00e9 \\ud83d\\ude00 ]] [ \\/"]],"model"]]]]]'
    expected = 'q"uote \\ back é 😀 ]] [ /'
    for i in range(len(raw) + 1):
        assert run([raw[:i], raw[i:]]) == [TextDelta(expected)], f"split at {i}"


def test_whitespace_between_and_inside_chunks():
    raw = ')]}\'\n\n [ \n [ [ [ [ [ [ null , "x" ] ] , "model" ] ] ] ] \n , \n' \
          '[[[[[[null,"y"]],"model"],1]]] ] \n'
    assert run([raw]) == [TextDelta("x"), TextDelta("y"), Finish(1)]


def test_usage_arrives_only_at_the_end():
    chunks = [chunk([text_part(str(i))]) for i in range(5)]
    chunks.append(chunk([text_part("!")], finish=2, usage=[7, 6, 13, None, [[1, 7]]]))
    events = run([body(chunks)])
    assert [type(e) for e in events[:-2]] == [TextDelta] * 6
    assert events[-2] == Finish(2) and events[-2].reason == "length"
    assert events[-1] == UsageInfo(7, 6, 13) and events[-1].reasoning_tokens == 0


def test_function_call_part():
    args = [[["city", [None, None, "Paris"]]]]
    events = run([body([chunk([call_part("get_weather", args)], finish=1)])])
    assert events == [FunctionCall("get_weather", args), Finish(1)]


def test_several_parts_in_one_chunk_and_empty_texts_are_dropped():
    events = run([body([chunk([thought_part("a"), text_part(""), text_part("b")])])])
    assert events == [ThoughtDelta("a"), TextDelta("b")]


def test_unknown_shapes_carry_no_events_and_do_not_break_the_stream():
    raw = '[[null,null,null],[{"k":"]"}],"top-level string ]",17,true,null,' \
          + json.dumps(chunk([text_part("ok")])) + "]"
    assert run([raw]) == [TextDelta("ok")]
    for i in range(len(raw) + 1):
        assert run([raw[:i], raw[i:]]) == [TextDelta("ok")], f"split at {i}"


def test_error_bodies():
    assert parse_error_body('[,[7,"The caller does not have permission"]]') == ErrorStatus(
        7, "The caller does not have permission"
    )
    assert parse_error_body(")]}'\n[[8,\"Resource has been exhausted (e.g. check quota).\"]]") \
        == ErrorStatus(8, "Resource has been exhausted (e.g. check quota).")
    assert parse_error_body("<html>Too Many Requests</html>") is None
    assert parse_error_body("") is None


def test_non_array_body_is_rejected_at_once():
    p = StreamParser()
    with pytest.raises(StreamFormatError, match="JSON array"):
        p.feed("<!DOCTYPE html><html>")
    with pytest.raises(StreamFormatError, match="JSON array"):
        StreamParser().feed('{"error": 1}')


def test_truncated_body_is_reported_on_close():
    whole = body(RECORDED_LIKE)
    p = StreamParser()
    events = p.feed(whole[:-5])
    assert events and not p.complete
    with pytest.raises(StreamFormatError, match="inside the array"):
        p.close()
    q = StreamParser()
    with pytest.raises(StreamFormatError, match="before the array"):
        q.close()
    r = StreamParser()
    r.feed(whole.encode()[:-1] + "é".encode()[:1])
    with pytest.raises(StreamFormatError):
        r.close()


def test_invalid_chunk_json_is_a_format_error():
    with pytest.raises(StreamFormatError, match="chunk 0"):
        StreamParser().feed("[[1,,]]")


def test_large_text_is_parsed_in_one_piece_and_in_many():
    big = ("lorem [ipsum] \"dolor\" \\ sit ✓ " * 4000)
    whole = body([chunk([text_part(big)], finish=1)])
    assert texts(run([whole])) == big
    pieces = [whole[i:i + 997] for i in range(0, len(whole), 997)]
    assert texts(run(pieces)) == big


def test_model_list_and_xssi():
    raw = ")]}'\n" + json.dumps([[
        ["models/gemini-2.5-pro", None, "001", "Gemini 2.5 Pro", "desc", None, 65536],
        ["models/gemini-2.5-flash", None, "001", "Gemini 2.5 Flash", "desc", None, 65536],
        ["models/gemini-2.5-pro", None, "001", "dup", "desc", None, 65536],
    ]])
    assert parse_model_list(raw) == ["gemini-2.5-pro", "gemini-2.5-flash"]
    assert parse_model_list("not json") == []
    assert strip_xssi(")]}'\n[1]") == "\n[1]"
    assert strip_xssi("[1]") == "[1]"
