"""The official `openai` SDK against a real pool: what coding tools actually use."""

from __future__ import annotations

from typing import Iterator

import openai
import pytest
from openai import AsyncOpenAI

from bpool.testing.pool import Pool
from support import TEST_ENV

KEY = "sk-sdk-test-key"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    pool = Pool(tmp_path_factory.mktemp("sdk"), env=TEST_ENV)
    try:
        pool.start_broker()
        pool.start_front(env={"BPOOL_API_KEYS": KEY})
        for name in ("alpha", "beta"):
            pool.start_fake_worker(name, "--chunks", "4", "--models", "gemini-test,gemini-alt",
                                   "--reasoning")
        # /health gives a caller without a key the counts only, which is all this needs.
        pool.wait_health(lambda b: b.get("idle", 0) >= 2, what="2 idle workers")
        yield pool
    finally:
        pool.close()


def client(pool: Pool, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=pool.api_url, api_key=key, max_retries=0, timeout=30)


async def test_non_streaming(pool: Pool) -> None:
    async with client(pool) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="gemini-test", temperature=0.2, user="someone", seed=1, n=1,
            messages=[{"role": "system", "content": "be nice"},
                      {"role": "user", "content": "ping"}])
        profile = raw.headers["x-bpool-profile"]
        assert profile in ("alpha", "beta") and raw.headers["x-request-id"]
        completion = raw.parse()
    assert completion.choices[0].message.content == f"fake answer from {profile} to: ping"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4


async def test_streaming_with_usage(pool: Pool) -> None:
    async with client(pool) as c:
        stream = await c.chat.completions.create(
            model="gemini-test", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": [{"type": "text", "text": "tell me"}]}])
        content, reasons, usage = [], [], None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    content.append(choice.delta.content)
                if choice.finish_reason:
                    reasons.append(choice.finish_reason)
    text = "".join(content)
    assert text.startswith("fake answer from ") and text.endswith(" to: tell me")
    assert reasons == ["stop"]
    assert usage is not None and usage.total_tokens > 0


async def test_models_list(pool: Pool) -> None:
    async with client(pool) as c:
        models = await c.models.list()
    assert sorted(m.id for m in models.data) == ["gemini-alt", "gemini-test"]


async def test_wrong_key_raises_authentication_error(pool: Pool) -> None:
    async with client(pool, key="sk-wrong") as c:
        with pytest.raises(openai.AuthenticationError) as info:
            await c.chat.completions.create(
                model="gemini-test", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


async def test_bad_request_raises_bad_request_error(pool: Pool) -> None:
    async with client(pool) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(model="gemini-test", messages=[])
        assert info.value.status_code == 400 and info.value.param == "messages"
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(
                model="gemini-test", temperature=5,
                messages=[{"role": "user", "content": "x"}])
        assert info.value.param == "temperature"
