"""Bad input and auth through the real front process (with a real broker and one fake worker):
every error is OpenAI-shaped JSON with the right status and an x-request-id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from bpool.testing.pool import Pool
from support import TEST_ENV, chat_body

KEY = "sk-test-0123456789"
FILE_KEY = "sk-from-file-abcdef"
HASH_KEY = "ab#cdef-0123"  # a `#` inside a key is part of it, not a comment


def wait_idle_with_key(pool: Pool, n: int) -> None:
    """pool.wait_idle, but /health only lists workers to a caller with a key."""
    def idle() -> bool:
        _, body = pool.get("/health", headers={"Authorization": f"Bearer {KEY}"})
        workers = body.get("workers") if isinstance(body, dict) else None
        return isinstance(workers, list) and sum(w["state"] == "idle" for w in workers) >= n
    pool.wait_until(idle, 20, f"{n} idle worker(s) in /health")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    base = tmp_path_factory.mktemp("front-errors")
    keys_file = base / "keys.txt"
    keys_file.write_text(f"# operators\n  # laptop\n{FILE_KEY}\n\n{HASH_KEY}\n")
    pool = Pool(base, env={**TEST_ENV, "BPOOL_MAX_BODY_BYTES": "65536"})
    try:
        pool.start_broker()
        pool.start_front(env={"BPOOL_API_KEYS": f"other-key, {KEY}",
                              "BPOOL_API_KEYS_FILE": str(keys_file)})
        pool.start_fake_worker("solo")
        wait_idle_with_key(pool, 1)
        yield pool
    finally:
        pool.close()


AUTH = {"Authorization": f"Bearer {KEY}"}


async def call(pool: Pool, method: str, path: str, *, headers: dict[str, str] | None = None,
               data: bytes | None = None, json_body: Any = None) -> tuple[aiohttp.ClientResponse,
                                                                          Any]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, pool.base_url + path, headers=headers, data=data,
                             json=json_body) as resp:
            text = await resp.text()
            return resp, json.loads(text)


def assert_openai_error(resp: aiohttp.ClientResponse, body: Any, status: int,
                        code: str | None = None, param: str | None = None) -> None:
    assert resp.status == status, body
    assert resp.headers.get("x-request-id")
    assert resp.content_type == "application/json"
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param


async def test_invalid_json(pool: Pool) -> None:
    resp, body = await call(pool, "POST", "/v1/chat/completions",
                            headers={**AUTH, "Content-Type": "application/json"}, data=b"{nope")
    assert_openai_error(resp, body, 400, "invalid_json")


async def test_wrong_type_names_the_field(pool: Pool) -> None:
    resp, body = await call(pool, "POST", "/v1/chat/completions", headers=AUTH, json_body={
        "model": "m", "messages": [{"role": 1, "content": "x"}]})
    assert_openai_error(resp, body, 400, param="messages[0].role")
    assert "messages[0].role" in body["error"]["message"]


async def test_empty_messages(pool: Pool) -> None:
    resp, body = await call(pool, "POST", "/v1/chat/completions", headers=AUTH,
                            json_body={"model": "m", "messages": []})
    assert_openai_error(resp, body, 400, param="messages")


async def test_audio_parts_are_refused(pool: Pool) -> None:
    resp, body = await call(pool, "POST", "/v1/chat/completions", headers=AUTH, json_body={
        "model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]})
    assert_openai_error(resp, body, 400, "unsupported_content")


async def test_huge_body_is_413(pool: Pool) -> None:
    big = chat_body("x" * 200_000)
    resp, body = await call(pool, "POST", "/v1/chat/completions", headers=AUTH, json_body=big)
    assert_openai_error(resp, body, 413, "request_too_large")


async def test_unknown_route_and_method(pool: Pool) -> None:
    resp, body = await call(pool, "GET", "/v1/nothing-here", headers=AUTH)
    assert_openai_error(resp, body, 404, "unknown_url")
    resp, body = await call(pool, "GET", "/v1/chat/completions", headers=AUTH)
    assert_openai_error(resp, body, 405)


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"X-API-Key": "wrong"},
    {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer ab"},
])
async def test_missing_or_wrong_key_is_401(pool: Pool, headers: dict[str, str]) -> None:
    resp, body = await call(pool, "POST", "/v1/chat/completions", headers=headers,
                            json_body=chat_body())
    assert_openai_error(resp, body, 401, "invalid_api_key")
    resp, body = await call(pool, "GET", "/v1/models", headers=headers)
    assert_openai_error(resp, body, 401, "invalid_api_key")


@pytest.mark.parametrize("headers", [
    AUTH, {"X-API-Key": KEY}, {"Authorization": f"bearer {FILE_KEY}"},
    {"Authorization": "Bearer other-key"}, {"Authorization": f"Bearer {HASH_KEY}"},
])
async def test_good_keys_are_served(pool: Pool, headers: dict[str, str]) -> None:
    resp, body = await call(pool, "POST", "/v1/chat/completions", headers=headers,
                            json_body=chat_body("who are you"))
    assert resp.status == 200, body
    assert body["choices"][0]["message"]["content"] == "fake answer from solo to: who are you"
    assert resp.headers["x-bpool-profile"] == "solo"


async def test_health_needs_no_key_and_request_id_is_echoed(pool: Pool) -> None:
    resp, body = await call(pool, "GET", "/health", headers={"x-request-id": "trace-42"})
    assert resp.status == 200 and body["status"] == "ok"
    assert resp.headers["x-request-id"] == "trace-42"
    # Without a key: status and counts only, nothing that names an account or a process.
    assert body["idle"] == 1 and body["worker_count"] == 1
    assert "workers" not in body and "front" not in body
    assert "solo" not in json.dumps(body)


async def test_health_details_need_a_key(pool: Pool) -> None:
    resp, body = await call(pool, "GET", "/health", headers=AUTH)
    assert resp.status == 200 and body["status"] == "ok"
    assert [w["profile_id"] for w in body["workers"]] == ["solo"]
    assert body["workers"][0]["pid"] > 0 and "in_flight" in body["front"]
    resp, body = await call(pool, "GET", "/health", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 200 and "workers" not in body


def test_keys_never_reach_the_log(pool: Pool) -> None:
    log = pool.logs("front")
    assert "listening on" in log  # the log is there and being written
    for key in (KEY, FILE_KEY, "other-key", "wrong"):
        assert key not in log


async def test_open_front_warns_once(tmp_path: Path) -> None:
    with Pool(tmp_path, env=TEST_ENV) as open_pool:
        open_pool.start_front()
        open_pool.wait_until(lambda: "listening on" in open_pool.logs("front"), 15,
                             "the front to listen")
        assert open_pool.logs("front").count("no API keys configured") == 1
        # No broker: a chat request fails fast with 503 and Retry-After instead of hanging.
        resp, body = await call(open_pool, "POST", "/v1/chat/completions",
                                json_body=chat_body())
        assert_openai_error(resp, body, 503)
        assert int(resp.headers["Retry-After"]) >= 1
