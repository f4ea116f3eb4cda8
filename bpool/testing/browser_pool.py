"""A whole pool with real Chromium workers against the studio simulator, for tests/integration/test_browser_pool.py.

`start_browser_pool(base)` runs, as members of one `bpool.testing.pool.Pool` (each in its own
process group, killed on close): the simulator, the broker, the HTTP front and one
`bpool.browser_proc` worker per profile. The simulator's accounts and cookie files are made first
with `python -m bpool.sim make-profiles` (`start_sim`, which other tests and the benchmarks
use too). `browser_leftovers(base)` finds any process still
running out of the pool's directory (a browser with its user-data dir there, or one tagged by the
worker that launched it), so a test module can prove that none outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bpool.config import REPO_ROOT
from bpool.worker import procs
from bpool.testing.pool import Pool

MODEL = "gemini-2.5-flash"
LOGGED_IN = ("alice", "bob")
LOGGED_OUT = ("ghost",)

# Knobs every test starts from: answers as fast as the sim can send them, no quota, no failures,
# and otherwise the realistic page (bpool/sim/README.md): every knob at its real-page default.
BASE_KNOBS = {"tokens_per_s": 0, "first_token_s": 0, "answer_s": 0, "split": "chars",
              "quota": 0, "quota_window_s": 60, "quota_kind": "burst", "require_token": True,
              "nesting": "nested", "metadata_chunk": True, "errors": "frame",
              "region_blocked": False, "transport": "xhr", "settings_panel": "collapsible",
              "run_button": "current", "prompt_box": "current", "temp_chat": "toggle",
              "welcome_dialog": True, "cookie_bar": True, "got_it": True, "per_user_quota": True,
              "count_tokens": True, "autosave": True}


def answer_for(profile: str, prompt: str) -> str:
    """What the simulator answers (bpool/sim/README.md): the account and the echoed prompt."""
    return f"Hello from {profile}@sim.test. You said: {prompt}"


class Sim:
    """The simulator's admin API (no auth; a local test site)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/__sim/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def config(self, **knobs: Any) -> dict[str, Any]:
        return self.admin("config", knobs)

    def stats(self) -> dict[str, Any]:
        return self.admin("stats")

    def fresh(self) -> None:
        """Forget stats, quota windows and failures; back to BASE_KNOBS."""
        self.admin("reset", {})
        self.admin("config", BASE_KNOBS)


@dataclass
class BrowserPool:
    pool: Pool
    sim: Sim
    cookies: Path

    def worker(self, profile: str) -> str:
        return f"worker-{profile}"

    def start_worker(self, profile_file: Path, name: str) -> None:
        self.pool.start_module(name, "bpool.browser_proc", "--profile", str(profile_file),
                               env={"BPOOL_STUDIO_URL": self.sim.url})

    def health_workers(self) -> dict[str, dict[str, Any]]:
        status, body = self.pool.health()
        assert isinstance(body, dict) and "workers" in body, f"/health answered {status}: {body}"
        return {w["profile_id"]: w for w in body["workers"]}


# The accounts of start_browser_pool: `make-profiles` arguments, one group per call.
ACCOUNTS = (("--names", ",".join(LOGGED_IN)), ("--names", ",".join(LOGGED_OUT), "--logged-out"))


def start_sim(pool: Pool, accounts: Sequence[Sequence[str]], *serve_args: str) -> Sim:
    """The simulator as the pool's member "sim", its data in `<base>/sim`, after one
    `make-profiles` per group of `accounts` arguments has written their cookie files to
    `<base>/cookies`. Returns once it listens."""
    sim_dir = pool.base_dir / "sim"
    env = {"BPOOL_SIM_DIR": str(sim_dir)}
    for args in accounts:
        subprocess.run([pool.python, "-m", "bpool.sim", "make-profiles",
                        "--out", str(pool.base_dir / "cookies"), *args],
                       check=True, env={**pool.env, **env}, cwd=REPO_ROOT, capture_output=True,
                       timeout=60)
    pool.start_module("sim", "bpool.sim", "serve", "--port", "0", *serve_args, env=env)
    url_file = sim_dir / "url"
    return Sim(pool.wait_until(lambda: url_file.exists() and url_file.read_text().strip(), 30,
                               "the simulator's url file"))


def start_browser_pool(base: Path, env: dict[str, str]) -> BrowserPool:
    """Sim + broker + front + one Chromium worker per profile (alice, bob, ghost); returns at once.

    The caller waits for the workers (`pool.wait_states`) and closes the pool."""
    pool = Pool(base, env=env)
    try:
        bp = BrowserPool(pool, start_sim(pool, ACCOUNTS), base / "cookies")
        bp.sim.fresh()
        pool.start_broker()
        pool.start_front()
        for profile in LOGGED_IN + LOGGED_OUT:
            bp.start_worker(bp.cookies / f"{profile}.json", bp.worker(profile))
        return bp
    except BaseException:
        pool.close()
        raise


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def browser_leftovers(base: Path, profile: str | None = None) -> dict[int, str]:
    """Live processes (not zombies) of the pool in `base`, or of one profile's browser: those whose
    command line mentions the directory (a browser's --user-data-dir lives under
    `<base>/run/browsers/<profile>/`) or that a worker tagged as its browser's; pid -> cmdline."""
    found: dict[int, str] = {}
    browsers = base / "run" / "browsers"
    if profile is not None:
        tags, needle = [str(browsers / profile)], str(browsers / profile)
    else:
        tags = [str(d) for d in browsers.iterdir()] if browsers.is_dir() else []
        needle = str(base)
    for tag in tags:
        for pid in procs.find_tagged(tag):
            found[pid] = _cmdline(pid)
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            cmd = _cmdline(int(name))
            if needle in cmd:
                found[int(name)] = cmd
    return {pid: cmd for pid, cmd in found.items() if procs.alive(pid)}


def wait_no_leftovers(base: Path, timeout_s: float, profile: str | None = None
                      ) -> dict[int, str]:
    """Poll until `browser_leftovers` finds nothing; returns what is still there at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = browser_leftovers(base, profile)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def kill_leftovers(left: dict[int, str]) -> None:
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
