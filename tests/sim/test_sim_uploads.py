"""The simulator's RPC host reading inline file parts of a GenerateContent body (no browser)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from bpool.sim.request import parse_generate


def body(*parts: list, history: bool = False) -> list:
    contents = [[[[None, "earlier"]], "user"], [[[None, "answer"]], "model"]] if history else []
    return ["models/gemini-2.5-flash", [*contents, [list(parts), "user"]], None, [], "!token"]


def inline(mime: str, data: bytes) -> list:
    return [None, None, [mime, base64.b64encode(data).decode()]]


def test_inline_files_of_the_last_turn_are_named_in_the_prompt() -> None:
    png, pdf = b"\x89PNG\r\n\x1a\nxyz", b"%PDF-1.4 abc"
    req = parse_generate(body(inline("image/png", png), inline("application/pdf", pdf),
                              [None, "look"], history=True))
    digest = lambda d: hashlib.sha256(d).hexdigest()[:16]  # noqa: E731
    assert req.contents[-1] == ("user", "look")
    assert req.attachments == [
        {"mime": "image/png", "size": len(png), "sha256": digest(png)},
        {"mime": "application/pdf", "size": len(pdf), "sha256": digest(pdf)}]
    assert req.prompt == (f"look [attached: image/png {len(png)} bytes sha256:{digest(png)}; "
                          f"application/pdf {len(pdf)} bytes sha256:{digest(pdf)}]")
    assert req.params()["attachments"] == req.attachments


def test_a_text_only_turn_is_unchanged() -> None:
    req = parse_generate(body([None, "plain"]))
    assert req.prompt == "plain" and req.attachments == []


@pytest.mark.parametrize("part", [
    [None, None, ["image/png", "@@@"]],
    [None, None, ["image/png"]],
    [None, None, [7, "AAAA"]],
])
def test_malformed_inline_parts_are_invalid_arguments(part: list) -> None:
    with pytest.raises(ValueError):
        parse_generate(body(part, [None, "x"]))
