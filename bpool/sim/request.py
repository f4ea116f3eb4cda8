"""The page's GenerateContent request body: positional JSON, read and validated (no I/O).

Layout from a real request (bamboo-pan/nexus-studio tests/test_input.json) and that project's
codec (src/aistudio_api/infrastructure/gateway/wire_types.py, wire_codec.py):

    [ "models/<id>",                                   0  model
      [ [[[null, "text"]], "user"], [[...], "model"], ... ],   1  contents, oldest first
                                                       a file part is inline: [null, null, [mime, base64]]
                                                       (wire_types AistudioPart; files before the text)
      [[null, null, 7, 4], ...],                       2  safety settings
      generation_config,                               3  see below
      "!<page token>",                                 4  the page-minted anti-bot token
      system_instruction | null,                       5  [[[null, "text"]], "user"]
      tools | null,                                    6  Google Search = [null,null,null,[null,[[]]]]
      null, null, null, 1,                             7-10
      null, null, [[null, null, "<time zone>"], null, 1] ]  11-13, sent with tools

    generation_config = [null, stop_sequences, null, max_output_tokens, temperature, top_p, top_k,
                         ..., 16: thinking_config, 17: 1]
    thinking_config   = [include_thoughts, budget, null, level]
        level models: [1, null, null, level]          (nexus: [1, null, null, 3] = HIGH)
        budget models: [1, -1] auto, [1, n] manual, [0, 0] off        (assumption)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from bpool.sim.models import LEVEL_NAMES

GOOGLE_SEARCH_TOOL = [None, None, None, [None, [[]]]]


@dataclass
class Thinking:
    include_thoughts: bool = False
    budget: int | None = None
    level: str | None = None  # "minimal" | "low" | "medium" | "high"


@dataclass
class GenerateRequest:
    model: str
    contents: list[tuple[str, str]]  # (role, text)
    token: object
    stops: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    thinking: Thinking | None = None  # None: no thinking config sent
    search: bool = False
    system: str | None = None
    attachments: list[dict] = field(default_factory=list)  # inline files of the last user turn

    @property
    def prompt(self) -> str:
        """The last user text, and what was attached to it (so an answer names it)."""
        if not self.attachments:
            return self.contents[-1][1]
        return f"{self.contents[-1][1]} [attached: {describe(self.attachments)}]"

    def params(self) -> dict:
        """What /__sim/stats shows per request (names kept from the sim's earlier JSON request)."""
        th = self.thinking
        return {
            "temperature": self.temperature, "topP": self.top_p, "topK": self.top_k,
            "maxOutputTokens": self.max_tokens, "stopSequences": list(self.stops),
            "thinking": bool(th and th.include_thoughts),
            "thinkingBudget": th.budget if th else None,
            "thinkingLevel": th.level if th else None,
            "googleSearch": self.search, "system": self.system,
            "attachments": self.attachments,
        }


def _opt(value: object, kinds: tuple[type, ...], what: str) -> object:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{what} has the wrong type")
    return value


def _at(seq: list, i: int) -> object:
    return seq[i] if len(seq) > i else None


def describe(attachments: list[dict]) -> str:
    return "; ".join(f"{a['mime']} {a['size']} bytes sha256:{a['sha256']}" for a in attachments)


def _inline(part: list, what: str) -> dict:
    """An inline file part [null, null, [mime, base64]] (nexus wire_types AistudioPart)."""
    blob = part[2]
    if len(blob) < 2 or not isinstance(blob[0], str) or not isinstance(blob[1], str):
        raise ValueError(f"{what} has a malformed inline part")
    try:
        data = base64.b64decode(blob[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} has inline data that is not base64") from None
    return {"mime": blob[0], "size": len(data), "sha256": hashlib.sha256(data).hexdigest()[:16]}


def _parts_of(content: object, what: str) -> tuple[str, str, list[dict]]:
    """[[part, ...], role] -> (role, text of its text parts, its inline files)."""
    if not isinstance(content, list) or len(content) < 2 or not isinstance(content[0], list):
        raise ValueError(f"{what} must be [parts, role]")
    role = content[1]
    if role not in ("user", "model"):
        raise ValueError(f"{what} has an unknown role")
    texts, files = [], []
    for part in content[0]:
        if not isinstance(part, list) or len(part) < 2:
            raise ValueError(f"{what} has a malformed part")
        if isinstance(part[1], str):
            texts.append(part[1])
        elif part[1] is not None:
            raise ValueError(f"{what} has a non-text part [1]")
        elif len(part) > 2 and isinstance(part[2], list):
            files.append(_inline(part, what))
    return role, "".join(texts), files


def _text_of(content: object, what: str) -> tuple[str, str]:
    """[[part, ...], role] -> (role, text of its text parts)."""
    role, text, _ = _parts_of(content, what)
    return role, text


def _thinking(raw: object) -> Thinking | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ValueError("thinking config must be a list")
    include = _opt(_at(raw, 0), (int,), "include_thoughts")
    budget = _opt(_at(raw, 1), (int,), "thinking budget")
    level = _opt(_at(raw, 3), (int,), "thinking level")
    if level is not None and level not in LEVEL_NAMES:
        raise ValueError("unknown thinking level")
    return Thinking(include_thoughts=include == 1, budget=budget,
                    level=LEVEL_NAMES[level] if level is not None else None)


def parse_generate(body: object) -> GenerateRequest:
    """The request, or ValueError naming what is wrong (the RPC answers INVALID_ARGUMENT)."""
    if not isinstance(body, list) or len(body) < 5:
        raise ValueError("body must be a positional array of at least 5 elements")
    model = body[0]
    if not isinstance(model, str) or not model.startswith("models/"):
        raise ValueError('[0] must be "models/<id>"')
    raw_contents = body[1]
    if not isinstance(raw_contents, list) or not raw_contents:
        raise ValueError("[1] contents must be a non-empty list")
    parsed = [_parts_of(c, f"contents[{i}]") for i, c in enumerate(raw_contents)]
    contents = [(role, text) for role, text, _ in parsed]
    if contents[-1][0] != "user":
        raise ValueError("the last content must be the user's")
    if body[2] is not None and not isinstance(body[2], list):
        raise ValueError("[2] safety settings must be a list")
    config = body[3] if body[3] is not None else []
    if not isinstance(config, list):
        raise ValueError("[3] generation config must be a list")
    stops = _at(config, 1) or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ValueError("stop sequences must be strings")
    system = None
    if _at(body, 5) is not None:
        system = _text_of(body[5], "[5] system instruction")[1]
    tools = _at(body, 6)
    if tools is not None and not isinstance(tools, list):
        raise ValueError("[6] tools must be a list")
    return GenerateRequest(
        model=model, contents=contents, token=body[4], stops=stops,
        max_tokens=_opt(_at(config, 3), (int,), "max output tokens"),
        temperature=_opt(_at(config, 4), (int, float), "temperature"),
        top_p=_opt(_at(config, 5), (int, float), "top_p"),
        top_k=_opt(_at(config, 6), (int,), "top_k"),
        thinking=_thinking(_at(config, 16)),
        search=bool(tools) and GOOGLE_SEARCH_TOOL in tools,
        system=system,
        attachments=parsed[-1][2],
    )


def parse_count_tokens(body: object) -> tuple[str, str]:
    """CountTokens: ["models/<id>", [[[[null, "text"]], "user"], ...]] -> (model, all text)."""
    if (not isinstance(body, list) or len(body) < 2 or not isinstance(body[0], str)
            or not isinstance(body[1], list)):
        raise ValueError('expected ["models/<id>", contents]')
    return body[0], "".join(_text_of(c, "contents")[1] for c in body[1])
