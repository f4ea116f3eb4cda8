"""Failures of real processes: a worker killed mid-stream, a frozen worker, a broker restart, a
rate-limited account. The service must keep answering (heartbeats 0.5 s x 3 in these pools)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from support import PoolFactory, chat_body, records

# A generous bound for "the failure was noticed": far below the fallbacks these tests tell apart
# (the 60 s queue wait, the 900 s job timeout), far above heartbeat detection on a busy machine.
DETECT_S = 30.0


async def chat(http: aiohttp.ClientSession, pool: Any, text: str = "hello",
               **kw: Any) -> tuple[int, dict[str, str], Any]:
    async with http.post(pool.api_url + "/chat/completions", json=chat_body(text, **kw)) as r:
        return r.status, dict(r.headers), await r.json()


async def test_worker_killed_mid_stream(make_pool: PoolFactory,
                                        http: aiohttp.ClientSession) -> None:
    pool = make_pool(["a", "b", "c"], worker_args=["--chunks", "20",
                                                    "--chunk-interval-s", "0.1"])
    async with http.post(pool.api_url + "/chat/completions",
                         json=chat_body("doomed", stream=True)) as resp:
        assert resp.status == 200, await resp.text()
        victim = resp.headers["x-bpool-profile"]
        await resp.content.readline()  # output has started
        pool.kill(f"worker-{victim}")
        others = asyncio.gather(*(chat(http, pool, f"meanwhile {i}") for i in range(4)))

        async def error_line() -> str | None:
            async for raw in resp.content:
                line = raw.decode().strip()
                assert line != "data: [DONE]", "a killed worker cannot finish its answer"
                if line.startswith("data: {\"error\""):
                    return line
            return None

        # Heartbeats find the dead worker in ~1.5 s; the deadline only tells that apart from the
        # 900 s job timeout (how fast is bench-faults' number, not a test's).
        error = await asyncio.wait_for(error_line(), DETECT_S)
    assert error is not None and "worker_died" in error, error
    results = await others
    assert [status for status, _, _ in results] == [200] * 4
    assert victim not in {headers["x-bpool-profile"] for _, headers, _ in results}
    await pool.await_health(lambda b: victim not in pool.worker_states(b),
                            what=f"{victim} gone from /health")


async def test_frozen_worker_is_dropped_from_rotation(make_pool: PoolFactory,
                                                      http: aiohttp.ClientSession) -> None:
    pool = make_pool(["a", "b", "c"])
    pool.pause("worker-b")  # SIGSTOP: sockets stay open, heartbeats stop
    await pool.await_health(lambda b: pool.worker_states(b).get("b") is None,
                            timeout_s=6, what="b dropped from /health")
    served = []
    for i in range(6):
        status, headers, body = await chat(http, pool, f"q{i}")
        assert status == 200, body
        served.append(headers["x-bpool-profile"])
    assert set(served) == {"a", "c"}
    pool.resume("worker-b")  # it notices the silence, re-registers and serves again
    await pool.await_states({"b": "idle"}, timeout_s=10)


async def test_broker_restart_resumes_service(make_pool: PoolFactory,
                                              http: aiohttp.ClientSession) -> None:
    pool = make_pool(["a", "b"], worker_args=["--chunks", "10", "--chunk-interval-s", "0.1"])
    before = {name: pool[name].pid for name in ("front", "worker-a", "worker-b")}
    old_broker = pool["broker"].pid
    async with http.post(pool.api_url + "/chat/completions",
                         json=chat_body("in flight", stream=True)) as resp:
        assert resp.status == 200, await resp.text()
        await resp.content.readline()
        pool.kill("broker")
        # The job in flight fails (3 x 0.5 s of broker silence) instead of hanging until the
        # 900 s job timeout.
        tail = (await asyncio.wait_for(resp.content.read(), DETECT_S)).decode()
    assert "broker_lost" in tail and "[DONE]" not in tail, tail
    # With the broker known to be gone the front answers at once, not after the 60 s queue wait.
    status, headers, body = await asyncio.wait_for(chat(http, pool, "while down"), DETECT_S)
    assert status == 503 and int(headers["Retry-After"]) >= 1, body
    pool.restart("broker")
    assert pool["broker"].pid != old_broker
    await pool.await_idle(2, timeout_s=15)

    async def served() -> bool:
        status, _, _ = await chat(http, pool, "after")
        return status == 200
    deadline = time.monotonic() + 10
    while not await served():  # the front may still need one Pong from the new broker
        assert time.monotonic() < deadline, pool.log_tails()
        await asyncio.sleep(0.2)
    after = {name: pool[name].pid for name in before}
    assert after == before and all(pool[name].alive() for name in before)


async def test_rate_limited_worker_cools_down_and_its_job_moves(
    make_pool: PoolFactory, http: aiohttp.ClientSession
) -> None:
    pool = make_pool({"limited": ["--rate-limited-after", "0", "--cooldown-s", "2"]})
    # Registered after "limited" is idle, so "limited" is the least recently used worker.
    pool.start_fake_worker("spare", "--record", str(pool.base_dir / "jobs.jsonl"))
    await pool.await_idle(2)
    status, headers, body = await chat(http, pool, "move me")
    assert status == 200, body
    assert headers["x-bpool-profile"] == "spare"
    job_id = body["id"].removeprefix("chatcmpl-")
    jobs = {(j["profile"], j["job_id"]): j["outcome"] for j in records(pool)}
    assert jobs == {("limited", job_id): "rate_limited", ("spare", job_id): "stop"}
    # Cooling for the job's model only (a quota is per account and model): idle for others.
    health = await pool.await_states({"limited": "idle"}, timeout_s=2)
    [limited] = [w for w in health["workers"] if w["profile_id"] == "limited"]
    model = chat_body("x")["model"]
    assert limited["last_error"] and 0 < limited["cooling"][model] <= 2
    await pool.await_health(lambda b: all(not w["cooling"] for w in b["workers"]), timeout_s=6)


async def test_worker_that_stops_heartbeating_is_expired(make_pool: PoolFactory,
                                                         http: aiohttp.ClientSession) -> None:
    # The process stays up and its socket open, but it never says anything unprompted: the
    # broker must expire it by missed heartbeats alone (it re-registers afterwards, and is
    # expired again, for as long as it stays silent).
    pool = make_pool({"a": [], "mute": ["--no-heartbeat"]}, idle=1)
    body = await pool.await_health(lambda b: b["counters"]["workers_expired"] >= 1,
                                   timeout_s=10, what="the silent worker expired")
    assert pool["worker-mute"].alive()
    assert body["counters"]["workers_expired"] >= 1
    for i in range(4):
        status, headers, _ = await chat(http, pool, f"q{i}")
        assert status == 200


async def test_a_second_sigterm_stops_a_draining_worker_at_once(
        make_pool: PoolFactory, http: aiohttp.ClientSession) -> None:
    """The first SIGTERM drains (the job may take the whole drain timeout); an operator who
    sends a second one does not want to wait for it."""
    import signal

    pool = make_pool(["a"], worker_args=["--latency-s", "120"],
                     env={"BPOOL_DRAIN_TIMEOUT_S": "120"})
    pending = asyncio.ensure_future(chat(http, pool, "a long one"))
    try:
        # The harness waits block: run them off the loop that carries the request.
        await asyncio.to_thread(pool.wait_states, {"a": "busy"})
        pool.signal("worker-a", signal.SIGTERM)
        await asyncio.to_thread(pool.wait_states, {"a": "draining"})
        assert pool["worker-a"].alive()  # draining, as asked
        pool.signal("worker-a", signal.SIGTERM)
        await pool.await_until(lambda: not pool["worker-a"].alive(), 10.0, "the worker to exit")
        assert pool["worker-a"].returncode == 128 + signal.SIGTERM
    finally:
        pending.cancel()


async def test_sigterm_to_the_front_lets_open_responses_finish(
        make_pool: PoolFactory, http: aiohttp.ClientSession) -> None:
    """The front stops taking requests on SIGTERM but drains the open ones (within
    BPOOL_DRAIN_TIMEOUT_S), then exits 0."""
    import signal

    pool = make_pool(["a"], worker_args=["--chunks", "15", "--chunk-interval-s", "0.2"],
                     front_env={"BPOOL_DRAIN_TIMEOUT_S": "120"})
    async with http.post(pool.api_url + "/chat/completions",
                         json=chat_body("see it through", stream=True)) as resp:
        assert resp.status == 200, await resp.text()
        first = await resp.content.readline()  # the answer is under way
        pool.signal("front", signal.SIGTERM)
        rest = await asyncio.wait_for(resp.content.read(), DETECT_S)
    events = [line[6:] for line in (first + rest).decode().splitlines()
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events[:-1] if json.loads(e).get("choices"))
    assert text.endswith("see it through"), text
    await pool.await_until(lambda: not pool["front"].alive(), DETECT_S, "the front to exit")
    assert pool["front"].returncode == 0


async def test_a_front_with_no_drain_time_cuts_open_responses_at_sigterm(
        make_pool: PoolFactory, http: aiohttp.ClientSession) -> None:
    """BPOOL_DRAIN_TIMEOUT_S=0 means no drain (aiohttp reads a 0 s shutdown timeout as none at
    all, which would wait for every open answer to end)."""
    import signal

    pool = make_pool(["a"], worker_args=["--chunks", "600", "--chunk-interval-s", "0.2"],
                     front_env={"BPOOL_DRAIN_TIMEOUT_S": "0"})
    long_prompt = "two minutes long " * 200  # enough text for 600 chunks, 0.2 s apart
    async with http.post(pool.api_url + "/chat/completions",
                         json=chat_body(long_prompt, stream=True)) as resp:
        assert resp.status == 200, await resp.text()
        await resp.content.readline()
        pool.signal("front", signal.SIGTERM)
        try:
            rest = await asyncio.wait_for(resp.content.read(), DETECT_S)
        except aiohttp.ClientPayloadError:
            rest = b""  # cut mid-chunk
    assert b"[DONE]" not in rest  # cut, not finished (the answer takes two minutes)
    await pool.await_until(lambda: not pool["front"].alive(), DETECT_S, "the front to exit")
    assert pool["front"].returncode == 0
