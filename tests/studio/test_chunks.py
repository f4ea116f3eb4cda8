"""The small readers of chunks.py that the stream parser's tests pass by: the ListModels body
(its XSSI prefix, the entries one or two arrays deep) and protobuf Struct/Value in the page's
positional form (function-call arguments). Pure and fast: part of `scripts/mutation parser`."""

from __future__ import annotations

import json

import pytest

from bpool.studio.chunks import parse_models, strip_xssi, struct_value

XSSI = ")]}'\n"


@pytest.mark.parametrize("raw, out", [
    (XSSI + "[1]", "\n[1]"), ("\ufeff  \n" + XSSI + "[1]", "\n[1]"), ("[1]", "[1]"),
    (" \t\r\n[2]", "[2]"), (")]}'[3]", "[3]"), ("", ""), ("[)]}']", "[)]}']"),
])
def test_strip_xssi(raw: str, out: str) -> None:
    # The prefix and any byte-order mark or blank before it go; what follows is JSON's own
    # business (it skips the newline).
    assert strip_xssi(raw) == out


def entry(model: str, display: object = None) -> list:
    return [f"models/{model}", None, "v1", display]


@pytest.mark.parametrize("wrap", [
    lambda es: [es],  # one array deep
    lambda es: [[es], None],  # two deep, with a sibling
])
def test_models_one_or_two_arrays_deep_in_order_first_name_wins(wrap) -> None:
    entries = [entry("gemini-2.5-pro", "Gemini 2.5 Pro"), entry("gemini-2.5-flash"),
               entry("gemini-2.5-pro", "Another name"), entry("odd", 42)]
    body = XSSI + json.dumps(wrap(entries))
    assert parse_models(body) == [("gemini-2.5-pro", "Gemini 2.5 Pro"),
                                  ("gemini-2.5-flash", ""), ("odd", "")]


@pytest.mark.parametrize("body", [
    "not json", XSSI + "{", json.dumps({"models": ["models/x"]}), json.dumps("models/x"),
    json.dumps([["model/x"]]), json.dumps([[[[[entry("too-deep")]]]]]),
])
def test_other_shapes_give_no_models(body: str) -> None:
    assert parse_models(body) == []


def test_entries_at_the_deepest_allowed_level_are_found() -> None:
    assert parse_models(json.dumps([[[entry("deep")]]])) == [("deep", "")]


def value(i: int, x: object) -> list:
    """A protobuf Value with field `i` set (trailing nulls left out, as the page does)."""
    v: list = [None] * (i + 1)
    v[i] = x
    return v


@pytest.mark.parametrize("node, out", [
    (value(0, 0), None), (value(1, 2.5), 2.5), (value(1, 0), 0), (value(2, "s"), "s"),
    (value(2, ""), ""), (value(3, 1), True), (value(3, 0), False), (value(3, False), False),
    ([None, None, None, None, None, None], None), ([], None), ("plain", "plain"), (7, 7),
])
def test_scalar_values(node: object, out: object) -> None:
    assert struct_value(node) == out


def test_structs_lists_and_nesting() -> None:
    struct = [[["city", value(2, "Paris")], ["days", value(1, 3)],
               ["tags", value(5, [[value(2, "a"), value(3, 1), value(0, 0)]])],
               ["inner", value(4, [[["k", value(2, "v")]]])], ["empty", value(5, [])]]]
    assert struct_value(struct) == {"city": "Paris", "days": 3, "tags": ["a", True, None],
                                    "inner": {"k": "v"}, "empty": []}
    assert struct_value({"already": "json"}) == {"already": "json"}
    assert struct_value([[]]) == {}  # an empty Struct
    # Only the first six positions are a Value's fields.
    assert struct_value([None] * 6 + ["x"]) is None
    # A list whose first item is not [key, value] pairs is a Value, not a Struct.
    assert struct_value(value(2, "s")) == "s"
    assert struct_value([[["k", value(2, "v")], [1, value(2, "w")]]]) is None
