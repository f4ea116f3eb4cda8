"""The whole pool with real browsers: Chromium workers driving the studio simulator, served through
the real broker and HTTP front, talked to over HTTP and with the official `openai` SDK.

One pool per module (bpool/testing/browser_pool.py): the simulator, the broker, the front and three
`bpool.browser_proc` workers, alice and bob (logged in) and ghost (a profile the simulator does not
know). Every test starts from fresh simulator stats and fast answers, with alice and bob idle.
The last test stops the workers itself; the module's teardown then fails if any process of the
pool's directory (a browser above all) is still running.

Corrupt cookie files are also covered process-by-process in test_browser_worker.py
(`{"cookies": []}`); here a truncated file is started as a member of a running pool.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
from openai import AsyncOpenAI

from bpool.worker import engines
from bpool.testing.browser_pool import (
    LOGGED_IN, MODEL, BrowserPool, answer_for, browser_leftovers, kill_leftovers,
    start_browser_pool,
    wait_no_leftovers,
)

if not Path(engines.DEFAULT_CHROMIUM).exists():
    pytest.skip("no system Chromium", allow_module_level=True)

# Short account cooldowns so the quota test can watch one end; everything else at its default.
POOL_ENV = {"BPOOL_BROWSER": "chromium", "BPOOL_RATE_LIMIT_COOLDOWN_S": "5",
            "BPOOL_QUOTA_COOLDOWN_S": "5"}
START_TIMEOUT_S = 100.0  # three Chromiums starting at once on two busy cores


@pytest.fixture(scope="module")
def pool_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserPool]:
    base = tmp_path_factory.mktemp("browser-pool")
    bp = start_browser_pool(base, POOL_ENV)
    try:
        bp.pool.wait_states({"alice": "idle", "bob": "idle", "ghost": "logged_out"},
                            START_TIMEOUT_S)
        yield bp
    finally:
        bp.pool.close()
        left = wait_no_leftovers(base, 15.0)
        kill_leftovers(left)
    assert not left, f"processes outlived the pool: {left}"


@pytest.fixture
def bp(pool_module: BrowserPool) -> BrowserPool:
    pool_module.sim.fresh()
    pool_module.pool.wait_states({p: "idle" for p in LOGGED_IN}, 30.0)
    return pool_module


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as session:
        yield session


def sdk(bp: BrowserPool) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=bp.pool.api_url, api_key="unused", max_retries=0, timeout=90)


def body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **extra}


@dataclass
class Answer:
    status: int
    profile: str  # the x-bpool-profile header
    data: Any

    @property
    def text(self) -> str:
        return self.data["choices"][0]["message"]["content"]


async def chat(http: aiohttp.ClientSession, bp: BrowserPool, prompt: str) -> Answer:
    async with http.post(bp.pool.api_url + "/chat/completions", json=body(prompt)) as resp:
        data = await resp.json(content_type=None)
        return Answer(resp.status, resp.headers.get("x-bpool-profile", ""), data)


def assert_served(ans: Answer, prompt: str, profiles: tuple[str, ...] = LOGGED_IN) -> None:
    assert ans.status == 200, ans.data
    assert ans.profile in profiles
    assert ans.text == answer_for(ans.profile, prompt)  # the account named agrees with the header


def sim_records(bp: BrowserPool) -> list[dict[str, Any]]:
    return bp.sim.stats()["requests"]


# ---------------------------------------------------------------------------- rotation


async def test_sequential_requests_alternate_between_the_two_accounts(bp, http):
    bp.sim.config(tokens_per_s=50, first_token_s=0.2)  # the simulator's own pace
    profiles = []
    for i in range(10):
        prompt = f"request {i}: which account answers?"
        ans = await chat(http, bp, prompt)
        assert_served(ans, prompt)
        profiles.append(ans.profile)
    assert set(profiles) == set(LOGGED_IN)
    assert all(a != b for a, b in zip(profiles, profiles[1:])), profiles  # least recently used
    accounts = bp.sim.stats()["accounts"]
    assert {k: v["ok"] for k, v in accounts.items()} == {"alice@sim.test": 5, "bob@sim.test": 5}


async def test_more_concurrent_requests_than_browsers_never_share_one(bp, http):
    bp.sim.config(answer_s=0.6)  # long enough that a second job on a busy browser would overlap
    prompts = [f"concurrent {i}" for i in range(6)]
    answers = await asyncio.gather(*(chat(http, bp, p) for p in prompts))
    for ans, prompt in zip(answers, prompts):
        assert_served(ans, prompt)
    assert {a.profile for a in answers} == set(LOGGED_IN)
    stats = bp.sim.stats()
    assert {k: v["max_in_flight"] for k, v in stats["accounts"].items()} == \
        {"alice@sim.test": 1, "bob@sim.test": 1}
    recs = stats["requests"]
    assert len(recs) == 6 and all(r["outcome"] == "ok" for r in recs)
    for account in ("alice@sim.test", "bob@sim.test"):
        mine = sorted((r["start"], r["end"]) for r in recs if r["account"] == account)
        assert all(prev[1] <= nxt[0] for prev, nxt in zip(mine, mine[1:])), mine
    # ... and the two browsers did work at the same time.
    a = [r for r in recs if r["account"] == "alice@sim.test"]
    b = [r for r in recs if r["account"] == "bob@sim.test"]
    assert any(x["start"] < y["end"] and y["start"] < x["end"] for x in a for y in b)


# ---------------------------------------------------------------------------- streaming


async def test_openai_sdk_streams_chunks_as_the_studio_writes_them(bp):
    bp.sim.config(answer_s=3.0)  # the simulator spreads the answer's pieces over 3 s
    prompt = "stream this answer to me piece by piece, please, while it is still being written"
    async with sdk(bp) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, stream=True, messages=[{"role": "user", "content": prompt}])
        profile = raw.headers["x-bpool-profile"]
        arrivals: list[tuple[float, str]] = []
        finish = None
        async for chunk in raw.parse():
            for choice in chunk.choices:
                if choice.delta.content:
                    arrivals.append((time.time(), choice.delta.content))
                finish = choice.finish_reason or finish
    assert "".join(c for _, c in arrivals) == answer_for(profile, prompt)
    assert finish == "stop"
    assert len(arrivals) >= 5, arrivals
    (rec,) = sim_records(bp)
    assert rec["account"] == f"{profile}@sim.test" and rec["outcome"] == "ok"
    first, last = arrivals[0][0], arrivals[-1][0]
    # The first piece reached the client while the simulator was still writing the answer.
    assert first < rec["end"] - 1.0, (first, rec["end"])
    assert first < last - 1.0, (first, last)


# ---------------------------------------------------------------------------- accounts


async def test_logged_out_profile_is_reported_and_gets_no_requests(bp, http):
    workers = bp.health_workers()
    ghost = workers["ghost"]
    assert ghost["state"] == "logged_out", ghost
    assert ghost["last_error"] and ghost["last_error"].startswith("logged_out:"), ghost
    assert "not logged in" in ghost["last_error"]
    moved_before = bp.pool.health()[1]["counters"].get("jobs_moved", 0)
    prompts = [f"who serves {i}?" for i in range(4)]
    for ans, prompt in zip(await asyncio.gather(*(chat(http, bp, p) for p in prompts)), prompts):
        assert_served(ans, prompt)  # alice or bob, never ghost
    after = bp.health_workers()
    assert after["ghost"]["state"] == "logged_out" and after["ghost"]["jobs_served"] == 0
    assert bp.pool.health()[1]["counters"].get("jobs_moved", 0) == moved_before
    assert {r["account"] for r in sim_records(bp)} <= {"alice@sim.test", "bob@sim.test"}
    assert bp.pool[bp.worker("ghost")].alive()  # stays up so the operator can see why


async def test_account_over_quota_cools_down_and_the_other_serves(bp, http):
    # Each account may send 2 requests per 10 minutes. One answer held open on one browser
    # (60 s long, dropped by this test) lets the other use up its quota alone.
    bp.sim.config(quota=2, quota_window_s=600, answer_s=60)
    late: asyncio.Task[Answer] | None = None
    hold = await http.post(bp.pool.api_url + "/chat/completions",
                           json=body("hold this browser", stream=True))
    try:
        assert hold.status == 200
        held = hold.headers["x-bpool-profile"]  # headers come with the first piece of the answer
        other = next(p for p in LOGGED_IN if p != held)
        bp.sim.config(answer_s=0)
        for i in range(2):
            ans = await chat(http, bp, f"quota {i}")
            assert_served(ans, f"quota {i}", (other,))
        late = asyncio.create_task(chat(http, bp, "over quota"))
        def cooling(b: dict[str, Any]) -> dict[str, float]:  # for the model, not the account
            return next((w["cooling"] for w in b["workers"] if w["profile_id"] == other), {})
        body_ = await bp.pool.await_health(lambda b: MODEL in cooling(b), 30,
                                           f"{other} cooling for {MODEL} after a 429")
        w = next(w for w in body_["workers"] if w["profile_id"] == other)
        # the live page gets the quota as an error frame (code 8) inside a 200 body
        assert w["last_error"].startswith("rate_limited:") and "RESOURCE_EXHAUSTED" in w["last_error"], w
        assert 0 < w["cooling"][MODEL] <= 5
        assert not late.done()  # waiting for the held browser, not failed
    except BaseException:
        if late is not None:
            late.cancel()
        raise
    finally:
        hold.close()  # the client goes away: its job is cancelled and the browser freed
    assert late is not None
    ans = await asyncio.wait_for(late, 60)
    assert_served(ans, "over quota", (held,))
    accounts = bp.sim.stats()["accounts"]
    assert accounts[f"{other}@sim.test"]["ok"] == 2
    assert accounts[f"{other}@sim.test"]["errors"] >= 1  # the 429
    assert accounts[f"{held}@sim.test"]["ok"] == 1  # "over quota", after the dropped one
    counters = bp.pool.health()[1]["counters"]
    assert counters["jobs_moved"] >= 1
    # The cooldown ends by itself: both accounts are back in rotation.
    await bp.pool.await_states({other: "idle", held: "idle"}, 30)
    await bp.pool.await_health(lambda b: not any(w["cooling"] for w in b["workers"]), 30)


# ---------------------------------------------------------------------------- content


MARKDOWN = (
    "# Título — ünïcödé\n\n"
    "```python\ndef f(x):\n\treturn x[\"k\"] + '\\n'  # tab, quotes, backslash\n```\n\n"
    "| col | 列 | 🚀 |\n|---|:---:|--:|\n| a\\|b | 中文字符 | 👩‍👩‍👧‍👦 |\n\n"
    "> quote “curly” ‘single’ «guillemets» 「括弧」\n"
    "- [link](http://x.test/?a=1&b=<2>) **bold** _it_ `code`\n"
    "]],\"model\"] [[[null,\"x\"]]] {\"json\": [1, 2]} )]}'\n"
    "Ελληνικά русский עברית العربية हिन्दी 한국어 日本語 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🇺🇳 é (e + \u0301)\n"
    "    indented line\n\ntrailing spaces   "
)


async def test_unicode_and_markdown_survive_unchanged(bp, http):
    bp.sim.config(tokens_per_s=200, split="bytes")  # pieces cut inside UTF-8 characters
    ans = await chat(http, bp, MARKDOWN)
    assert_served(ans, MARKDOWN)
    async with sdk(bp) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, stream=True, messages=[{"role": "user", "content": MARKDOWN}])
        profile = raw.headers["x-bpool-profile"]
        pieces = [c.choices[0].delta.content async for c in raw.parse()
                  if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1
    assert "".join(pieces) == answer_for(profile, MARKDOWN)
    assert all(r["prompt_chars"] == len(MARKDOWN) for r in sim_records(bp))


async def test_100k_character_prompt_round_trips(bp, http):
    line = "Zeile {i}: ünïcödé ✓ 中文 🚀 [brackets]] {{braces}} \"quotes\" \\backslash\\ <tag> &amp;\n"
    prompt = "".join(line.format(i=i) for i in range(2000))[:100_000]
    assert len(prompt) == 100_000
    ans = await chat(http, bp, prompt)
    assert_served(ans, prompt)
    (rec,) = sim_records(bp)
    assert rec["prompt_chars"] == 100_000 and rec["outcome"] == "ok"


# ---------------------------------------------------------------------------- profiles


def test_corrupt_cookie_file_stops_its_worker_with_one_clear_line(bp, tmp_path):
    good = (bp.cookies / "alice.json").read_text()
    secret = json.loads(good)["cookies"][0]["value"]
    corrupt = tmp_path / "carol.json"
    corrupt.write_text(good[: len(good) // 2])  # cut off mid-file, as by a full disk
    corrupt.chmod(0o600)
    bp.start_worker(corrupt, "worker-carol")
    proc = bp.pool["worker-carol"]
    bp.pool.wait_until(lambda: proc.returncode is not None, 30, "the corrupt profile's worker to exit")
    assert proc.returncode == 78
    log = bp.pool.logs("worker-carol")
    lines = [ln for ln in log.splitlines() if "bpool.browser_proc:" in ln]
    assert len(lines) == 1, log
    assert str(corrupt) in lines[0] and "not valid JSON" in lines[0], lines[0]
    assert "Traceback" not in log and secret not in log
    assert "carol" not in bp.health_workers()
    assert not (bp.pool.run_dir / "browsers" / "carol").exists()  # no browser was started


# ---------------------------------------------------------------------------- shutdown (last)


def test_workers_stop_and_no_browser_outlives_them(bp):
    """SIGTERM: drained, exit 0, browser closed. SIGKILL of the worker's group: its browser (in a
    group of its own) must go too. Runs last: it stops the module's workers."""
    base = bp.pool.base_dir
    for profile in ("alice", "bob", "ghost"):
        assert browser_leftovers(base, profile), f"{profile} has no browser running"
    for profile in ("alice", "ghost"):
        assert bp.pool.terminate(bp.worker(profile), 30) == 0, bp.pool.logs(bp.worker(profile))
        assert not wait_no_leftovers(base, 10, profile), f"{profile}'s browser outlived it"
    bp.pool.kill(bp.worker("bob"))
    assert bp.pool[bp.worker("bob")].returncode == -signal.SIGKILL
    left = wait_no_leftovers(base, 15, "bob")
    assert not left, f"bob's browser outlived its SIGKILLed worker: {left}"
    bp.pool.wait_health(lambda b: not b.get("workers"), 15, "no workers left in /health")
