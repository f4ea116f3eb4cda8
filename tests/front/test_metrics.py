"""GET /metrics on a real front (its own process) over a broker and fake workers, read back with
prometheus_client's own text parser."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bpool.testing.pool import Pool
from support import PoolFactory

KEY = "sk-metrics-test"
MODEL = "gemini-2.5-flash"
WORKER = ["--models", f"{MODEL},gemini-2.5-pro", "--chunks", "3"]
AUTH = {"Authorization": f"Bearer {KEY}"}


class Samples:
    """Scraped samples by name; `get(name, **labels)` sums those whose labels include these."""

    def __init__(self, text: str) -> None:
        self.rows = [(s.name, s.labels, s.value)
                     for fam in text_string_to_metric_families(text) for s in fam.samples]

    def get(self, name: str, **labels: str) -> float | None:
        found = [v for n, lab, v in self.rows
                 if n == name and all(lab.get(k) == want for k, want in labels.items())]
        return sum(found) if found else None

    def labels(self, name: str, key: str) -> set[str]:
        return {lab[key] for n, lab, _ in self.rows if n == name and key in lab}


async def scrape(http: aiohttp.ClientSession, pool: Pool, headers: dict[str, str] | None = AUTH
                 ) -> Samples:
    async with http.get(f"{pool.base_url}/metrics", headers=headers) as resp:
        text = await resp.text()
        assert resp.status == 200, text
        assert resp.headers["Content-Type"].startswith("text/plain")
    return Samples(text)


async def chat(http: aiohttp.ClientSession, pool: Pool, model: str, stream: bool
               ) -> tuple[int, str, list[Any]]:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{pool.api_url}/chat/completions", json=body, headers=AUTH) as resp:
        text = await resp.text()
        events = [json.loads(line[6:]) for line in text.splitlines()
                  if line.startswith("data: {")] if stream else []
        return resp.status, resp.headers.get("x-bpool-profile", ""), events


async def test_requests_latency_and_jobs_show_with_their_labels(
    make_pool: PoolFactory, http: aiohttp.ClientSession
) -> None:
    pool = make_pool({"a": WORKER, "b": WORKER}, env={"BPOOL_API_KEYS": KEY})
    async with http.get(f"{pool.base_url}/metrics") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_api_key"
    first = await scrape(http, pool)  # also teaches the front the pool's models
    assert first.get("bpool_broker_up") == 1
    assert first.get("bpool_worker_state", profile="a", state="idle") == 1
    assert first.get("bpool_worker_state", profile="b", state="busy") == 0
    assert first.get("bpool_requests_total", route="/v1/chat/completions") is None

    status, streamed_by, events = await chat(http, pool, MODEL, stream=True)
    assert status == 200 and streamed_by in ("a", "b")
    streamed_text = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    assert len([t for t in streamed_text if t]) == 3  # the worker's three chunks, relayed
    status, collected_by, _ = await chat(http, pool, MODEL, stream=False)
    assert status == 200 and collected_by in ("a", "b")
    status, _, _ = await chat(http, pool, "no-such-model", stream=False)
    assert status == 404

    m = await scrape(http, pool)
    route = "/v1/chat/completions"
    assert m.get("bpool_requests_total", route=route, status="200", model=MODEL) == 2
    assert (m.get("bpool_requests_total", route=route, status="200", model=MODEL,
                  profile=streamed_by) or 0) >= 1
    # The unknown model is not a label of its own: it is "other", and it reached no worker.
    assert m.get("bpool_requests_total", route=route, status="404", model="other",
                 profile="none") == 1
    assert "no-such-model" not in m.labels("bpool_requests_total", "model")
    assert m.get("bpool_requests_total", route="/metrics", status="401") == 1
    assert m.get("bpool_job_failures_total", kind="model_not_found") == 1
    assert m.get("bpool_time_to_first_token_seconds_count", model=MODEL) == 2
    assert m.get("bpool_request_duration_seconds_count", model=MODEL) == 2
    assert m.get("bpool_request_duration_seconds_count", model="other") == 1
    ttft_sum = m.get("bpool_time_to_first_token_seconds_sum", model=MODEL)
    total_sum = m.get("bpool_request_duration_seconds_sum", model=MODEL)
    assert ttft_sum is not None and total_sum is not None and 0 < ttft_sum <= total_sum
    assert m.get("bpool_queue_wait_seconds_count") == 2
    assert m.get("bpool_relayed_chunks_total") == 6
    assert m.get("bpool_jobs_total", event="submitted") == 3
    assert m.get("bpool_jobs_total", event="started") == 2
    assert m.get("bpool_jobs_total", event="finished") == 2
    assert m.get("bpool_jobs_total", event="failed") == 1
    assert m.get("bpool_worker_jobs_served", profile="a") + \
        m.get("bpool_worker_jobs_served", profile="b") == 2
    assert m.get("bpool_queue_length") == 0


async def test_metrics_public_needs_no_key_but_the_api_still_does(
    make_pool: PoolFactory, http: aiohttp.ClientSession
) -> None:
    pool = make_pool({"a": WORKER}, env={"BPOOL_API_KEYS": KEY, "BPOOL_METRICS_PUBLIC": "1"})
    m = await scrape(http, pool, headers=None)
    assert m.get("bpool_worker_state", profile="a", state="idle") == 1
    async with http.get(f"{pool.api_url}/models") as resp:
        assert resp.status == 401


async def test_worker_state_gauges_follow_a_cooled_then_stopped_worker(
    make_pool: PoolFactory, http: aiohttp.ClientSession
) -> None:
    limited = [*WORKER, "--rate-limited-after", "0", "--cooldown-s", "60"]
    pool = make_pool({"limited": limited, "ok": WORKER}, env={"BPOOL_API_KEYS": KEY})
    await scrape(http, pool)
    # LRU rotation hands "limited" one of the first two jobs; it fails as rate-limited before
    # any output, so the job moves to "ok" and the client never sees it.
    for _ in range(2):
        status, profile, _ = await chat(http, pool, MODEL, stream=False)
        assert status == 200 and profile == "ok"
    # A rate limit rests the account for that model only: the worker stays idle for others.
    await pool.await_health(lambda b: any(w["cooling"] for w in b["workers"]), timeout_s=5)
    m = await scrape(http, pool)
    assert m.get("bpool_worker_state", profile="limited", state="idle") == 1
    assert m.get("bpool_worker_state", profile="ok", state="idle") == 1
    assert m.get("bpool_cooldowns_total", profile="limited") == 1
    assert m.get("bpool_cooldowns_total", profile="ok") == 0
    assert m.get("bpool_job_moves_total") == 1
    assert 0 < m.get("bpool_model_cooldown_remaining_seconds", profile="limited",
                     model=MODEL) <= 60
    assert m.labels("bpool_model_cooldown_remaining_seconds", "profile") == {"limited"}
    assert m.get("bpool_heartbeat_expiries_total") == 0

    pool.pause("worker-ok")  # stopped, not dead: only its missing heartbeats can tell
    await pool.await_health(lambda b: "ok" not in pool.worker_states(b), timeout_s=10,
                            what="the stopped worker expired")
    m = await scrape(http, pool)
    assert m.get("bpool_worker_state", profile="ok", state="gone") == 1
    assert m.get("bpool_worker_state", profile="ok", state="idle") == 0
    assert m.get("bpool_heartbeat_expiries_total") == 1
    assert m.get("bpool_worker_state", profile="limited", state="idle") == 1
