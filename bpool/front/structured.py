"""Structured output by instruction: `response_format` json_object / json_schema.

The page's structured-output setting lives in a dialog the driver does not drive, so the model is
told in the system part to answer with one JSON value, and the answer is checked here: a JSON
object for json_object, an instance of the schema (JSON Schema 2020-12, `jsonschema`) for
json_schema. An answer that fails is `AnswerInvalid`: the caller asks once more, then reports an
error; it never passes an invalid answer on. One ```json fence around the whole answer is
tolerated and removed (models add it out of habit); nothing else is. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


class AnswerInvalid(Exception):
    """The model's answer breaks the format it was asked for; the message says how."""


@dataclass(frozen=True)
class JsonRule:
    kind: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = "response"


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a usable JSON Schema, or None."""
    if not isinstance(schema, dict):
        return "the schema must be a JSON object"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"the schema is not valid JSON Schema: {exc.message}"
    return None


def schema_errors(value: Any, schema: dict[str, Any]) -> str | None:
    """The first way `value` breaks `schema` (with its path), or None when it is an instance."""
    error = next(iter(sorted(Draft202012Validator(schema).iter_errors(value),
                             key=lambda e: list(e.path))), None)
    if error is None:
        return None
    where = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.path)
    return f"{error.message} (at {where or 'the top level'})"


def instructions(rule: JsonRule) -> str:
    lines = ["# Answer format", "",
             "Answer with one JSON value and nothing else: no text before or after it, no code "
             "fence."]
    if rule.kind == "json_object":
        lines.append("The value must be a JSON object.")
    else:
        lines += [f"The value must be a JSON object named `{rule.name}` that is valid against "
                  "this JSON Schema:", "", "```json",
                  json.dumps(rule.schema, ensure_ascii=False), "```"]
    return "\n".join(lines)


def _unfenced(text: str) -> str:
    s = text.strip()
    if s.startswith("```") and s.endswith("```") and s.count("```") == 2:
        first, _, rest = s.partition("\n")
        if first.strip() in ("```", "```json"):
            return rest[:-3].strip()
    return s


def check(text: str, rule: JsonRule) -> str:
    """The answer's JSON text when it is valid for `rule`; raises AnswerInvalid otherwise."""
    s = _unfenced(text)
    try:
        value = json.loads(s)
    except json.JSONDecodeError as exc:
        raise AnswerInvalid(f"the answer is not valid JSON ({exc.msg} at character "
                            f"{exc.pos})") from None
    if not isinstance(value, dict):
        raise AnswerInvalid("the answer must be a JSON object")
    if rule.kind == "json_schema" and rule.schema is not None:
        problem = schema_errors(value, rule.schema)
        if problem:
            raise AnswerInvalid(f"the JSON does not match the schema: {problem}")
    return s


def correction(reason: str, rule: JsonRule) -> str:
    what = "a JSON object" if rule.kind == "json_object" else "JSON valid against the schema"
    return (f"Your previous answer could not be used: {reason}. Answer again with only {what}, "
            "as the system instructions say.")
