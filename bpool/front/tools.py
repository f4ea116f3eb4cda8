"""Function calling by prompt: tool declarations and the choice rule go into the system part,
past calls and their results into the conversation text, and the answer is parsed strictly.

The AI Studio page takes function declarations only through a dialog the driver does not drive,
so the model is told, in words, how to call a tool. A call is the whole answer, one or more
fenced blocks and nothing else (docs/clients.md):

    ```tool_call
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    ```

An answer that does not begin with the fence is text. An answer that begins with it must be
well formed: every block a JSON object with a declared `name` and an object `arguments`, only
whitespace between blocks. Anything else is `AnswerInvalid`; the caller asks once more with
`correction()` and then reports the error. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from bpool.front.structured import AnswerInvalid, schema_errors

FENCE = "```tool_call"
_BLOCK = re.compile(r"```tool_call[ \t]*\r?\n(?P<body>.*?)\r?\n?[ \t]*```", re.S)
NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

Choice = Literal["none", "auto", "required"]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool = False


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object's text, as OpenAI carries it

    @property
    def args(self) -> dict[str, Any]:
        value = json.loads(self.arguments)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ToolRule:
    tools: tuple[Tool, ...]
    choice: Choice = "auto"
    forced: str | None = None  # a named tool the answer must call
    single: bool = False  # at most one call (OpenAI parallel_tool_calls=false)

    @property
    def active(self) -> bool:
        """The answer may be a call."""
        return bool(self.tools) and self.choice != "none"

    @property
    def must_call(self) -> bool:
        return self.active and (self.choice == "required" or self.forced is not None)

    def find(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def instructions(rule: ToolRule) -> str:
    """The system-part text that declares the tools and the rule for this turn."""
    lines = ["# Tools", ""]
    if not rule.active:
        lines += ["Tools were used earlier in this conversation. Do not call any tool now: answer "
                  "in plain text."]
        return "\n".join(lines)
    lines += ["You can call these tools (functions). Each line is one tool as JSON: its name, "
              "what it does, and a JSON Schema of its arguments.", ""]
    for t in rule.tools:
        lines.append(json.dumps({"name": t.name, "description": t.description,
                                 "parameters": t.parameters or {"type": "object"}},
                                ensure_ascii=False, separators=(", ", ": ")))
    lines += ["", "To call a tool, your whole answer must be one or more blocks of exactly this "
              "form, with nothing before, between or after them:", "",
              f"{FENCE}", '{"name": "<tool name>", "arguments": {<the arguments as a JSON '
              'object>}}', "```", "",
              "Results of calls come back in the conversation as 'Tool:' turns."]
    if rule.forced is not None:
        lines.append(f"Now you must call the tool `{rule.forced}`: answer with exactly one "
                     f"tool_call block for `{rule.forced}` and nothing else.")
    elif rule.choice == "required":
        lines.append("Now you must call at least one tool: answer with tool_call blocks only.")
    if rule.single:
        lines.append("Call at most one tool in this answer: a single tool_call block.")
    else:
        lines.append("Call a tool when you need one; otherwise answer in plain text, with no "
                     "tool_call block.")
    return "\n".join(lines)


def render_calls(content: str, calls: Sequence[ToolCall]) -> str:
    """An assistant turn that called tools, written the way the model is asked to write one."""
    blocks = [content.strip()] if content.strip() else []
    for c in calls:
        args = c.args if c.arguments.strip() else {}
        blocks.append(f"{FENCE}\n" + json.dumps({"name": c.name, "arguments": args},
                                                ensure_ascii=False) + "\n```")
    return "\n".join(blocks)


def render_result(call_id: str | None, name: str | None, content: str) -> str:
    """A `tool` turn: which call it answers, then the result."""
    who = " ".join(x for x in (name and f"`{name}`", call_id and f"(call {call_id})") if x)
    return f"Result of the tool call {who}:\n{content}" if who else content


def classify(prefix: str) -> Literal["call", "text"] | None:
    """What an answer that begins with `prefix` is, or None while it cannot be told yet."""
    s = prefix.lstrip()
    if not s:
        return None
    if s.startswith(FENCE):
        return "call"
    return None if FENCE.startswith(s) else "text"


def parse(text: str, rule: ToolRule) -> list[ToolCall] | None:
    """The calls of an answer, or None when it is a text answer. Raises AnswerInvalid."""
    if not rule.active:
        return None
    s = text.strip()
    if classify(s) != "call":
        if rule.must_call:
            raise AnswerInvalid("a tool call was required, but the answer was text")
        return None
    calls: list[ToolCall] = []
    pos = 0
    while pos < len(s):
        m = _BLOCK.match(s, pos)
        if m is None:
            raise AnswerInvalid("the answer began a tool_call block but is not made of complete "
                                "tool_call blocks only (no text may come before, between or "
                                "after them)")
        calls.append(_call(m.group("body"), rule, len(calls)))
        pos = m.end()
        while pos < len(s) and s[pos].isspace():
            pos += 1
    if rule.single and len(calls) > 1:
        raise AnswerInvalid(f"only one tool call was allowed, the answer made {len(calls)}")
    if rule.forced is not None and any(c.name != rule.forced for c in calls):
        raise AnswerInvalid(f"the tool `{rule.forced}` had to be called, and only it")
    return calls


def _call(body: str, rule: ToolRule, i: int) -> ToolCall:
    where = f"tool_call block {i + 1}"
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise AnswerInvalid(f"{where} is not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or set(obj) - {"name", "arguments"}:
        raise AnswerInvalid(f"{where} must be a JSON object with only 'name' and 'arguments'")
    name, args = obj.get("name"), obj.get("arguments", {})
    if not isinstance(name, str) or rule.find(name) is None:
        known = ", ".join(t.name for t in rule.tools)
        raise AnswerInvalid(f"{where} names the tool {name!r}, which is not declared "
                            f"(declared: {known})")
    if not isinstance(args, dict):
        raise AnswerInvalid(f"{where}: 'arguments' must be a JSON object")
    tool = rule.find(name)
    if tool is not None and tool.strict and tool.parameters:
        problem = schema_errors(args, tool.parameters)
        if problem:
            raise AnswerInvalid(f"{where}: the arguments do not match the schema of "
                                f"`{name}`: {problem}")
    return ToolCall(new_call_id(), name, json.dumps(args, ensure_ascii=False))


def correction(reason: str, rule: ToolRule) -> str:
    """The user turn that asks for a corrected answer."""
    what = (f"a single tool_call block for `{rule.forced}`" if rule.forced else
            "tool_call blocks only" if rule.must_call else
            "either plain text or tool_call blocks only")
    return (f"Your previous answer could not be used: {reason}. Answer again with {what}, "
            "exactly in the format given in the system instructions.")
