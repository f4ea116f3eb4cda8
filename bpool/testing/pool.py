"""A harness that runs a whole pool as real processes, for tests, benchmarks and smoke checks.

    with Pool(tmp_path, env={"BPOOL_HEARTBEAT_INTERVAL_S": "0.5"}) as pool:
        pool.start_broker()
        pool.start_front()
        for name in ("a", "b", "c"):
            pool.start_fake_worker(name, "--chunks", "3")
        pool.wait_idle(3)
        ... talk to pool.base_url / pool.api_url ...
        pool.kill("worker-a")             # SIGKILL to the process group
        pool.pause("broker"); pool.resume("broker")
        pool.restart("broker")            # same argv/env, new pid

Every process runs in its own session (so its own process group, which is what gets signalled:
a browser worker's children go down with it), with stdout+stderr in `<base>/logs/<name>.log`, a
private `BPOOL_RUN_DIR` (mode 0700) and a free loopback port for the front. `close()` kills every
group; it runs on `with` exit and is safe to call twice. Inherited `BPOOL_*` variables are dropped
so a developer's shell cannot leak into a test pool.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from bpool.front.settings import load_api_keys
from bpool.config import REPO_ROOT, ensure_private_dir

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on right now (small race: fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll_until(check: Callable[[], T | None], timeout_s: float, what: str,
               failure: Callable[[str], Exception], interval_s: float = 0.05) -> T:
    """Call `check` until it returns something truthy and return that; past the deadline raise
    `failure("timed out after ... waiting for <what>")`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise failure(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    history: list[int] = field(default_factory=list)  # pids of earlier incarnations

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


class PoolTimeout(AssertionError):
    """A condition was not met in time (an AssertionError so pytest shows it as a failure)."""


class Pool:
    def __init__(
        self, base_dir: Path, *, env: dict[str, str] | None = None, port: int | None = None,
        python: str = sys.executable,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.run_dir = ensure_private_dir(self.base_dir / "run")
        self.log_dir = self.base_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.python = python
        self.procs: dict[str, Proc] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BPOOL_")}
        self.env.update({
            "BPOOL_RUN_DIR": str(self.run_dir),
            "BPOOL_HOST": "127.0.0.1",
            "BPOOL_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        })
        self.env.update(env or {})

    # -------------------------------------------------------------------- addresses

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What an OpenAI client takes as base_url."""
        return f"{self.base_url}/v1"

    # -------------------------------------------------------------------- processes

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start any command as a named member of the pool (its own process group)."""
        if name in self.procs and self.procs[name].alive():
            raise ValueError(f"{name} is already running")
        proc = Proc(name, list(argv), {**self.env, **(env or {})}, self.log_dir / f"{name}.log")
        if name in self.procs:
            proc.history = self.procs[name].history + [self.procs[name].pid]
        self._spawn(proc)
        self.procs[name] = proc
        return proc

    def _spawn(self, proc: Proc) -> None:
        with proc.log_path.open("ab") as log:
            log.write(f"--- start {' '.join(proc.argv)}\n".encode())
            log.flush()
            proc.popen = subprocess.Popen(
                proc.argv, env=proc.env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def start_module(self, name: str, module: str, *args: str,
                     env: dict[str, str] | None = None) -> Proc:
        return self.start(name, [self.python, "-m", module, *args], env)

    def start_broker(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.start_module("broker", "bpool.broker", *args, env=env)

    def start_front(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.start_module("front", "bpool.http_front", *args, env=env)

    def start_fake_worker(self, profile_id: str, *args: str, env: dict[str, str] | None = None,
                          name: str | None = None) -> Proc:
        return self.start_module(name or f"worker-{profile_id}", "bpool.testing.fake_worker",
                                 "--profile-id", profile_id, *args, env=env)

    def __getitem__(self, name: str) -> Proc:
        return self.procs[name]

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].signal_group(sig)

    def kill(self, name: str, timeout_s: float = 5.0) -> None:
        """SIGKILL the process group and reap the process."""
        proc = self.procs[name]
        proc.signal_group(signal.SIGKILL)
        if proc.popen is not None:
            proc.popen.wait(timeout_s)

    def pause(self, name: str) -> None:
        self.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)

    def terminate(self, name: str, timeout_s: float = 10.0) -> int:
        """SIGTERM (the graceful path) and wait for the exit code; SIGKILL if it hangs."""
        proc = self.procs[name]
        proc.signal_group(signal.SIGTERM)
        assert proc.popen is not None
        try:
            return proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill(name)
            raise PoolTimeout(f"{name} ignored SIGTERM for {timeout_s} s") from None

    def restart(self, name: str) -> Proc:
        """Kill (if alive) and start again with the same command and environment."""
        old = self.procs[name]
        if old.alive():
            self.kill(name)
        return self.start(name, old.argv, {k: v for k, v in old.env.items()
                                           if self.env.get(k) != v})

    def close(self) -> None:
        for proc in self.procs.values():
            proc.signal_group(signal.SIGKILL)  # also ends SIGSTOPped groups
        for proc in self.procs.values():
            if proc.popen is not None:
                try:
                    proc.popen.wait(10)
                except subprocess.TimeoutExpired:
                    pass

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def logs(self, name: str) -> str:
        path = self.procs[name].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for name, proc in self.procs.items():
            tail = "\n".join(self.logs(name).splitlines()[-lines:])
            out.append(f"===== {name} (pid {proc.popen.pid if proc.popen else '-'}, "
                       f"exit {proc.returncode}) =====\n{tail}")
        return "\n".join(out)

    # -------------------------------------------------------------------- waiting

    def get(self, path: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0
            ) -> tuple[int, Any]:
        """GET a front path; (status, parsed JSON or None). Connection errors give (0, None)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
        except OSError:
            return 0, None
        finally:
            conn.close()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, None

    def health(self) -> tuple[int, Any]:
        # With keys configured, /health shows worker details only to a caller with a key.
        keys = load_api_keys(self.env.get("BPOOL_API_KEYS", ""), "")
        return self.get("/health", {"Authorization": f"Bearer {keys[0]}"} if keys else None)

    def wait_until(self, check: Callable[[], T | None], timeout_s: float, what: str,
                   interval_s: float = 0.05) -> T:
        """Poll `check` until it returns something truthy; PoolTimeout (with log tails) if not."""
        return poll_until(check, timeout_s, what, lambda msg: PoolTimeout(
            f"{msg}\n{self.log_tails()}"), interval_s)

    def wait_health(self, check: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0,
                    what: str = "a /health condition") -> dict[str, Any]:
        """Wait until /health's JSON satisfies `check`; returns that JSON."""
        def probe() -> dict[str, Any] | None:
            status, body = self.health()
            return body if isinstance(body, dict) and check(body) else None
        return self.wait_until(probe, timeout_s, what, interval_s=0.1)

    def worker_states(self, body: dict[str, Any]) -> dict[str, str]:
        return {w["profile_id"]: w["state"] for w in body.get("workers", ())}

    def wait_idle(self, n: int, timeout_s: float = 20.0) -> dict[str, Any]:
        """Wait until at least `n` workers are idle, as /health reports them."""
        return self.wait_health(
            lambda b: list(self.worker_states(b).values()).count("idle") >= n, timeout_s,
            f"{n} idle worker(s) in /health")

    def wait_states(self, states: dict[str, str], timeout_s: float = 20.0) -> dict[str, Any]:
        """Wait until the named profiles are in the given states (others may be anything)."""
        def ok(body: dict[str, Any]) -> bool:
            now = self.worker_states(body)
            return all(now.get(p) == s for p, s in states.items())
        return self.wait_health(ok, timeout_s, f"worker states {states}")

    async def await_until(self, check: Callable[[], T | None], timeout_s: float,
                          what: str) -> T:
        """`wait_until` for async code: polls in a thread so the event loop keeps running."""
        return await asyncio.to_thread(self.wait_until, check, timeout_s, what)

    async def await_health(self, check: Callable[[dict[str, Any]], bool],
                           timeout_s: float = 15.0, what: str = "a /health condition"
                           ) -> dict[str, Any]:
        return await asyncio.to_thread(self.wait_health, check, timeout_s, what)

    async def await_idle(self, n: int, timeout_s: float = 20.0) -> dict[str, Any]:
        return await asyncio.to_thread(self.wait_idle, n, timeout_s)

    async def await_states(self, states: dict[str, str], timeout_s: float = 20.0
                           ) -> dict[str, Any]:
        return await asyncio.to_thread(self.wait_states, states, timeout_s)
