"""A whole pool under a real supervisord in a scratch directory, for fault tests and benchmarks.

    with SupervisedPool(tmp, simulator="on") as pool:
        pool.make_profiles("alice", "bob")         # logged in at the pool's simulator
        pool.start()                               # sync --render-only, then supervisord -n
        pool.wait_in_rotation({"alice", "bob"})
        pool.supervisorctl("stop", "browser-bob")
        pids = pool.pids()                         # program -> pid, from supervisord
        result = await stream_chat(pool.base_url, "hi")

The scratch directory gets a copy of the checkout's supervisord.conf and a `.venv` symlink to the
checkout's venv, so the file under test is the real one and every path in it resolves under the
scratch directory. Every process of the pool (supervisord, its programs, their browsers) carries
BPOOL_SUPERVISORD_CONF=<scratch>/supervisord.conf in its environment; `close()` stops supervisord
and then SIGKILLs anything still carrying that marker, and reports what it had to kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable, TypeVar

import aiohttp
from supervisor.xmlrpc import SupervisorTransport

from bpool.config import REPO_ROOT
from bpool.worker import procs
from bpool.ops.wait import fetch_health
from bpool.testing.pool import free_port, poll_until

T = TypeVar("T")
_DROP = ("BPOOL_", "BROWSER_PROFILE_DIR", "ACTIVE_AUTH_JSON_PATH")


class HarnessTimeout(AssertionError):
    pass


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment contains the entry `marker` (never this process)."""
    return procs.pids_with_env(marker.encode().__eq__)


def browser_pids(run_dir: Path, profile: str | None = None) -> list[int]:
    """Processes a browser worker launched for `profile` (any profile if None): they carry
    BPOOL_BROWSER_OWNER=<run dir>/browsers/<profile> (bpool.worker.procs)."""
    if profile is not None:
        return procs.find_tagged(str(run_dir / "browsers" / profile))
    prefix = f"{procs.OWNER_ENV}={run_dir}/browsers/".encode()
    return procs.pids_with_env(lambda entry: entry.startswith(prefix))


class SupervisedPool:
    def __init__(self, base: Path, *, simulator: str = "on", env: dict[str, str] | None = None):
        self.base = Path(base).resolve()
        self.conf = self.base / "supervisord.conf"
        self.run_dir = self.base / "run"
        self.cookies = self.base / "cookies"
        self.cookies.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "supervisord.conf", self.conf)
        venv = self.base / ".venv"
        if not venv.exists():
            venv.symlink_to(REPO_ROOT / ".venv")
        self.bin = venv / "bin"
        self.port = free_port()
        self.sim_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
        self.env.update({
            "BPOOL_SUPERVISORD_CONF": str(self.conf),
            "BROWSER_PROFILE_DIR": str(self.cookies),
            "BPOOL_HOST": "127.0.0.1",
            "BPOOL_PORT": str(self.port),
            "BPOOL_SIM_PORT": str(self.sim_port),
            "BPOOL_SIMULATOR": simulator,
            "BPOOL_SESSION_HOSTS": "0",  # chat pools: no browser-session hosts to wait for
            "PYTHONUNBUFFERED": "1",
        })
        self.env.update(env or {})
        self.marker = f"BPOOL_SUPERVISORD_CONF={self.conf}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -------------------------------------------------------------------- commands

    def run(self, argv: list[str], check: bool = True, timeout_s: float = 120
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, env=self.env, cwd=self.base, capture_output=True, text=True,
                              timeout=timeout_s)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def bpool(self, *args: str, check: bool = True, timeout_s: float = 120
              ) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.bin / "bpool"), *args], check, timeout_s)

    def supervisorctl(self, *args: str, check: bool = True
                      ) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.bin / "supervisorctl"), "-c", str(self.conf), *args], check)

    def script(self, name: str, *args: str, check: bool = False, timeout_s: float = 180
               ) -> subprocess.CompletedProcess[str]:
        return self.run([str(REPO_ROOT / "scripts" / name), *args], check, timeout_s)

    def make_profiles(self, *names: str, out: Path | None = None) -> None:
        """Accounts logged in at this pool's simulator, their cookie files in `out` (cookies/)."""
        self.run([str(self.bin / "python"), "-m", "bpool.sim", "make-profiles",
                  "--dir", str(self.run_dir / "sim"), "--out", str(out or self.cookies),
                  "--names", ",".join(names)])

    # -------------------------------------------------------------------- supervisord

    def start(self, timeout_s: float = 30) -> None:
        self.bpool("profiles", "sync", "--render-only")
        log = (self.base / "supervisord.out").open("ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "supervisord"), "-n", "-c", str(self.conf)], env=self.env,
            cwd=self.base, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        self.wait_until(self._rpc_up, timeout_s, "supervisord's socket")

    def _rpc_up(self) -> bool:
        try:
            return self.call("getState")["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def call(self, method: str, *args: Any) -> Any:
        """One supervisord XML-RPC call on its own connection (safe from any thread)."""
        transport = SupervisorTransport(None, None, f"unix://{self.run_dir / 'supervisor.sock'}")
        try:
            proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
            return getattr(proxy.supervisor, method)(*args)
        finally:
            transport.close()

    def infos(self) -> dict[str, dict[str, Any]]:
        return {i["name"]: i for i in self.call("getAllProcessInfo")}

    def pids(self) -> dict[str, int]:
        """Program → pid of every running program."""
        return {n: i["pid"] for n, i in self.infos().items() if i["pid"]}

    def close(self) -> list[int]:
        """Stop supervisord (its programs drain), then SIGKILL whatever still carries the pool's
        marker. Returns the pids that had to be killed that way."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            for pid in marked_pids(self.marker):  # a SIGSTOPped program would never stop
                _signal(pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        survivors = marked_pids(self.marker) + browser_pids(self.run_dir)
        for pid in survivors:
            _signal(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            _signal(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        return sorted(set(survivors))

    def __enter__(self) -> SupervisedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------- waiting

    def log(self, program: str, lines: int = 40) -> str:
        path = self.run_dir / "log" / f"{program}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        out = []
        try:
            states = {n: i["statename"] for n, i in self.infos().items()}
        except (OSError, xmlrpc.client.Error) as exc:
            states = {"supervisord": repr(exc)}
        out.append(f"supervisord states: {states}")
        out.append(f"health: {self.health()}")
        for p in sorted((self.run_dir / "log").glob("*.log")):
            out.append(f"===== {p.stem} =====\n{self.log(p.stem, 25)}")
        return "\n".join(out)

    def wait_until(self, check: Callable[[], T | None], timeout_s: float, what: str,
                   interval_s: float = 0.05) -> T:
        return poll_until(check, timeout_s, what, lambda msg: HarnessTimeout(
            f"{msg}\n{self.diagnostics()}"), interval_s)

    def health(self) -> dict[str, Any] | None:
        return fetch_health(self.base_url + "/health")

    def workers(self) -> dict[str, dict[str, Any]]:
        """profile → its /health entry (the last one when a profile has two incarnations)."""
        h = self.health() or {}
        return {w["profile_id"]: w for w in h.get("workers", [])}

    def wait_in_rotation(self, profiles: set[str], timeout_s: float = 60) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            ws = self.workers()
            return ws if all(ws.get(p, {}).get("state") in ("idle", "busy")
                             for p in profiles) else None
        return self.wait_until(ok, timeout_s, f"{sorted(profiles)} in rotation", 0.1)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


# ---------------------------------------------------------------------------- clients


class ChatResult:
    def __init__(self) -> None:
        self.status = 0
        self.profile = ""
        self.text = ""
        self.error: str | None = None  # an error body, in-band or not
        self.first_byte_at: float | None = None  # monotonic
        self.ended_at = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    def __repr__(self) -> str:
        return (f"ChatResult(status={self.status}, profile={self.profile!r}, "
                f"error={self.error!r}, text={self.text[:60]!r})")


async def stream_chat(base_url: str, prompt: str, *, model: str = "gemini-2.5-flash",
                      timeout_s: float = 120, on_chunk: Callable[[ChatResult], None] | None = None
                      ) -> ChatResult:
    """One streamed chat completion; never raises for HTTP or in-band errors (they are in the
    result), so load generators can count failures."""
    res = ChatResult()
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            async with s.post(base_url + "/v1/chat/completions", json=body) as resp:
                res.status = resp.status
                res.profile = resp.headers.get("x-bpool-profile", "")
                if resp.status != 200:
                    res.error = (await resp.text())[:500]
                    return res
                done = False
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: "):
                        continue
                    if res.first_byte_at is None:
                        res.first_byte_at = time.monotonic()
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        done = True
                        break
                    event = json.loads(data)
                    if "error" in event:
                        res.error = json.dumps(event["error"])
                        break
                    for choice in event.get("choices") or []:
                        res.text += (choice.get("delta") or {}).get("content") or ""
                    if on_chunk is not None:
                        on_chunk(res)
                if not done and res.error is None:
                    res.error = "the stream ended without [DONE]"
    except (aiohttp.ClientError, TimeoutError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        res.ended_at = time.monotonic()
    return res


async def serving_again(pool: SupervisedPool, deadline_s: float,
                        interval_s: float = 0.05) -> ChatResult:
    """Send requests one after another until one succeeds (or the deadline passes)."""
    end = time.monotonic() + deadline_s
    while True:
        res = await stream_chat(pool.base_url, "are you back?", timeout_s=deadline_s)
        if res.ok or time.monotonic() > end:
            return res
        await asyncio.sleep(interval_s)


async def steady_load(base_url: str, clients: int, stop: asyncio.Event, prompt: str = "hi",
                      results: list[ChatResult] | None = None, **kw: Any) -> list[ChatResult]:
    """`clients` concurrent streamed requests, each client starting its next one as soon as the
    last ended, until `stop` is set. Every result (failed ones included) is appended to
    `results` as it ends, so a caller can watch progress; the list is also returned."""
    out: list[ChatResult] = [] if results is None else results

    async def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            out.append(await stream_chat(base_url, f"{prompt} [{i}.{n}]", **kw))
            n += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return out


async def one_stream_each(pool: SupervisedPool, profiles: set[str], prompt: str
                          ) -> dict[str, asyncio.Task[ChatResult]]:
    """One long stream per profile, sent while all of them are idle (the broker gives each
    idle worker one). Returns the tasks by serving profile, once every one is streaming."""
    await asyncio.to_thread(pool.wait_in_rotation, profiles, 60)
    live: dict[int, ChatResult] = {}
    tasks = [asyncio.create_task(stream_chat(pool.base_url, f"{prompt} {i}",
                                             on_chunk=lambda r, i=i: live.setdefault(i, r)))
             for i in range(len(profiles))]
    await asyncio.to_thread(pool.wait_until, lambda: len(live) == len(tasks) or any(
        t.done() for t in tasks), 60, "every stream started")
    if any(t.done() for t in tasks):
        raise AssertionError(f"a stream ended early: {[t.result() for t in tasks if t.done()]}")
    by_profile = {live[i].profile: tasks[i] for i in range(len(tasks))}
    if set(by_profile) != profiles:
        raise AssertionError(f"streams went to {sorted(by_profile)}, not one to each of "
                             f"{sorted(profiles)}")
    return by_profile
