"""Page traffic saved by `bpool doctor --capture DIR`, with everything private taken out (sans-IO).

When Google changes the page, a user with a real account can hand back what the page sent and
received, so the parser and the simulator can be checked against it. What is removed before a
single byte is written:

- e-mail addresses (the account's, and any other) → `<email>`;
- every value the caller names as secret (cookie values of the profile) → `<secret>`;
- the page-minted anti-bot token of the request (request body `[4]`) and any other long opaque
  string with no spaces (tokens, signatures, ids) → `<token>`;
- request and response headers are not kept at all (they carry cookies and authorization).

Text of the prompt and answer stays: it is the doctor's own test prompt and the model's reply.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Opaque: long, no whitespace, only token characters. Prose, code and JSON text never match.
OPAQUE = re.compile(r"^[!]?[A-Za-z0-9_\-+/=.:]{40,}$")
TOKEN_INDEX = 4  # GenerateContent request: [model, contents, safety, config, token, ...]


def _clean_str(s: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in s:
            s = s.replace(secret, "<secret>")
    if OPAQUE.match(s):
        return "<token>"
    return EMAIL.sub("<email>", s)


def _walk(node: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(node, str):
        return _clean_str(node, secrets)
    if isinstance(node, list):
        return [_walk(x, secrets) for x in node]
    if isinstance(node, dict):
        return {_clean_str(k, secrets): _walk(v, secrets) for k, v in node.items()}
    return node


def _secrets(values: Iterable[str]) -> tuple[str, ...]:
    # Longest first, so a secret that contains another is replaced whole.
    return tuple(sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True))


def redact_request(body: str, secrets: Iterable[str] = ()) -> str:
    """A GenerateContent/ListModels request body with the token and private values removed."""
    sec = _secrets(secrets)
    try:
        data = json.loads(body)
    except ValueError:
        return redact_text(body, sec)
    if isinstance(data, list) and len(data) > TOKEN_INDEX and isinstance(data[TOKEN_INDEX], str):
        data[TOKEN_INDEX] = "<token>"
    return json.dumps(_walk(data, sec), ensure_ascii=False)


def redact_response(body: str, secrets: Iterable[str] = ()) -> str:
    """A response body (JSON, maybe with the `)]}'` prefix, maybe cut short) with private values
    removed; keeps its shape so it stays a parser fixture."""
    sec = _secrets(secrets)
    prefix = ""
    text = body
    if text.lstrip().startswith(")]}'"):
        head, _, text = text.partition("\n")
        prefix = head + "\n"
    try:
        data = json.loads(text)
    except ValueError:
        return prefix + redact_text(text, sec)
    return prefix + json.dumps(_walk(data, sec), ensure_ascii=False)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Any other text (a body that is not JSON): secrets, e-mails and opaque words removed."""
    sec = _secrets(secrets)
    for secret in sec:
        text = text.replace(secret, "<secret>")
    text = EMAIL.sub("<email>", text)
    return re.sub(r"[!]?[A-Za-z0-9_\-+/=]{40,}", "<token>", text)
