"""The strict reading of answers (tools.py, structured.py) and the plan's hold-back modes."""

from __future__ import annotations

import json

import pytest

from bpool.front import structured, tools
from bpool.front.plan import make_plan
from bpool.front.structured import AnswerInvalid, JsonRule
from bpool.front.tools import Tool, ToolRule
from bpool.protocol import ChatMessage, JobSpec

ADD = Tool("add", "adds", {"type": "object", "properties": {"a": {"type": "integer"}},
                           "required": ["a"]}, strict=True)
ECHO = Tool("echo")
AUTO = ToolRule((ADD, ECHO))


def block(name: str, args: object) -> str:
    return "```tool_call\n" + json.dumps({"name": name, "arguments": args}) + "\n```"


def test_calls_are_read_and_ids_are_fresh() -> None:
    calls = tools.parse(f"  {block('add', {'a': 1})}\n\n{block('echo', {})}\n", AUTO)
    assert calls is not None
    assert [(c.name, c.args) for c in calls] == [("add", {"a": 1}), ("echo", {})]
    assert calls[0].id != calls[1].id and calls[0].id.startswith("call_")


def test_text_is_text_unless_a_call_is_required() -> None:
    assert tools.parse("It is 3.", AUTO) is None
    with pytest.raises(AnswerInvalid, match="required"):
        tools.parse("It is 3.", ToolRule((ADD,), "required"))
    assert tools.parse(block("add", {"a": 1}), ToolRule((ADD,), "none")) is None


@pytest.mark.parametrize("answer, why", [
    (block("add", {"a": 1}) + "\nDone.", "complete tool_call blocks only"),
    ("```tool_call\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}", "complete tool_call"),
    ("```tool_call\n{name: add}\n```", "not valid JSON"),
    (block("sub", {}), "'sub', which is not declared"),
    (block("echo", [1]), "must be a JSON object"),
    ("```tool_call\n" + json.dumps({"name": "echo", "arguments": {}, "x": 1}) + "\n```",
     "only 'name' and 'arguments'"),
    (block("add", {"a": "one"}), "do not match the schema"),  # a strict tool's schema
])
def test_malformed_calls_are_refused(answer: str, why: str) -> None:
    with pytest.raises(AnswerInvalid, match=why):
        tools.parse(answer, AUTO)


def test_a_named_choice_allows_only_that_tool() -> None:
    rule = ToolRule((ADD, ECHO), "required", "echo")
    with pytest.raises(AnswerInvalid, match="`echo` had to be called"):
        tools.parse(block("add", {"a": 1}), rule)
    assert "must call the tool `echo`" in tools.instructions(rule)


def test_one_call_only_when_parallel_calls_are_off() -> None:
    two = f"{block('echo', {})}\n{block('echo', {})}"
    assert len(tools.parse(two, AUTO) or []) == 2
    with pytest.raises(AnswerInvalid, match="only one tool call was allowed"):
        tools.parse(two, ToolRule((ADD, ECHO), single=True))
    assert "at most one tool" in tools.instructions(ToolRule((ECHO,), single=True))


@pytest.mark.parametrize("prefix, kind", [
    ("", None), ("  \n", None), ("``", None), ("```tool", None), ("```tool_call", "call"),
    ("```json", "text"), ("Sure", "text"), ("\n```tool_call\n{", "call"),
])
def test_classify_decides_as_early_as_it_can(prefix: str, kind: str | None) -> None:
    assert tools.classify(prefix) == kind


def test_structured_check() -> None:
    rule = JsonRule("json_schema", {"type": "object", "required": ["n"],
                                    "properties": {"n": {"type": "integer"}}})
    assert structured.check('```json\n{"n": 2}\n```', rule) == '{"n": 2}'
    with pytest.raises(AnswerInvalid, match="not valid JSON"):
        structured.check('{"n": 2} and more', rule)
    with pytest.raises(AnswerInvalid, match=r"'n' is a required property"):
        structured.check("{}", rule)
    with pytest.raises(AnswerInvalid, match=r"at \['n'\]"):
        structured.check('{"n": "2"}', rule)
    with pytest.raises(AnswerInvalid, match="must be a JSON object"):
        structured.check("[1]", JsonRule("json_object"))
    assert structured.schema_problem({"type": "nope"}) is not None


def test_plan_modes_and_instructions_in_the_system_part() -> None:
    spec = JobSpec("m", (ChatMessage("user", "hi"),))
    assert make_plan(spec, None, None).mode == "stream"
    assert make_plan(spec, ToolRule((ECHO,), "none"), None).mode == "stream"
    assert make_plan(spec, AUTO, None).mode == "decide"
    assert make_plan(spec, ToolRule((ECHO,), "required"), None).mode == "whole"
    plan = make_plan(spec, AUTO, JsonRule("json_object"))
    assert plan.mode == "whole"
    last = plan.spec.messages[-1]
    assert last.role == "system" and "# Tools" in last.content and "# Answer format" in last.content
    again = plan.retry_spec(plan.spec, "oops", "the answer is not valid JSON")
    assert [m.role for m in again.messages[-2:]] == ["assistant", "user"]
    assert "not valid JSON" in again.messages[-1].content
