"""Process lifetime: nothing of a pool outlives its supervisord, and a new start takes over.

A real supervisord runs the real supervisord.conf with fake workers (bpool.testing.fake_worker,
no browser); a `kill -9` of supervisord must take every program with it, and the next start must
come up whole (the broker's lock, the front's port and every profile's lock free again).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from bpool.ops import lifeline
from bpool.worker import procs
from bpool.testing.supervised import SupervisedPool, marked_pids, serving_again

pytestmark = [pytest.mark.timeout(240), pytest.mark.supervisord]

FAKE = "{python} -m bpool.testing.fake_worker --profile-id {profile_id} --chunks 3"


def environ(pid: int) -> set[str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return {e.decode(errors="replace").split("=", 1)[0] for e in raw.split(b"\0") if e}


def live(pids: list[int]) -> list[int]:
    return [p for p in pids if procs.alive(p)]


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[SupervisedPool]:
    p = SupervisedPool(tmp_path, simulator="off", env={
        "BPOOL_WORKER_CMD": FAKE, "BPOOL_CURVE_DIR": str(tmp_path / "curve-secrets")})
    try:
        for name in ("alice", "bob"):  # fake workers only need a valid file
            f = p.cookies / f"{name}.json"
            f.write_text(json.dumps({"cookies": [
                {"name": "SID", "value": "v", "domain": "127.0.0.1"}], "origins": []}))
            f.chmod(0o600)
        yield p
    finally:
        survivors = p.close()
        assert survivors == [], f"processes outlived supervisord: {survivors}"


def all_running(pool: SupervisedPool) -> dict[str, dict] | None:
    infos = pool.infos()
    want = {"broker", "front", "browser-alice", "browser-bob"}
    return infos if want <= set(infos) and all(
        infos[n]["statename"] == "RUNNING" for n in want) else None


def test_kill_9_of_supervisord_takes_every_program_with_it(pool: SupervisedPool) -> None:
    pool.start()
    pool.wait_in_rotation({"alice", "bob"}, timeout_s=30)
    infos = pool.wait_until(lambda: all_running(pool), 30, "every program RUNNING")
    assert pool.proc is not None
    children = [i["pid"] for i in infos.values() if i["pid"]]
    everything = [p for p in marked_pids(pool.marker) if p != pool.proc.pid]
    assert set(children) <= set(everything)

    os.kill(pool.proc.pid, signal.SIGKILL)
    pool.proc.wait(10)
    left = pool.wait_until(lambda: not live(everything) or None, 20,
                           "every program of the killed supervisord to exit")
    assert left is True

    # The next start takes over: the broker's lock, the port and the profile locks are free.
    pool.start()
    pool.wait_until(lambda: all_running(pool), 30, "every program RUNNING again")
    pool.wait_in_rotation({"alice", "bob"}, timeout_s=30)
    res = asyncio.run(serving_again(pool, 30))
    assert res.ok, res
    assert res.profile in ("alice", "bob")
    new = [i["pid"] for i in pool.infos().values() if i["pid"]]
    assert not set(new) & set(children)


def test_programs_get_only_the_secrets_they_need(pool: SupervisedPool) -> None:
    pool.start()
    infos = pool.wait_until(lambda: all_running(pool), 30, "every program RUNNING")
    envs = {n: environ(i["pid"]) for n, i in infos.items()}
    assert "BPOOL_CURVE_DIR" in envs["broker"]
    assert "BPOOL_CURVE_DIR" not in envs["front"]
    for name in ("browser-alice", "browser-bob"):
        assert "BPOOL_CURVE_DIR" not in envs[name], name
        assert lifeline.POOL_MARK in envs[name]


def _spawn(code: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL)


STUBBORN = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(600)\n")


def test_a_start_reaps_what_a_dead_supervisord_left(pool: SupervisedPool, tmp_path: Path
                                                    ) -> None:
    """Left-overs that survived their parent anyway (one that ignores SIGTERM, a browser of a
    SIGKILLed worker in its own process group) are stopped before the new pool starts; a
    process of another pool is not touched."""
    run = os.path.realpath(pool.run_dir)
    base = {k: v for k, v in os.environ.items() if not k.startswith("BPOOL_")}
    program = _spawn(STUBBORN, {**base, lifeline.POOL_MARK: run})
    browser = _spawn(STUBBORN, {**base, procs.OWNER_ENV: f"{run}/browsers/alice"})
    other = _spawn(STUBBORN, {**base, lifeline.POOL_MARK: str(tmp_path / "elsewhere" / "run")})
    try:
        for p, key in ((program, lifeline.POOL_MARK), (browser, procs.OWNER_ENV),
                       (other, lifeline.POOL_MARK)):
            pool.wait_until(lambda p=p, key=key: key in environ(p.pid), 10,
                            "the left-over to start")
        out = pool.bpool("profiles", "sync", "--render-only", check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "left running by a supervisord that is gone" in out.stdout
        for p in (program, browser):
            assert p.wait(15) == -signal.SIGKILL  # TERM was ignored: killed after the grace
        assert other.poll() is None
        pool.start()
        pool.wait_in_rotation({"alice", "bob"}, timeout_s=30)
        # With supervisord running, a sync reaps nothing: the pool's programs are not orphans.
        before = pool.pids()
        again = pool.bpool("profiles", "sync")
        assert "gone" not in again.stdout
        assert pool.pids() == before
    finally:
        for p in (program, browser, other):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_lifeline_passes_the_parent_death_signal_on_and_scrubs(tmp_path: Path) -> None:
    """The lifeline execs its command (same pid) with SIGTERM armed for its parent's death."""
    env = {**os.environ, "BPOOL_API_KEYS": "k-123456", "BPOOL_API_KEYS_FILE": "/f",
           "BPOOL_CURVE_DIR": "/c", "BPOOL_RUN_DIR": str(tmp_path)}
    pidfile = tmp_path / "child.pid"
    # A parent that starts the lifeline and then waits forever; we kill the parent.
    child_code = (f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
                  "time.sleep(600)")
    parent_code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-m', 'bpool.ops.lifeline', '--keep', "
        f"'BPOOL_API_KEYS_FILE', '--', sys.executable, '-c', {child_code!r}])\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=env,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while not (pidfile.exists() and pidfile.read_text()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pidfile.read_text())
        names = environ(child)
        assert "BPOOL_API_KEYS" not in names and "BPOOL_CURVE_DIR" not in names
        assert "BPOOL_API_KEYS_FILE" in names and lifeline.POOL_MARK in names
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while procs.alive(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.05)
    finally:
        os.killpg(parent.pid, signal.SIGKILL) if parent.poll() is None else None
        if pidfile.exists() and pidfile.read_text():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.chromium
def test_kill_9_of_supervisord_takes_the_browsers_too(tmp_path: Path) -> None:
    """Real Chromium workers on the simulator: each worker gets SIGTERM from the kernel and
    closes its browser, which runs in a process group of its own."""
    from bpool.testing.supervised import browser_pids

    with SupervisedPool(tmp_path, simulator="on") as pool:
        pool.make_profiles("alice")
        pool.start(timeout_s=60)
        pool.wait_in_rotation({"alice"}, timeout_s=120)
        assert pool.proc is not None
        browsers = browser_pids(pool.run_dir, "alice")
        assert browsers, "no browser process found for alice"
        everything = [p for p in marked_pids(pool.marker) if p != pool.proc.pid] + browsers
        os.kill(pool.proc.pid, signal.SIGKILL)
        pool.proc.wait(10)
        pool.wait_until(lambda: not live(everything), 40,
                        "the programs and the browser of the killed supervisord to exit")
        assert pool.close() == []
