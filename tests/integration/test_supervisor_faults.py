"""Faults under a real supervisord: the simulator, real Chromium, the real supervisord.conf.

One pool for the module (bpool.testing.supervised): a scratch directory with a copy of
supervisord.conf, the simulator as a sync-generated program, and two accounts (alice, bob)
logged in at it. The tests kill, stop, pause and swap workers while clients stream, and check
what the clients see, what /health says, and which processes supervisord restarted. At the end
every process of the pool, browsers included, must be gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from bpool.testing.supervised import (
    ChatResult, SupervisedPool, browser_pids, one_stream_each, serving_again, steady_load,
    stream_chat,
)

pytestmark = [pytest.mark.timeout(150), pytest.mark.supervisord, pytest.mark.chromium]

LONG = " ".join(["stream"] * 300)  # about 6 s of answer at 50 tokens/s
FAST = {"idle", "busy"}


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisedPool]:
    base = Path(tmp_path_factory.mktemp("faults"))
    p = SupervisedPool(base, simulator="on", env={
        "BPOOL_SIM_TOKENS_PER_S": "50",
        "BPOOL_DRAIN_TIMEOUT_S": "20",
        "BPOOL_BROWSER": "chromium",
    })
    try:
        p.make_profiles("alice", "bob")
        p.start()
        p.wait_in_rotation({"alice", "bob"}, timeout_s=90)
        yield p
    finally:
        survivors = p.close()
        left = browser_pids(p.run_dir)
        assert survivors == [] and left == [], (
            f"processes outlived supervisord's shutdown: {survivors}, browsers: {left}")


def entry(pool: SupervisedPool, profile: str) -> dict[str, Any]:
    return pool.workers().get(profile, {})


def untouched(pool: SupervisedPool, before: dict[str, dict], names: list[str]) -> None:
    now = pool.infos()
    for n in names:
        assert (now[n]["pid"], now[n]["start"]) == (before[n]["pid"], before[n]["start"]), n


WAIT_S = 60.0  # generous: these only tell "happened by itself" from "never"


async def until(pool: SupervisedPool, check: Any, timeout_s: float, what: str) -> Any:
    return await asyncio.to_thread(pool.wait_until, check, timeout_s, what, 0.05)


async def served_by(pool: SupervisedPool, profile: str, timeout_s: float = 30) -> ChatResult:
    """Pairs of requests until `profile` serves one (with both idle, each gets one of a pair)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        pair = await asyncio.gather(*(stream_chat(pool.base_url, "who are you?")
                                      for _ in range(2)))
        mine = next((r for r in pair if r.ok and r.profile == profile), None)
        if mine is not None:
            return mine
    raise AssertionError(f"{profile} served nothing within {timeout_s} s\n{pool.diagnostics()}")


# ---------------------------------------------------------------------------- the tests


def test_first_run_with_no_cookie_file_is_demo_mode(tmp_path: Path) -> None:
    """What `scripts/run` does on a fresh checkout: no cookie file, so sync generates the
    simulator and two demo profiles, and real browsers answer through it. Runs before the
    module's pool starts, so only two browsers run at a time."""
    demo = SupervisedPool(tmp_path, simulator="auto")
    try:
        demo.start()
        assert set(demo.infos()) == {"broker", "front", "sim", "browser-alice", "browser-bob"}
        demo.wait_in_rotation({"alice", "bob"}, timeout_s=90)
        res = asyncio.run(stream_chat(demo.base_url, "hello"))
        assert res.ok and res.text.startswith(f"Hello from {res.profile}@sim.test"), res
        assert not any(demo.cookies.iterdir())  # demo profiles never go into the cookie dir
    finally:
        assert demo.close() == []
    assert browser_pids(demo.run_dir) == []



async def test_stop_and_start_of_one_profile_shows_in_health(pool: SupervisedPool) -> None:
    await asyncio.to_thread(pool.wait_in_rotation, {"alice", "bob"}, 60)
    before = pool.infos()
    assert browser_pids(pool.run_dir, "bob")
    t0 = time.monotonic()
    stopped = await asyncio.to_thread(pool.supervisorctl, "stop", "browser-bob")
    assert "stopped" in stopped.stdout
    # How fast is bench-faults' number; here only that it happens (a 3 s bound failed on a
    # loaded 2-core machine).
    await until(pool, lambda: "bob" not in pool.workers(), WAIT_S, "bob out of /health")
    gone_s = time.monotonic() - t0
    assert pool.infos()["browser-bob"]["exitstatus"] == 0  # a graceful exit, not a kill
    assert browser_pids(pool.run_dir, "bob") == []  # its browser went with it
    res = await stream_chat(pool.base_url, "only alice now")
    assert res.ok and res.profile == "alice", res
    t0 = time.monotonic()
    started = await asyncio.to_thread(pool.supervisorctl, "start", "browser-bob")
    assert "started" in started.stdout  # returns once supervisord counts it as running (5 s)
    t1 = time.monotonic()
    await until(pool, lambda: entry(pool, "bob").get("state") in FAST, WAIT_S,
                "bob back in /health")
    print(f"supervisorctl stop: out of /health {gone_s:.2f} s after the command; start: in "
          f"/health {time.monotonic() - t1:.2f} s after it returned "
          f"({time.monotonic() - t0:.2f} s after it was issued)")
    untouched(pool, before, ["broker", "front", "sim", "browser-alice"])


async def test_sigstop_takes_a_worker_out_and_sigcont_brings_it_back(
        pool: SupervisedPool) -> None:
    await asyncio.to_thread(pool.wait_in_rotation, {"alice", "bob"}, 60)
    before = pool.infos()
    bob = entry(pool, "bob")
    os.kill(bob["pid"], signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        await until(pool, lambda: entry(pool, "bob").get("state") not in FAST, 4,
                    "the stopped bob out of rotation within 4 s")
        print(f"SIGSTOP: out of rotation after {time.monotonic() - t0:.2f} s")
        res = await stream_chat(pool.base_url, "bob is asleep")
        assert res.ok and res.profile == "alice", res
    finally:
        os.kill(bob["pid"], signal.SIGCONT)
    await until(pool, lambda: entry(pool, "bob").get("state") in FAST, 20, "bob back")
    untouched(pool, before, ["broker", "front", "sim", "browser-alice"])
    assert (await served_by(pool, "bob")).ok


async def test_kill_9_of_a_busy_worker(pool: SupervisedPool) -> None:
    before = pool.infos()
    streams = await one_stream_each(pool, {"alice", "bob"}, LONG)
    victim = entry(pool, "alice")
    old_browsers = set(browser_pids(pool.run_dir, "alice"))
    assert victim["state"] == "busy" and old_browsers
    killed_at = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    # Noticed by heartbeats, not the 900 s job timeout (how fast: bench-faults).
    mine = await asyncio.wait_for(streams["alice"], WAIT_S)
    assert not mine.ok and mine.error is not None and "worker_died" in mine.error, mine
    other = await streams["bob"]  # the other client is unaffected
    assert other.ok and other.text.startswith("Hello from bob@sim.test"), other
    assert len(other.text) > len(LONG)  # the whole answer, not a cut-off one
    back = await until(pool, lambda: (e := entry(pool, "alice")).get("pid") not in (
        None, victim["pid"]) and e["state"] in FAST and e, 60, "alice restarted")
    assert pool.infos()["browser-alice"]["pid"] == back["pid"]
    assert not old_browsers & set(browser_pids(pool.run_dir))  # the orphaned browser was reaped
    back_at = time.monotonic()
    served = await served_by(pool, "alice")
    assert served.text.startswith("Hello from alice@sim.test"), served
    print(f"worker kill -9: client error after {mine.ended_at - killed_at:.2f} s, back in "
          f"rotation after {back_at - killed_at:.2f} s, served after "
          f"{served.ended_at - killed_at:.2f} s")
    untouched(pool, before, ["broker", "front", "sim", "browser-bob"])


async def test_kill_9_of_the_broker(pool: SupervisedPool) -> None:
    await asyncio.to_thread(pool.wait_in_rotation, {"alice", "bob"}, 60)
    before = pool.infos()
    killed_at = time.monotonic()
    os.kill(before["broker"]["pid"], signal.SIGKILL)
    respawned = await until(pool, lambda: pool.infos()["broker"]["pid"] not in (
        0, before["broker"]["pid"]) and time.monotonic(), WAIT_S, "broker respawned")
    # That it serves again by itself; how fast is bench-faults' "serving again" number (a 5 s
    # bound here failed on a loaded 2-core machine).
    res = await serving_again(pool, WAIT_S)
    print(f"broker kill -9: respawned after {respawned - killed_at:.2f} s, serving again after "
          f"{res.ended_at - killed_at:.2f} s")
    assert res.ok, res
    assert pool.infos()["broker"]["pid"] not in (0, before["broker"]["pid"])
    untouched(pool, before, ["front", "sim", "browser-alice", "browser-bob"])


async def test_hot_swap_under_steady_load(pool: SupervisedPool, tmp_path: Path) -> None:
    pool.make_profiles("carol", out=tmp_path)
    before = pool.infos()
    # alice is streaming when the swap starts
    streams = await one_stream_each(pool, {"alice", "bob"}, LONG)
    old_browsers = set(browser_pids(pool.run_dir, "alice"))
    stop, results = asyncio.Event(), []
    load = asyncio.create_task(steady_load(pool.base_url, 3, stop, results=results))
    t0 = time.monotonic()
    swapped = await asyncio.to_thread(pool.script, "swap-cookie", "alice",
                                      str(tmp_path / "carol.json"))
    print(f"swap-cookie under load (drains a streaming request): {time.monotonic() - t0:.2f} s")
    assert swapped.returncode == 0, swapped.stdout + swapped.stderr
    during = await streams["alice"]
    assert during.ok and during.text.startswith("Hello from alice@sim.test"), during
    n = len(results)
    await until(pool, lambda: len(results) >= n + 6, 60, "more requests after the swap")
    stop.set()
    await load
    assert (await streams["bob"]).ok
    assert [r for r in results if not r.ok] == [] and len(results) >= 6
    assert entry(pool, "alice")["account"] == "carol@sim.test"
    assert old_browsers and not old_browsers & set(browser_pids(pool.run_dir))
    served = await served_by(pool, "alice")
    assert served.text.startswith("Hello from carol@sim.test"), served
    untouched(pool, before, ["broker", "front", "sim", "browser-bob"])


async def test_sync_adds_and_removes_a_profile_under_load(pool: SupervisedPool) -> None:
    await asyncio.to_thread(pool.wait_in_rotation, {"alice", "bob"}, 60)
    before = pool.infos()
    stop, results = asyncio.Event(), []
    load = asyncio.create_task(steady_load(pool.base_url, 3, stop, results=results))
    pool.make_profiles("dave")
    added = await asyncio.to_thread(pool.bpool, "profiles", "sync")
    assert "started browser-dave" in added.stdout, added.stdout
    await until(pool, lambda: any(r.profile == "dave" and r.ok for r in results), 90,
                "dave serving")
    (pool.cookies / "dave.json").unlink()
    removed = await asyncio.to_thread(pool.bpool, "profiles", "sync")
    assert "stopped browser-dave" in removed.stdout, removed.stdout
    assert "browser-dave" not in pool.infos()
    await until(pool, lambda: "dave" not in pool.workers(), 3, "dave out of /health")
    assert browser_pids(pool.run_dir, "dave") == []
    n = len(results)
    await until(pool, lambda: len(results) >= n + 3, 30, "more requests after the removal")
    stop.set()
    await load
    assert [r for r in results if not r.ok] == []
    untouched(pool, before, ["broker", "front", "sim", "browser-alice", "browser-bob"])
