"""Tools, structured output and reasoning through the official `openai` SDK, against a real front
whose broker plays a model (model_broker.py)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from openai import AsyncOpenAI

from bpool.protocol import JobSpec, NativeCall
from model_broker import ModelBroker, follower, model  # noqa: F401  (fixture)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["C", "F"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}
PERSON = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer", "minimum": 0},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"], "additionalProperties": False}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


def client(mb: ModelBroker) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=mb.front.url + "/v1", api_key="k",  # type: ignore[attr-defined]
                       max_retries=0, timeout=30)


def prompt_of(spec: JobSpec) -> str:
    return "\n".join(m.content for m in spec.messages)


async def test_two_step_tool_loop(model: ModelBroker) -> None:
    async with client(model) as c:
        first = await c.chat.completions.create(model="m", messages=USER, tools=[WEATHER, TIME])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        [call] = choice.message.tool_calls
        assert call.type == "function" and call.function.name == "get_weather"
        assert set(json.loads(call.function.arguments)) == {"city", "unit"}
        messages: list[Any] = [*USER, choice.message.model_dump(exclude_none=True),
                               {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"}]
        second = await c.chat.completions.create(model="m", messages=messages,
                                                 tools=[WEATHER, TIME])
    assert second.choices[0].finish_reason == "stop"
    assert "18 C, sunny" in second.choices[0].message.content
    # What the pool was asked: the declarations and the rule in the system part, the earlier
    # call in the tool_call format, the result naming its call.
    asked = prompt_of(model.specs[1])
    assert '"name": "get_weather"' in asked and "Call a tool when you need one" in asked
    assert "```tool_call\n{\"name\": \"get_weather\"" in asked
    assert f"Result of the tool call `get_weather` (call {call.id}):\n18 C, sunny" in asked


async def test_streamed_tool_call_deltas(model: ModelBroker) -> None:
    async with client(model) as c:
        stream = await c.chat.completions.create(
            model="m", messages=USER, tools=[WEATHER, TIME], stream=True,
            parallel_tool_calls=False,
            tool_choice={"type": "function", "function": {"name": "get_time"}})
        calls: dict[int, dict[str, str]] = {}
        reasons, content = [], []
        async for chunk in stream:
            for ch in chunk.choices:
                if ch.delta.content:
                    content.append(ch.delta.content)
                for tc in ch.delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                    slot["id"] += tc.id or ""
                    slot["name"] += tc.function.name or ""
                    slot["args"] += tc.function.arguments or ""
                if ch.finish_reason:
                    reasons.append(ch.finish_reason)
    assert reasons == ["tool_calls"] and not "".join(content)
    assert list(calls) == [0] and calls[0]["name"] == "get_time"
    assert calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["args"]) == {"zone": "xxxx"}
    assert "Now you must call the tool `get_time`" in prompt_of(model.specs[0])
    assert "Call at most one tool" in prompt_of(model.specs[0])


async def test_text_answer_with_tools_streams_as_text(model: ModelBroker) -> None:
    model.reply = lambda spec: ("", "No tool needed: it is sunny.")
    async with client(model) as c:
        stream = await c.chat.completions.create(model="m", messages=USER, tools=[WEATHER],
                                                 stream=True)
        pieces = [ch.delta.content async for chunk in stream for ch in chunk.choices
                  if ch.delta.content]
    assert "".join(pieces) == "No tool needed: it is sunny."
    assert len(pieces) > 1  # decided after the first piece, then streamed as it came


@pytest.mark.parametrize("stream", [False, True])
async def test_function_calls_the_page_made_itself_are_tool_calls(
    model: ModelBroker, stream: bool
) -> None:
    model.reply = lambda spec: ("", "")
    model.native = (NativeCall("lookup", '{"q": "x"}'),)
    async with client(model) as c:
        if not stream:
            done = await c.chat.completions.create(model="m", messages=USER)
            [call] = done.choices[0].message.tool_calls
            reason = done.choices[0].finish_reason
        else:
            out = await c.chat.completions.create(model="m", messages=USER, stream=True)
            chunks = [ch async for chunk in out for ch in chunk.choices]
            [call] = [tc for ch in chunks for tc in ch.delta.tool_calls or []]
            reason = chunks[-1].finish_reason
    assert (call.function.name, call.function.arguments) == ("lookup", '{"q": "x"}')
    assert call.id.startswith("call_") and reason == "tool_calls"


async def test_a_broken_call_is_retried_once_with_a_correction(model: ModelBroker) -> None:
    answers = iter(['```tool_call\n{"name": "get_wether", "arguments": {}}\n```',
                    '```tool_call\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'])
    model.reply = lambda spec: ("", next(answers))
    async with client(model) as c:
        done = await c.chat.completions.create(model="m", messages=USER, tools=[WEATHER])
    assert done.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert len(model.specs) == 2
    last = model.specs[1].messages[-1]
    assert last.role == "user" and "'get_wether', which is not declared" in last.content


@pytest.mark.parametrize("stream", [False, True])
async def test_required_call_answered_with_text_twice_is_an_error(
    model: ModelBroker, stream: bool
) -> None:
    model.reply = lambda spec: ("", "I would rather chat.")
    async with client(model) as c:
        with pytest.raises(openai.InternalServerError) as info:
            out = await c.chat.completions.create(model="m", messages=USER, tools=[WEATHER],
                                                  tool_choice="required", stream=stream)
            async for _ in out:  # type: ignore[union-attr]
                pass
    assert info.value.status_code == 502
    assert info.value.code == "invalid_model_output"
    assert "a tool call was required" in info.value.message
    assert len(model.specs) == 2


async def test_structured_output_json_schema(model: ModelBroker) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                  "strict": True}}
    async with client(model) as c:
        done = await c.chat.completions.create(model="m", messages=USER, response_format=fmt)
        stream = await c.chat.completions.create(model="m", messages=USER, response_format=fmt,
                                                 stream=True)
        streamed = "".join([ch.delta.content async for chunk in stream for ch in chunk.choices
                            if ch.delta.content])
    for text in (done.choices[0].message.content, streamed):
        jsonschema.validate(json.loads(text), PERSON)
    assert '"additionalProperties": false' in prompt_of(model.specs[0])


async def test_structured_output_invalid_twice_is_an_error(model: ModelBroker) -> None:
    model.reply = lambda spec: ("", '{"name": "Ann", "age": -1, "tags": []}')
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    async with client(model) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="m", messages=USER, response_format=fmt)
    assert "-1 is less than the minimum of 0" in info.value.message
    assert "schema" in model.specs[1].messages[-1].content


async def test_json_object_mode_takes_a_fenced_object_and_refuses_a_list(
    model: ModelBroker
) -> None:
    answers = iter(["[1, 2]", '```json\n{"ok": true}\n```'])
    model.reply = lambda spec: ("", next(answers))
    async with client(model) as c:
        done = await c.chat.completions.create(model="m", messages=USER,
                                               response_format={"type": "json_object"})
    assert json.loads(done.choices[0].message.content) == {"ok": True}
    assert "must be a JSON object" in model.specs[1].messages[-1].content


async def test_reasoning_streams_and_is_counted(model: ModelBroker) -> None:
    async with client(model) as c:
        stream = await c.chat.completions.create(
            model="m", messages=USER, stream=True, reasoning_effort="high",
            stream_options={"include_usage": True})
        thoughts, usage = [], None
        async for chunk in stream:
            usage = chunk.usage or usage
            for ch in chunk.choices:
                extra = ch.delta.model_extra or {}
                if extra.get("reasoning_content"):
                    thoughts.append(extra["reasoning_content"])
    expected, _ = follower(model.specs[0])
    assert "".join(thoughts) == expected
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == len(expected) // 4 > 0


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema"),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "x", "schema": {"type": 7}}}},
     "response_format.json_schema.schema"),
])
async def test_bad_tools_and_formats_are_400(model: ModelBroker, body: dict[str, Any],
                                             param: str) -> None:
    async with client(model) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(model="m", messages=USER, **body)
    assert info.value.param == param
    assert not model.specs  # refused before anything reached the pool
