"""Edges of the GenerateContent body parser that the main parser tests pass by: the exact
format-error messages, an empty first string, elided nulls next to `[]` and a trailing comma,
how much of the body the parser keeps, and the small rules of a chunk's meaning (finish code 0,
usage without a total, what is not an error frame). Chunks are taken from the real captured body
(tests/studio/fixtures/aistudio/) wherever one fits; the expected events are read off it by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_stream_parser import run as run_pieces

from bpool.studio.stream_parser import (ErrorStatus, Finish, StreamFormatError, StreamParser,
                                        TextDelta, ThoughtDelta, UsageInfo, chunk_events,
                                        parse_error_body, parse_models, strip_xssi)

BODY = (Path(__file__).parent / "fixtures" / "aistudio" / "generate_thinking_nihao.json").read_bytes()
REAL = json.loads(BODY)[0]  # the ten chunks of the live `[[chunk, ...]]` form


def compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def live(chunks: list[str]) -> str:
    return "[[" + ",".join(chunks) + "]]"


def run(*pieces: str | bytes) -> list:
    return run_pieces(pieces)


# ---------------------------------------------------------------------------- format errors


def test_close_messages_say_where_the_body_ended():
    with pytest.raises(StreamFormatError) as exc:
        StreamParser().close()
    assert str(exc.value) == "body ended before the array started (after 0 chunks)"
    p = StreamParser()
    whole = live([compact(c) for c in REAL[:3]])
    p.feed(whole[:-2])
    assert p.chunks == 3
    with pytest.raises(StreamFormatError) as exc:
        p.close()
    assert str(exc.value) == "body ended inside the array (after 3 chunks)"


def test_a_body_cut_inside_a_utf8_character_says_so_on_close():
    # The real body cut one byte into "你" (three bytes in UTF-8).
    cut = BODY.index("你".encode()) + 1
    p = StreamParser()
    p.feed(BODY[:cut])
    with pytest.raises(StreamFormatError) as exc:
        p.close()
    assert str(exc.value) == "body ends inside a UTF-8 character"


def test_bytes_that_are_not_utf8_are_a_format_error_at_once():
    with pytest.raises(StreamFormatError, match=r"^body is not UTF-8: .*0xff"):
        StreamParser().feed(b"[[\xff")


def test_the_non_array_message_quotes_at_most_40_characters():
    page = "<!DOCTYPE html><html><head><title>Error 429 (Too Many Requests)</title>"
    with pytest.raises(StreamFormatError) as exc:
        StreamParser().feed(page)
    assert str(exc.value) == f"body does not start with a JSON array: {page[:40]!r}"


@pytest.mark.parametrize("chunk", [0, 3])
def test_a_corrupt_chunk_is_named_with_the_json_error(chunk):
    # One `null` of the real body's chunk written as `nul`: the first chunk is decoded while the
    # nesting is still undecided, a later one after.
    chunks = [compact(c) for c in REAL]
    chunks[chunk] = chunks[chunk].replace("null", "nul", 1)
    with pytest.raises(StreamFormatError,
                       match=rf"^chunk {chunk} is not valid JSON: Expecting value: line 1"):
        StreamParser().feed(live(chunks))


# ---------------------------------------------------------------------------- scanning


def test_the_nesting_is_undecided_until_the_first_chunk_completes():
    p = StreamParser()
    assert p.nested is None
    first = compact(REAL[0])
    p.feed(")]}'\n[[" + first[:-1])
    assert p.nested is None and p.chunks == 0
    assert p.feed(first[-1:]) == [ThoughtDelta('The user said "你好" (Nǐ hǎo), which is'),
                                  UsageInfo(5, 0, 19, 14)]
    assert p.nested is True


def test_a_body_whose_first_string_is_empty():
    # The real last chunk (an empty text part, STOP and the final usage) sent first, then the
    # real answer chunk 8: the body's first string is the empty text.
    raw = live([compact(REAL[9]), compact(REAL[8])])
    assert raw.index('""') < raw.index('"model"')  # the body's first string is the empty one
    assert run(raw) == [Finish(1), UsageInfo(5, 8, 166, 153),
                        TextDelta("帮你的吗？"), UsageInfo(5, 8, 166, 153)]


@pytest.mark.parametrize("space", [" ", "\n", "\t", " \n "])
def test_one_or_more_blanks_between_the_brackets(space):
    text = compact(REAL[8])
    expected = [TextDelta("帮你的吗？"), UsageInfo(5, 8, 166, 153)]
    for raw in ("[" + space + "[" + space + text + space + "]" + space + "]",  # live
                "[" + space + text + space + "]"):  # older
        assert run(raw) == expected, repr(raw)
        for i in range(len(raw) + 1):
            assert run(raw[:i], raw[i:]) == expected, (repr(raw), i)


def test_the_parser_keeps_no_text_of_a_chunk_it_has_emitted():
    # A long answer must not be held twice: once a chunk is out, its text is dropped, whether
    # it was the first chunk (decided while undecided) or a later one.
    chunks = [compact(c) for c in REAL]
    pieces = ["[[" + chunks[0]] + ["," + c for c in chunks[1:]] + ["]]"]
    p = StreamParser()
    shortest = min(len(c) for c in chunks)
    for i, piece in enumerate(pieces[:-1]):
        assert p.feed(piece), i
        assert p.chunks == i + 1
        assert len(p._buf) < shortest, f"after chunk {i} the parser holds {len(p._buf)} chars"
    p.feed(pieces[-1])
    assert p.complete and p.close() == []


# ---------------------------------------------------------------------------- elided nulls


@pytest.mark.parametrize("frame", [
    '[,[8,"You exceeded your current quota",[]]]',  # an empty details list stays a list
    '[,[8,"You exceeded your current quota"],]',  # a trailing comma adds no element (JS)
    '[ , [8,"You exceeded your current quota" , [ ] ] , ]',
])
def test_an_elided_frame_with_empty_lists_and_trailing_commas(frame):
    raw = live([compact(REAL[7]), frame])
    events = run(raw)
    assert events == [TextDelta("你好！有什么我可以"), UsageInfo(5, 4, 162, 153),
                      ErrorStatus(8, "You exceeded your current quota")]
    assert parse_error_body(raw) == events[-1]


# ---------------------------------------------------------------------------- chunk meaning


def test_finish_code_0_is_no_finish():
    # 0 is FINISH_REASON_UNSPECIFIED: the candidate has not finished.
    chunk = json.loads(compact(REAL[9]))
    chunk[0][0][1] = 0
    assert [e for e in chunk_events(chunk) if isinstance(e, Finish)] == []
    chunk[0][0][1] = 1
    assert [e for e in chunk_events(chunk) if isinstance(e, Finish)] == [Finish(1)]


def test_usage_without_a_total_adds_prompt_and_candidates():
    assert chunk_events([None, None, [5, 8, None]]) == [UsageInfo(5, 8, 13)]
    assert chunk_events([None, None, [5, 8]]) == []  # no total position: not a usage


@pytest.mark.parametrize("usage", [["5", 8, 166], [5, 8.0, 166], [5, 8, [166]]])
def test_usage_with_a_count_that_is_not_an_integer_is_no_usage(usage):
    assert chunk_events([None, None, usage]) == []


def test_a_thought_count_that_is_not_an_integer_is_left_out():
    usage = [5, 8, 166, None, [[1, 5]], None, None, None, None, "153"]
    assert chunk_events([None, None, usage]) == [UsageInfo(5, 8, 166, None)]


def test_only_null_then_code_and_message_is_an_error_frame():
    # A chunk holding candidates is read as text even if its [1] looks like [code, message].
    answer = json.loads(compact(REAL[8]))
    answer[1] = [8, "looks like a frame"]
    assert chunk_events(answer) == [TextDelta("帮你的吗？"), UsageInfo(5, 8, 166, 153)]
    # A frame needs an integer code AND a string message.
    for shape in ([7], [7, None], [None, "message"], [None, [7]], [None, [None, "message"]]):
        assert chunk_events(shape) == [], shape


def test_a_part_whose_index_10_is_not_name_and_args_is_its_text():
    part = [None, "text"] + [None] * 8 + [[None, "args"]]
    assert chunk_events([[[[[part], "model"]]]]) == [TextDelta("text")]
    part[10] = []
    assert chunk_events([[[[[part], "model"]]]]) == [TextDelta("text")]


# ---------------------------------------------------------------------------- ListModels


def test_models_deeper_than_three_arrays_are_not_looked_for():
    entry = ["models/gemini-2.5-pro", None, "001", "Gemini 2.5 Pro"]
    assert parse_models(json.dumps([[[entry]]])) == [("gemini-2.5-pro", "Gemini 2.5 Pro")]
    assert parse_models(json.dumps([[[[entry]]]])) == []


def test_only_blanks_and_the_xssi_prefix_are_stripped():
    body = json.dumps([[["models/x", None, "001", "X"]]])
    assert strip_xssi("X" + body) == "X" + body
    assert parse_models("X" + body) == []
    assert parse_models(" )]}'\n" + body) == [("x", "X")]
