"""Rate limits per account and model, with real processes: broker, front and fake workers, the
client being the official openai SDK. One account rate-limited for model A still serves B; when
every account for A rests the client gets a 429 at once with the soonest reset as Retry-After;
the cool-downs survive a kill -9 of the broker."""

from __future__ import annotations

import json
import stat

import openai
import pytest
from openai import AsyncOpenAI

from bpool.testing.pool import Pool
from support import PoolFactory, records

KEY = "sk-cooldown-test"
A, B = "gemini-a", "gemini-b"
MODELS = ["--models", f"{A},{B}"]


def client(pool: Pool) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=pool.api_url, api_key=KEY, max_retries=0, timeout=30)


async def ask(pool: Pool, model: str, text: str = "hi") -> str:
    """One answer through the SDK; the profile that served it."""
    async with client(pool) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}])
        profile = raw.headers["x-bpool-profile"]
        assert raw.parse().choices[0].message.content == f"fake answer from {profile} to: {text}"
    return profile


async def refused(pool: Pool, model: str) -> openai.RateLimitError:
    async with client(pool) as c:
        with pytest.raises(openai.RateLimitError) as info:
            await c.chat.completions.create(model=model,
                                            messages=[{"role": "user", "content": "hi"}])
    return info.value


def cooling(body: dict, profile: str) -> dict[str, float]:
    return next((w["cooling"] for w in body.get("workers", ()) if w["profile_id"] == profile), {})


async def test_a_rate_limit_rests_one_model_and_survives_a_broker_restart(
        make_pool: PoolFactory) -> None:
    pool = make_pool({"lim": [*MODELS, "--rate-limited-model", A, "--cooldown-s", "600"],
                      "ok": MODELS}, env={"BPOOL_API_KEYS": KEY})
    # Within two requests for A the LRU rotation gives one to "lim", which fails it as
    # rate-limited before any output: it moves to "ok", so the client never sees it.
    assert [await ask(pool, A, f"a{i}") for i in range(2)] == ["ok", "ok"]
    body = await pool.await_health(lambda b: A in cooling(b, "lim"), what="lim cooling for A")
    assert 480 < cooling(body, "lim")[A] <= 600 and cooling(body, "ok") == {}
    assert pool.worker_states(body) == {"lim": "idle", "ok": "idle"}
    usage = {(u["profile_id"], u["model"]): u for u in body["usage"]}
    assert usage["lim", A]["errors"] == {"rate_limited": 1} and usage["ok", A]["requests"] == 2

    # A keeps going to "ok" although "lim" is idle; B uses both.
    assert {await ask(pool, A, f"more a{i}") for i in range(3)} == {"ok"}
    assert {await ask(pool, B, f"b{i}") for i in range(4)} == {"lim", "ok"}

    # "ok" comes back with a quota of its own for A, shorter than lim's: every account for A
    # rests, and the client is told at once when the first one is back.
    pool.kill("worker-ok")
    pid = pool.start_fake_worker("ok", "--record", str(pool.base_dir / "jobs.jsonl"), *MODELS,
                                 "--rate-limited-model", A, "--cooldown-s", "120").pid
    await pool.await_health(lambda b: [(w["pid"], w["state"]) for w in b["workers"]
                                       if w["profile_id"] == "ok"] == [(pid, "idle")],
                            what="the new ok registered, the old one gone")
    err = await refused(pool, A)
    assert err.code == "rate_limited" and err.response.headers["Retry-After"] == "120"
    err = await refused(pool, A)  # nobody tried this time: a 429 straight from the broker
    assert 60 <= int(err.response.headers["Retry-After"]) <= 120
    assert await ask(pool, B) in ("lim", "ok")
    tried = len([r for r in records(pool) if r["model"] == A])

    # kill -9 of the broker: the cool-downs are in the run directory, and the workers that
    # register with the new broker are still cooling for A (and for A only).
    saved = pool.run_dir / "cooldowns.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert set(json.loads(saved.read_text())["cooldowns"]) == {"lim", "ok"}
    old = (await pool.await_health(lambda b: True))["broker_id"]
    pool.kill("broker")
    pool.start_broker()
    body = await pool.await_health(
        lambda b: b.get("broker_id") not in (None, old) and b.get("idle") == 2,
        timeout_s=60, what="both workers idle at the new broker")
    assert 360 < cooling(body, "lim")[A] < 600 and 0 < cooling(body, "ok")[A] < 120
    err = await refused(pool, A)
    # ok's, the soonest (lim's would be near 600). Whole seconds rounded up: with a little under
    # 120 s left, as when the restart was quick, the header says 120.
    assert 1 <= int(err.response.headers["Retry-After"]) <= 120
    assert len([r for r in records(pool) if r["model"] == A]) == tried  # no worker was tried
    assert await ask(pool, B) in ("lim", "ok")
