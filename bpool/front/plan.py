"""The internal request every client format is translated to: a JobSpec for the pool plus the
rules its answer must follow (tools, a JSON format), and how an answer is judged.

The rules are folded into the prompt as one more system message, so workers and the page see an
ordinary conversation. `mode` says how much of an answer the front must hold back before it can
pass it on: nothing (plain chat), until it can tell a call from text (tools the model may call),
or all of it (a required call, a JSON format: the answer is checked before it is sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import msgspec

from bpool.front import structured, tools
from bpool.front.errors import ApiError
from bpool.front.structured import AnswerInvalid, JsonRule
from bpool.front.tools import ToolCall, ToolRule
from bpool.protocol import ChatMessage, JobSpec

Mode = Literal["stream", "decide", "whole"]


@dataclass(frozen=True)
class Plan:
    spec: JobSpec
    tools: ToolRule | None = None
    json: JsonRule | None = None

    @property
    def mode(self) -> Mode:
        if self.json is not None or (self.tools is not None and self.tools.must_call):
            return "whole"
        if self.tools is not None and self.tools.active:
            return "decide"
        return "stream"

    def judge(self, text: str) -> tuple[str, list[ToolCall]]:
        """(text, calls) of a finished answer; raises AnswerInvalid."""
        calls = tools.parse(text, self.tools) if self.tools is not None else None
        if calls:
            return "", calls
        if self.json is not None:
            return structured.check(text, self.json), []
        return text, []

    def retry_spec(self, spec: JobSpec, answer: str, reason: str) -> JobSpec:
        """The same conversation, the invalid answer, and a turn asking to correct it."""
        if self.tools is not None and (self.tools.must_call or tools.classify(answer) == "call"):
            fix = tools.correction(reason, self.tools)
        elif self.json is not None:
            fix = structured.correction(reason, self.json)
        else:
            fix = f"Your previous answer could not be used: {reason}. Answer again."
        messages = spec.messages + (ChatMessage("assistant", answer), ChatMessage("user", fix))
        return msgspec.structs.replace(spec, messages=messages)


def make_plan(spec: JobSpec, tool_rule: ToolRule | None, json_rule: JsonRule | None) -> Plan:
    """The spec with the rules' instructions appended to its system part."""
    extra = []
    if tool_rule is not None and tool_rule.tools:
        extra.append(tools.instructions(tool_rule))
    if json_rule is not None:
        extra.append(structured.instructions(json_rule))
    if extra:
        spec = msgspec.structs.replace(
            spec, messages=spec.messages + (ChatMessage("system", "\n\n".join(extra)),))
    return Plan(spec, tool_rule if tool_rule and tool_rule.tools else None, json_rule)


def check_conversation(messages: Sequence[ChatMessage], param: str = "messages") -> None:
    if not any(m.content.strip() for m in messages if m.role != "assistant"):
        raise ApiError(400, "The messages hold no text to send", param=param,
                       code="invalid_value")


def invalid_answer(reason: str) -> ApiError:
    """The model did not follow the requested format, twice: the upstream's fault."""
    return ApiError(502, "The model's answer did not follow the requested format, also after "
                    f"one corrective retry: {reason}", code="invalid_model_output")


__all__ = ["AnswerInvalid", "Plan", "make_plan", "check_conversation", "invalid_answer"]
