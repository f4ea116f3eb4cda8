"""Small process helpers for the benchmarks: start `python -m ...` children in their own process
groups, wait for a condition, and kill every group on the way out."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    def __init__(self, run_dir: Path, env: dict[str, str] | None = None):
        self.run_dir = run_dir
        self.env = dict(os.environ, BPOOL_RUN_DIR=str(run_dir), **(env or {}))
        self.children: list[subprocess.Popen] = []
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.run_dir / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, *args], env=dict(self.env, **(env or {})),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.children.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.children:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.children:
            proc.wait()
        self.children.clear()

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 still carries the pool details
        return json.loads(exc.read())


def ready_workers(port: int) -> int:
    workers = health(port).get("workers", [])
    return sum(1 for w in workers if w.get("state") in ("idle", "busy"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
