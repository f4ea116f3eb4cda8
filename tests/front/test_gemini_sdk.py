"""The Gemini API's format through the official `google-genai` SDK, against a real front whose
broker plays a model (model_broker.py)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jsonschema
import pytest
from google import genai
from google.genai import errors, types

from model_broker import ModelBroker, follower, model  # noqa: F401  (fixture)

WEATHER = types.FunctionDeclaration(
    name="get_weather", description="The weather in a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]})
# google-genai's async client subclasses aiohttp's ClientSession, which aiohttp warns about.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
NO_AUTO = types.AutomaticFunctionCallingConfig(disable=True)


def client(mb: ModelBroker, key: str = "k") -> Any:
    """The async client, used as `async with`: its aiohttp session must close in the test's
    own event loop."""
    return genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=mb.front.url, api_version="v1beta")).aio  # type: ignore[attr-defined]


async def test_streaming_with_thoughts(model: ModelBroker) -> None:
    cfg = types.GenerateContentConfig(
        system_instruction="be brief", max_output_tokens=64,
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=10000))
    text, thoughts, last = [], [], None
    async with client(model) as c:
        async for chunk in await c.models.generate_content_stream(
                model="gemini-x", contents="Weather in Paris?", config=cfg):
            last = chunk
            for part in chunk.candidates[0].content.parts or []:
                (thoughts if part.thought else text).append(part.text)
    spec = model.specs[0]
    assert spec.model == "gemini-x" and spec.reasoning_effort == "high"
    assert spec.max_tokens == 64 and spec.messages[0].content == "be brief"
    assert "".join(text) == "echo: Weather in Paris?"
    assert "".join(thoughts) == follower(spec)[0]
    assert last is not None and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata.thoughts_token_count == len(follower(spec)[0]) // 4


async def test_two_step_function_calling(model: ModelBroker) -> None:
    cfg = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])],
                                      automatic_function_calling=NO_AUTO)
    user = types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])
    async with client(model) as c:
        first = await c.models.generate_content(model="gemini-x", contents=[user], config=cfg)
        [call] = first.function_calls or []
        assert call.name == "get_weather" and call.args == {"city": "xxxx"}
        reply = types.Part.from_function_response(name="get_weather",
                                                  response={"temp": "18 C"})
        second = await c.models.generate_content(model="gemini-x", config=cfg, contents=[
            user, first.candidates[0].content, types.Content(role="user", parts=[reply])])
    assert second.text == 'The tool answered: {"temp":"18 C"}'
    assert not second.function_calls


async def test_structured_output_from_a_response_schema(model: ModelBroker) -> None:
    schema = {"type": "OBJECT", "properties": {
        "name": {"type": "STRING"}, "age": {"type": "INTEGER"},
        "nick": {"type": "STRING", "nullable": True}}, "required": ["name", "age"]}
    cfg = types.GenerateContentConfig(response_mime_type="application/json",
                                      response_schema=schema)
    async with client(model) as c:
        done = await c.models.generate_content(model="gemini-x", contents="Who?", config=cfg)
    value = json.loads(done.text)
    jsonschema.validate(value, {"type": "object", "required": ["name", "age"],
                                "properties": {"age": {"type": "integer"}}})


async def test_bad_input_in_gemini_shape(model: ModelBroker) -> None:
    async with client(model) as c:
        with pytest.raises(errors.ClientError) as info:
            await c.models.generate_content(
                model="gemini-x", contents="x",
                config=types.GenerateContentConfig(candidate_count=3))
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    async with client(model) as c:
        with pytest.raises(errors.ClientError) as info:
            await c.models.generate_content(
                model="gemini-x", contents="x", config=types.GenerateContentConfig(
                    tools=[types.Tool(google_search=types.GoogleSearch())]))
    assert info.value.code == 400 and "only functionDeclarations" in info.value.message
    assert not model.specs


async def test_stream_without_sse_is_one_json_array(model: ModelBroker) -> None:
    url = model.front.url + "/v1beta/models/gemini-x:streamGenerateContent"  # type: ignore
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body) as resp:
            data: Any = await resp.json()
        async with http.post(url.replace("streamGenerateContent", "countTokens"),
                             json=body) as resp:
            unknown: Any = await resp.json()
    assert isinstance(data, list) and len(data) == 1
    assert data[0]["candidates"][0]["content"]["parts"] == [{"text": "echo: hi"}]
    assert unknown["error"]["status"] == "NOT_FOUND" and resp.status == 404


@pytest.mark.parametrize("model", [{"api_keys": ("sk-right",)}], indirect=True)
async def test_keys_by_header_and_by_query(model: ModelBroker) -> None:
    async with client(model, "sk-wrong") as c:
        with pytest.raises(errors.ClientError) as info:
            await c.models.generate_content(model="g", contents="x")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"
    async with client(model, "sk-right") as c:
        ok = await c.models.generate_content(model="g", contents="hi")
    assert ok.text == "echo: hi"
    url = model.front.url + "/v1beta/models"  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as http:
        async with http.get(url, params={"key": "sk-right"}) as resp:
            assert resp.status == 200
            body: Any = await resp.json()
        async with http.get(url, params={"key": "nope"}) as resp:
            bad: Any = await resp.json()
    assert body == {"models": []}  # the scripted broker reports no workers
    assert bad["error"]["code"] == 401 and set(bad["error"]) == {"code", "message", "status"}
