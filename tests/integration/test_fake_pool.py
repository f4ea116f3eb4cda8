"""The whole pipeline as real processes over real sockets: front (HTTP) -> broker (ZeroMQ) ->
fake workers. Scheduling: LRU rotation, one job per worker, bounded queue, cancellation,
accounts out of rotation."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import aiohttp

from support import PoolFactory, chat_body, read_sse, records


async def chat(http: aiohttp.ClientSession, pool: Any, text: str = "hello",
               **kw: Any) -> tuple[int, dict[str, str], Any]:
    async with http.post(pool.api_url + "/chat/completions", json=chat_body(text, **kw)) as r:
        return r.status, dict(r.headers), await r.json()


async def test_sequential_requests_rotate_in_lru_order(make_pool: PoolFactory,
                                                       http: aiohttp.ClientSession) -> None:
    pool = make_pool(["a", "b", "c"])
    served = []
    for i in range(10):
        status, headers, body = await chat(http, pool, f"question {i}")
        assert status == 200, body
        profile = headers["x-bpool-profile"]
        assert body["choices"][0]["message"]["content"] == (
            f"fake answer from {profile} to: question {i}")
        served.append(profile)
    first = served[:3]
    assert sorted(first) == ["a", "b", "c"], served
    assert served == (first * 4)[:10], served


async def test_concurrent_requests_never_overlap_on_a_worker(
    make_pool: PoolFactory, http: aiohttp.ClientSession
) -> None:
    pool = make_pool(["a", "b", "c"], worker_args=["--latency-s", "0.02", "--chunks", "3",
                                                    "--chunk-interval-s", "0.01"])
    results = await asyncio.gather(*(chat(http, pool, f"q{i}") for i in range(50)))
    assert [status for status, _, _ in results] == [200] * 50
    for status, headers, body in results:
        text = body["choices"][0]["message"]["content"]
        assert text.startswith(f"fake answer from {headers['x-bpool-profile']} to: q")
    jobs = records(pool)
    assert len(jobs) == 50 and {j["outcome"] for j in jobs} == {"stop"}
    by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:
        by_worker[job["profile"]].append(job)
    assert set(by_worker) == {"a", "b", "c"}  # the load was spread
    for profile, done in by_worker.items():
        done.sort(key=lambda j: j["start_mono"])
        for prev, nxt in zip(done, done[1:]):
            assert prev["end_mono"] <= nxt["start_mono"], f"{profile} ran two jobs at once"


async def test_over_capacity_requests_wait_then_get_429_or_503(
    make_pool: PoolFactory, http: aiohttp.ClientSession
) -> None:
    pool = make_pool(["slow"], worker_args=["--latency-s", "2.5"],
                     env={"BPOOL_QUEUE_TIMEOUT_S": "1", "BPOOL_MAX_QUEUE": "1"})
    holder = asyncio.create_task(chat(http, pool, "long one"))
    await pool.await_states({"slow": "busy"})
    t0 = time.monotonic()
    waiter = asyncio.create_task(chat(http, pool, "waits"))
    await pool.await_health(lambda b: b["queue_length"] == 1, what="one queued job")
    status, headers, body = await chat(http, pool, "no room")
    assert status == 429 and body["error"]["code"] == "queue_full"
    assert int(headers["Retry-After"]) >= 1
    status, headers, body = await waiter
    assert status == 503 and body["error"]["code"] == "queue_timeout", body
    assert int(headers["Retry-After"]) >= 1
    assert time.monotonic() - t0 >= 0.9  # it did wait for a worker first
    status, headers, body = await holder
    assert status == 200 and headers["x-bpool-profile"] == "slow"


async def test_disconnecting_a_stream_frees_the_worker(
    make_pool: PoolFactory, http: aiohttp.ClientSession
) -> None:
    pool = make_pool(["only"], worker_args=["--chunks", "60", "--chunk-interval-s", "0.1"])
    async with http.post(pool.api_url + "/chat/completions",
                         json=chat_body("long story", stream=True)) as resp:
        assert resp.status == 200
        await resp.content.readline()  # the stream is flowing
        await pool.await_states({"only": "busy"}, timeout_s=5)
        resp.connection.transport.abort()  # type: ignore[union-attr]  # the client vanishes
    await pool.await_states({"only": "idle"}, timeout_s=30)
    [job] = records(pool)
    assert job["outcome"] == "cancelled"  # stopped, not run to the end of its 60 chunks
    status, headers, body = await chat(http, pool, "next")
    assert status == 200 and headers["x-bpool-profile"] == "only"


async def test_logged_out_worker_is_shown_and_gets_no_jobs(
    make_pool: PoolFactory, http: aiohttp.ClientSession
) -> None:
    pool = make_pool({"a": [], "b": [], "out": ["--logged-out"]}, idle=2)
    body = await pool.await_states({"out": "logged_out", "a": "idle", "b": "idle"})
    [out] = [w for w in body["workers"] if w["profile_id"] == "out"]
    assert out["account"] == "out@fake.invalid"
    served = set()
    for i in range(6):
        status, headers, _ = await chat(http, pool, f"q{i}")
        assert status == 200
        served.add(headers["x-bpool-profile"])
    assert served == {"a", "b"}
    assert "out" not in {j["profile"] for j in records(pool)}


async def test_stream_through_the_pool(make_pool: PoolFactory,
                                       http: aiohttp.ClientSession) -> None:
    pool = make_pool(["a"], worker_args=["--chunks", "5", "--reasoning"])
    async with http.post(pool.api_url + "/chat/completions", json=chat_body(
            "stream me", stream=True, max_tokens=3)) as resp:
        assert resp.status == 200 and resp.headers["x-bpool-profile"] == "a"
        events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "thinking about: stream me"
    content = "".join(d.get("content", "") for d in deltas)
    assert "fake answer from a to: stream me".startswith(content) and content  # 3 of 5 pieces
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    [job] = records(pool)
    assert job["max_tokens"] == 3


async def test_sigterm_drains_the_current_job(make_pool: PoolFactory,
                                              http: aiohttp.ClientSession) -> None:
    pool = make_pool(["a"], worker_args=["--chunks", "10", "--chunk-interval-s", "0.15"])
    call = asyncio.create_task(chat(http, pool, "finish me"))
    await pool.await_states({"a": "busy"}, timeout_s=5)
    code = await asyncio.to_thread(pool.terminate, "worker-a")
    assert code == 0
    status, headers, body = await call
    assert status == 200 and headers["x-bpool-profile"] == "a"
    assert body["choices"][0]["message"]["content"] == "fake answer from a to: finish me"
    await pool.await_health(lambda b: not b["workers"], what="a gone after its Goodbye")
    assert await asyncio.to_thread(pool.terminate, "front") == 0
