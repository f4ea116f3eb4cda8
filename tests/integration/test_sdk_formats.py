"""Every client format end to end: the official openai, anthropic and google-genai SDKs against a
pool whose one worker is a real Chromium driving the studio simulator.

The simulator answers prompts that carry the front's tool or JSON instructions like a model that
follows them (bpool/sim/instructed.py); so a tool loop and a structured answer here go through the
front's prompt folding, the real driver and page, the page's answer body and the stream parser.
One browser for the whole module; its teardown fails if any process outlives the pool.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import anthropic
import jsonschema
import openai
import pytest
from anthropic import AsyncAnthropic
from google import genai
from google.genai import errors as genai_errors, types
from openai import AsyncOpenAI

from bpool.testing.browser_pool import (
    MODEL, BrowserPool, answer_for, kill_leftovers, start_sim, wait_no_leftovers,
)
from bpool.testing.pool import Pool
from bpool.worker import engines

if not Path(engines.DEFAULT_CHROMIUM).exists():
    pytest.skip("no system Chromium", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

KEY = "unused"  # keys per format are covered in tests/front
START_TIMEOUT_S = 100.0
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                                   "days": {"type": "integer", "minimum": 1}},
                  "required": ["city", "days"]}
PERSON = {"type": "object", "properties": {"name": {"type": "string"},
                                           "langs": {"type": "array",
                                                     "items": {"enum": ["en", "fr"]}}},
          "required": ["name", "langs"], "additionalProperties": False}


@pytest.fixture(scope="module")
def bp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserPool]:
    base = tmp_path_factory.mktemp("formats")
    pool = Pool(base, env={"BPOOL_BROWSER": "chromium"})
    left: dict[int, str] = {}
    try:
        sim, cookies = start_sim(pool, [("--names", "alice")]), base / "cookies"
        sim.config(tokens_per_s=0, first_token_s=0)
        pool.start_broker()
        pool.start_front()
        bpool = BrowserPool(pool, sim, cookies)
        bpool.start_worker(cookies / "alice.json", "worker-alice")
        pool.wait_states({"alice": "idle"}, START_TIMEOUT_S)
        yield bpool
    finally:
        pool.close()
        left = wait_no_leftovers(base, 15.0)
        kill_leftovers(left)
    assert not left, f"processes outlived the pool: {left}"


def base_url(bp: BrowserPool) -> str:
    return bp.pool.api_url.removesuffix("/v1")


def oai(bp: BrowserPool) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=bp.pool.api_url, api_key=KEY, max_retries=0, timeout=90)


def claude(bp: BrowserPool) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=base_url(bp), api_key=KEY, max_retries=0, timeout=90)


def gem(bp: BrowserPool) -> Any:
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(
        base_url=base_url(bp), api_version="v1beta", timeout=90_000)).aio


# ---------------------------------------------------------------------------- openai


async def test_openai_streaming_with_reasoning(bp: BrowserPool) -> None:
    prompt = "stream this through the page"
    async with oai(bp) as c:
        stream = await c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], stream=True,
            reasoning_effort="low", stream_options={"include_usage": True})
        text, thoughts, usage = [], [], None
        async for chunk in stream:
            usage = chunk.usage or usage
            for ch in chunk.choices:
                text.append(ch.delta.content or "")
                thoughts.append((ch.delta.model_extra or {}).get("reasoning_content") or "")
    assert "".join(text) == answer_for("alice", prompt)
    assert "**Planning**" in "".join(thoughts)  # the sim's thought parts, as reasoning
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 0


async def test_openai_tool_loop_and_structured_output(bp: BrowserPool) -> None:
    tools = [{"type": "function", "function": {"name": "forecast", "parameters":
                                               WEATHER_SCHEMA}}]
    user = {"role": "user", "content": "Forecast for Oslo?"}
    async with oai(bp) as c:
        first = await c.chat.completions.create(model=MODEL, messages=[user], tools=tools)
        [call] = first.choices[0].message.tool_calls
        assert first.choices[0].finish_reason == "tool_calls"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)
        second = await c.chat.completions.create(model=MODEL, tools=tools, messages=[
            user, first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "rain, 7 C"}])
        assert second.choices[0].message.content == "The tool answered: rain, 7 C"
        fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
        done = await c.chat.completions.create(
            model=MODEL, response_format=fmt,
            messages=[{"role": "user", "content": "Describe someone."}])
    jsonschema.validate(json.loads(done.choices[0].message.content), PERSON)


async def test_openai_bad_input(bp: BrowserPool) -> None:
    async with oai(bp) as c:
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(model="no-such-model",
                                            messages=[{"role": "user", "content": "x"}])


# ---------------------------------------------------------------------------- anthropic


async def test_anthropic_streamed_tool_loop(bp: BrowserPool) -> None:
    tools = [{"name": "forecast", "input_schema": WEATHER_SCHEMA}]
    user = {"role": "user", "content": "Forecast for Oslo?"}
    async with claude(bp) as c:
        async with c.messages.stream(model=MODEL, max_tokens=200, messages=[user],
                                     tools=tools) as s:
            first = await s.get_final_message()
        assert first.stop_reason == "tool_use"
        [use] = [b for b in first.content if b.type == "tool_use"]
        jsonschema.validate(use.input, WEATHER_SCHEMA)
        async with c.messages.stream(model=MODEL, max_tokens=200, tools=tools, messages=[
                user, {"role": "assistant", "content": first.content},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                              "content": "rain"}]}]) as s:
            text = "".join([t async for t in s.text_stream])
    assert text == "The tool answered: rain"


async def test_anthropic_bad_input(bp: BrowserPool) -> None:
    async with claude(bp) as c:
        with pytest.raises(anthropic.NotFoundError) as info:
            await c.messages.create(model="no-such-model", max_tokens=5,
                                    messages=[{"role": "user", "content": "x"}])
    assert info.value.body["type"] == "error"  # type: ignore[index]


# ---------------------------------------------------------------------------- gemini


async def test_gemini_function_call_and_structured_stream(bp: BrowserPool) -> None:
    decl = types.FunctionDeclaration(name="forecast", parameters_json_schema=WEATHER_SCHEMA)
    cfg = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[decl])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    async with gem(bp) as c:
        first = await c.models.generate_content(model=MODEL, contents="Oslo?", config=cfg)
        [call] = first.function_calls or []
        jsonschema.validate(call.args, WEATHER_SCHEMA)
        pieces = []
        async for chunk in await c.models.generate_content_stream(
                model=MODEL, contents="Describe someone.",
                config=types.GenerateContentConfig(response_mime_type="application/json",
                                                   response_json_schema=PERSON)):
            pieces.append(chunk.text or "")
    jsonschema.validate(json.loads("".join(pieces)), PERSON)


async def test_gemini_bad_input(bp: BrowserPool) -> None:
    async with gem(bp) as c:
        with pytest.raises(genai_errors.ClientError) as info:
            await c.models.generate_content(model="no-such-model", contents="x")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"
