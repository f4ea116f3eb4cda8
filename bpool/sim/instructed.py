"""The simulator's model when a prompt carries bpool's tool or JSON instructions: a model that
follows instructions (docs/clients.md), nothing more.

It is not evidence about Gemini: it only lets the end-to-end tests walk a tool loop and a
structured answer through the real page and driver. With declared tools it calls the forced
tool, else the first one, with arguments made from its schema, unless the last turn is a tool
result (then it reports that result); with an answer format it answers a JSON instance of the
schema. Any other prompt gets the usual echo (None here).
"""

from __future__ import annotations

import json
import re
from typing import Any

SEPARATOR = "\n\n---\n\n"
_FORCED = re.compile(r"Now you must call the tool `([^`]+)`")
_SCHEMA = re.compile(r"# Answer format.*?```json\n(.*?)\n```", re.S)


def _tools(prompt: str) -> list[dict[str, Any]]:
    if "# Tools" not in prompt or "Do not call any tool now" in prompt:
        return []
    found = []
    for line in prompt.split("# Tools", 1)[1].splitlines():
        if line.startswith('{"name"'):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def sample(schema: Any, depth: int = 0) -> Any:
    """A small instance of a JSON Schema (the common keywords only)."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample(schema[key][0], depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample(sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [sample(schema.get("items", {}), depth + 1)
                for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x" * max(4, schema.get("minLength", 4))


def instructed_answer(prompt: str) -> str | None:
    last = prompt.rsplit(SEPARATOR, 1)[-1]
    declared = _tools(prompt)
    if declared and not last.startswith("Tool:"):
        forced = _FORCED.search(prompt)
        tool = next((t for t in declared if forced and t["name"] == forced.group(1)), declared[0])
        call = {"name": tool["name"], "arguments": sample(tool.get("parameters") or {}) or {}}
        return "```tool_call\n" + json.dumps(call) + "\n```"
    schema = _SCHEMA.search(prompt)
    if schema is not None:
        return json.dumps(sample(json.loads(schema.group(1))))
    if "# Answer format" in prompt:
        return json.dumps({"answer": last[-80:]})
    if last.startswith("Tool:"):
        result = last.split("\n", 2)[-1].strip()
        return f"The tool answered: {result}"
    return None
