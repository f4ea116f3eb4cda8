"""Anthropic's Messages API through the official `anthropic` SDK, against a real front whose
broker plays a model (model_broker.py)."""

from __future__ import annotations

import anthropic
import pytest
from anthropic import AsyncAnthropic

from model_broker import ModelBroker, follower, model  # noqa: F401  (fixture)

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
USER = [{"role": "user", "content": "Weather in Paris?"}]


def client(mb: ModelBroker, key: str = "k") -> AsyncAnthropic:
    return AsyncAnthropic(base_url=mb.front.url, api_key=key,  # type: ignore[attr-defined]
                          max_retries=0, timeout=30)


async def test_streaming_text_with_thinking(model: ModelBroker) -> None:
    async with client(model) as c:
        async with c.messages.stream(
            model="m", max_tokens=100, system="be brief", messages=USER,
            thinking={"type": "enabled", "budget_tokens": 4000},
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    spec = model.specs[0]
    assert spec.reasoning_effort == "medium" and spec.max_tokens == 100
    assert spec.messages[0].role == "system" and spec.messages[0].content == "be brief"
    assert text == "echo: Weather in Paris?"
    thought, _ = follower(spec)
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == thought
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_two_step_tool_loop(model: ModelBroker, stream: bool) -> None:
    async with client(model) as c:
        if stream:
            async with c.messages.stream(model="m", max_tokens=50, messages=USER,
                                         tools=[WEATHER]) as s:
                first = await s.get_final_message()
        else:
            first = await c.messages.create(model="m", max_tokens=50, messages=USER,
                                            tools=[WEATHER])
        assert first.stop_reason == "tool_use"
        [use] = [b for b in first.content if b.type == "tool_use"]
        assert use.name == "get_weather" and use.input == {"city": "xxxx"}
        second = await c.messages.create(model="m", max_tokens=50, tools=[WEATHER], messages=[
            *USER, {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "18 C"}]}])
    assert second.stop_reason == "end_turn"
    assert second.content[-1].text == "The tool answered: 18 C"
    assert f"Result of the tool call `get_weather` (call {use.id}):\n18 C" in \
        model.specs[1].messages[-2].content


async def test_forced_tool_is_retried_then_an_anthropic_error(model: ModelBroker) -> None:
    model.reply = lambda spec: ("", "plain words")
    async with client(model) as c:
        with pytest.raises(anthropic.InternalServerError) as info:
            await c.messages.create(model="m", max_tokens=50, messages=USER, tools=[WEATHER],
                                    tool_choice={"type": "tool", "name": "get_weather"})
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert len(model.specs) == 2


async def test_bad_input_in_anthropic_shape(model: ModelBroker) -> None:
    async with client(model) as c:
        with pytest.raises(anthropic.BadRequestError) as info:
            await c.messages.create(model="m", max_tokens=0, messages=USER)
        assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore
        assert "max_tokens" in info.value.body["error"]["message"]  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError):
            await c.messages.create(model="m", max_tokens=5, messages=USER,
                                    tool_choice={"type": "any"})
    assert not model.specs


@pytest.mark.parametrize("model", [{"api_keys": ("sk-right",)}], indirect=True)
async def test_x_api_key_is_checked(model: ModelBroker) -> None:
    async with client(model, key="sk-wrong") as c:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await c.messages.create(model="m", max_tokens=5, messages=USER)
    assert info.value.body == {"type": "error", "error": {  # type: ignore[comparison-overlap]
        "type": "authentication_error", "message": info.value.body["error"]["message"]}}
    async with client(model, key="sk-right") as c:
        ok = await c.messages.create(model="m", max_tokens=5, messages=USER)
    assert ok.content[0].text == "echo: Weather in Paris?"
