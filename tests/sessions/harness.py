"""A pool for browser-session tests: broker (with its session placement), front and session
hosts as real processes; one per test module (Chromium is the expensive part)."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bpool.testing.pool import Pool
from bpool.worker import procs

KEY = "sk-session-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ENV = {"BPOOL_HEARTBEAT_INTERVAL_S": "0.5", "BPOOL_HEARTBEAT_LIVENESS": "3",
       "BPOOL_LOG_LEVEL": "INFO", "BPOOL_API_KEYS": KEY, "BPOOL_SESSION_START_TIMEOUT_S": "60"}


class SessionPool(Pool):
    def __init__(self, base_dir: Path, hosts: dict[str, int], env: dict[str, str] | None = None):
        super().__init__(base_dir, env={**ENV, **(env or {})})
        self.host_caps = hosts
        self.start_broker()
        self.start_front()
        for name, cap in hosts.items():
            self.start_host(name, cap)
        self.wait_hosts(len(hosts))

    def start_host(self, name: str, capacity: int) -> None:
        self.start_module(name, "bpool.session_host", "--host-id", name,
                          "--capacity", str(capacity))

    def host_tag(self, name: str) -> str:
        return str(self.run_dir / "sessions" / name)

    def browsers_of(self, name: str) -> list[int]:
        """Live processes a host's browsers run as (tagged at launch)."""
        return [p for p in procs.find_tagged(self.host_tag(name)) if procs.alive(p)]

    def metrics(self) -> str:
        status, text = self.request("GET", "/metrics", raw=True)
        return text if status == 200 else ""

    def wait_hosts(self, n: int, timeout_s: float = 60) -> None:
        self.wait_until(lambda: f"bpool_session_hosts {float(n)}" in self.metrics(), timeout_s,
                        f"{n} session hosts registered")

    def request(self, method: str, path: str, body: Any = None, *, headers: dict | None = None,
                raw: bool = False, timeout_s: float = 90) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else (
            None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={**AUTH, "Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                status, text, hdrs = resp.status, resp.read().decode(), resp.headers
        except urllib.error.HTTPError as exc:
            status, text, hdrs = exc.code, exc.read().decode(), exc.headers
        except OSError:
            return 0, None
        self.last_headers = hdrs
        if raw:
            return status, text
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def create(self, **body: Any) -> dict:
        status, out = self.request("POST", "/v1/sessions", body)
        assert status == 201, (status, out, self.log_tails())
        return out

    def session(self, sid: str) -> dict:
        status, out = self.request("GET", f"/v1/sessions/{sid}")
        assert status == 200, (status, out)
        return out

    def wait_state(self, sid: str, state: str, timeout_s: float = 30) -> dict:
        return self.wait_until(lambda: (s := self.session(sid))["state"] == state and s,
                               timeout_s, f"session {sid} {state}", interval_s=0.1)

    def close(self) -> None:
        super().close()
        for name in self.host_caps:  # whatever a killed host's browsers left behind
            procs.kill_tagged(self.host_tag(name))


def kill9(pool: Pool, name: str) -> None:
    pool.procs[name].popen.send_signal(signal.SIGKILL)  # the host alone, not its group
    pool.procs[name].popen.wait(10)
