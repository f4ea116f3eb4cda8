"""The GenerateContent body parser: both nestings, chunk boundaries, split pieces, part kinds,
usage, finish codes, error frames. The real captured body is in test_stream_parser_real.py."""

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
    parse_models,
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


def body(chunks: list, prefix: str = "", nested: bool = False) -> str:
    """The live page's `[[chunk, ...]]` when `nested`, else the older `[chunk, ...]`; compact
    JSON with non-ASCII kept as is, like the page's own serialisation."""
    inner = ",".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in chunks)
    return prefix + ("[[" + inner + "]]" if nested else "[" + inner + "]")


FORMS = pytest.mark.parametrize("nested", [True, False], ids=["live", "older"])


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


@FORMS
def test_recorded_like_sequence_gives_events_in_order(nested):
    events = run([body(RECORDED_LIKE, prefix=")]}'\n", nested=nested)])
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


@FORMS
def test_each_chunk_is_emitted_as_soon_as_it_is_complete(nested):
    whole = body(RECORDED_LIKE, nested=nested)
    p = StreamParser()
    opening = "[[" if nested else "["
    first_end = len(opening + json.dumps(RECORDED_LIKE[0], separators=(",", ":")))
    assert p.feed(whole[: first_end - 1]) == []  # last bracket of the first chunk missing
    assert p.feed(whole[first_end - 1: first_end]) == [ThoughtDelta("**Planning** the answer")]
    assert not p.complete and p.nested is nested
    second_end = first_end + 1 + len(json.dumps(RECORDED_LIKE[1], separators=(",", ":")))
    assert p.feed(whole[first_end:second_end]) == [ThoughtDelta(" then [checking] \"quotes\"")]
    rest = p.feed(whole[second_end:])
    assert len(rest) == 5 and p.complete
    assert p.chunks == 5


@FORMS
@pytest.mark.parametrize("as_bytes", [False, True])
def test_every_split_position_gives_the_same_events(as_bytes, nested):
    small = [
        chunk([text_part('a"\\]],"model"]é😀')]),
        chunk([thought_part("t[")]),
        chunk([text_part("\u00e9\\u")], finish=1, usage=[1, 2, 3]),
    ]
    whole = body(small, prefix=")]}'\n", nested=nested)
    data = whole.encode() if as_bytes else whole
    expected = run([data])
    assert texts(expected) == 'a"\\]],"model"]é😀' + "\u00e9\\u"
    assert expected[1] == ThoughtDelta("t[") and expected[-1] == UsageInfo(1, 2, 3)
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
    live = ')]}\'\n [ \n [ \n [ [ [ [ [ [ null , "x" ] ] , "model" ] ] ] ] \n , \n' \
           '[[[[[[null,"y"]],"model"],1]]] \n ] \n ]'
    for i in range(len(live) + 1):
        assert run([live[:i], live[i:]]) == [TextDelta("x"), TextDelta("y"), Finish(1)], i


@FORMS
def test_usage_arrives_only_at_the_end(nested):
    chunks = [chunk([text_part(str(i))]) for i in range(5)]
    chunks.append(chunk([text_part("!")], finish=2, usage=[7, 6, 13, None, [[1, 7]]]))
    events = run([body(chunks, nested=nested)])
    assert [type(e) for e in events[:-2]] == [TextDelta] * 6
    assert events[-2] == Finish(2) and events[-2].reason == "length"
    assert events[-1] == UsageInfo(7, 6, 13) and events[-1].reasoning_tokens == 0


@FORMS
def test_function_call_part(nested):
    args = [[["city", [None, None, "Paris"]]]]
    events = run([body([chunk([call_part("get_weather", args)], finish=1)], nested=nested)])
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


@FORMS
def test_truncated_body_is_reported_on_close(nested):
    whole = body(RECORDED_LIKE, nested=nested)
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
        StreamParser().feed("[[1,:]]")
    with pytest.raises(StreamFormatError, match="chunk 1"):
        StreamParser().feed(body([chunk([text_part("ok")])], nested=True)[:-2] + ",[tru]]]")


@FORMS
def test_large_text_is_parsed_in_one_piece_and_in_many(nested):
    big = ("lorem [ipsum] \"dolor\" \\ sit ✓ " * 4000)
    whole = body([chunk([text_part(big)], finish=1)], nested=nested)
    assert texts(run([whole])) == big
    pieces = [whole[i:i + 997] for i in range(0, len(whole), 997)]
    assert texts(run(pieces)) == big


def test_model_list_and_xssi():
    raw = ")]}'\n" + json.dumps([[
        ["models/gemini-2.5-pro", None, "001", "Gemini 2.5 Pro", "desc", None, 65536],
        ["models/gemini-2.5-flash", None, "001", "Gemini 2.5 Flash", "desc", None, 65536],
        ["models/gemini-2.5-pro", None, "001", "dup", "desc", None, 65536],
    ]])
    assert parse_models(raw) == [("gemini-2.5-pro", "Gemini 2.5 Pro"),
                                 ("gemini-2.5-flash", "Gemini 2.5 Flash")]
    assert parse_models("not json") == []
    assert strip_xssi(")]}'\n[1]") == "\n[1]"
    assert strip_xssi("[1]") == "[1]"


# ---------------------------------------------------------------------------- nesting, frames


def metadata_chunk() -> list:
    return [None, None, None, ["v1_ChdhTWY1YVlqUERfN1h6N0lQNmV1Y2tROBIX", 1, 2]]


def test_the_nesting_is_read_from_the_body():
    parts = [chunk([text_part("hi")], finish=1)]
    live, older = StreamParser(), StreamParser()
    assert live.feed(body(parts, nested=True)) == older.feed(body(parts)) == [TextDelta("hi"), Finish(1)]
    assert live.nested is True and older.nested is False
    # A first chunk that is metadata or an error frame decides for the live form too.
    p = StreamParser()
    assert p.feed(body([metadata_chunk(), *parts], nested=True)) == [TextDelta("hi"), Finish(1)]
    assert p.nested is True and p.chunks == 2 and p.complete


@pytest.mark.parametrize("first,expected", [
    (chunk([], finish=3), [Finish(3)]),  # refused: no parts at all
    ([[[None, 3]]], [Finish(3)]),  # refused: a candidate without content
    ([[]], []),  # no candidates
    ([None, None, [3, None, 3]], [UsageInfo(3, 0, 3)]),  # usage only
], ids=["no-parts", "no-content", "no-candidates", "usage-only"])
@FORMS
def test_unusual_first_chunks_do_not_confuse_the_nesting(first, expected, nested):
    p = StreamParser()
    events = p.feed(body([first, chunk([text_part("b")], finish=1)], nested=nested))
    assert events == expected + [TextDelta("b"), Finish(1)]
    assert p.complete and p.chunks == 2


@FORMS
def test_trailing_metadata_chunk_carries_nothing_and_breaks_nothing(nested):
    raw = body([chunk([text_part("ok")], finish=1), metadata_chunk()], nested=nested)
    p = StreamParser()
    assert p.feed(raw) == [TextDelta("ok"), Finish(1)]
    assert p.complete and p.chunks == 2
    assert p.close() == []


@pytest.mark.parametrize("code,reason", [
    (1, "stop"), (2, "length"), (3, "content_filter"), (4, "content_filter"),
    (5, "content_filter"), (7, "content_filter"), (8, "content_filter"),
])
@FORMS
def test_finish_codes(code, reason, nested):
    events = run([body([chunk([text_part("x")]), chunk([], finish=code)], nested=nested)])
    assert events == [TextDelta("x"), Finish(code)]
    assert events[-1].reason == reason


def test_thought_tokens_come_from_usage_9():
    from bpool.studio.stream_parser import chunk_events as chunk_events_of

    u = chunk_events_of([None, None, [5, 8, 166, None, [[1, 5]], None, None, None, None, 153]])
    assert u == [UsageInfo(5, 8, 166, 153)] and u[0].reasoning_tokens == 153
    # Without usage[9] the thinking is what the total holds beyond prompt and candidates.
    assert chunk_events_of([None, None, [5, 8, 166]])[0].reasoning_tokens == 153
    assert chunk_events_of([None, None, [5, None, 19, None, None, None, None, None, None, 14]]) \
        == [UsageInfo(5, 0, 19, 14)]


@pytest.mark.parametrize("code", [3, 7, 8, 16])
def test_error_frame_in_every_placement(code):
    msg = {3: "Thinking level MINIMAL is not supported", 7: "The caller does not have permission",
           8: "You exceeded your current quota, please check your plan and billing details.",
           16: "Request had invalid authentication credentials."}[code]
    frame = [None, [code, msg]]
    err = ErrorStatus(code, msg)
    text = chunk([text_part("partial")])
    placements = {
        "after text, live": body([text, frame], nested=True),
        "alone, live": body([frame], nested=True),
        "after text, older": body([text, frame]),
        "whole body": json.dumps(frame, ensure_ascii=False),
        "whole body, null elided": '[,[%d,%s]]' % (code, json.dumps(msg)),
        "elided, inside the list": body([text], nested=True)[:-2] + ',[,[%d,%s]]]]' % (code, json.dumps(msg)),
        "with prefix and details": ")]}'\n" + json.dumps([None, [code, msg, [["detail"]]]]),
        "after text, next to the list": body([text], nested=True)[:-1] + ',[,[%d,%s]]]' % (code, json.dumps(msg)),
    }
    for name, raw in placements.items():
        events = run([raw])
        assert events[-1] == err, name
        assert [e for e in events if isinstance(e, TextDelta)] == (
            [TextDelta("partial")] if "after text" in name or "inside" in name else []), name
        for i in range(len(raw) + 1):
            assert run([raw[:i], raw[i:]]) == events, f"{name}: split at {i}"
        assert parse_error_body(raw) == err, name
    assert err.name == {3: "INVALID_ARGUMENT", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
                        16: "UNAUTHENTICATED"}[code]
