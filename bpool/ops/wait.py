"""`bpool wait-profile NAME`: wait until a profile's new worker is back in rotation, or say why not.

The verdict is a pure function of two observations: the front's /health (what the broker knows
about the profile's workers) and supervisord's view of the program `browser-NAME` (running,
backing off, given up). The loop around it only fetches both and sleeps.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import xmlrpc.client
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from bpool import config
from bpool.ops.render import CONFIG_ERROR_EXIT, PROGRAM_PREFIX

Fetch = Callable[[], "list[dict[str, Any]] | None"]
ProcInfo = Callable[[], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Verdict:
    done: bool  # stop waiting
    ok: bool
    message: str


def judge(name: str, workers: list[dict[str, Any]] | None, proc: dict[str, Any] | None,
          not_pid: int | None = None) -> Verdict:
    """`workers`: /health's worker list (None: the front did not answer); `proc`: supervisord's
    getProcessInfo for browser-NAME (None: unknown); `not_pid`: the pid of the worker replaced."""
    program = PROGRAM_PREFIX + name
    want_pid: int | None = None
    if proc is not None:
        state = proc.get("statename")
        if state == "FATAL":
            return Verdict(True, False, f"{program} gave up starting (FATAL): "
                                        f"{proc.get('spawnerr') or 'it kept exiting at start'}")
        if state == "EXITED":
            code = proc.get("exitstatus")
            why = " (a configuration error: bad profile or no browser)" \
                if code == CONFIG_ERROR_EXIT else ""
            return Verdict(True, False, f"{program} exited with status {code}{why}")
        if state in ("STOPPED", "STOPPING"):
            return Verdict(True, False, f"{program} is {state.lower()}: "
                                        f"supervisorctl start {program}")
        if state == "BACKOFF":
            return Verdict(False, False, f"{program} failed to start and is retrying: "
                                         f"{proc.get('spawnerr') or 'see its log'}")
        if state in ("RUNNING", "STARTING") and proc.get("pid"):
            want_pid = int(proc["pid"])
    if workers is None:
        return Verdict(False, False, "the front's /health does not answer")
    mine = [w for w in workers if w.get("profile_id") == name]
    if want_pid is not None:
        mine = [w for w in mine if w.get("pid") == want_pid]
    elif not_pid is not None:
        mine = [w for w in mine if w.get("pid") != not_pid]
    if not mine:
        return Verdict(False, False, f"{name} has not registered with the broker yet")
    w = mine[-1]
    state, pid, account = w.get("state"), w.get("pid"), w.get("account") or "?"
    if state in ("idle", "busy"):
        return Verdict(True, True, f"{name} is back in rotation ({state}, pid {pid}, "
                                   f"account {account})")
    if state == "cooling":
        left = w.get("cooldown_remaining_s")
        return Verdict(True, True, f"{name} is logged in as {account} but rate-limited: it "
                                   f"rejoins by itself in {left or '?'} s")
    if state == "paused":
        left = w.get("cooldown_remaining_s")
        return Verdict(True, True, f"{name} is logged in as {account} but paused by the site "
                                   f"({w.get('last_error') or 'no detail'}): it rejoins by "
                                   f"itself in {left or '?'} s")
    if state == "logged_out":
        return Verdict(True, False, f"{name} is logged out ({w.get('last_error') or 'no detail'})"
                                    ": the cookie file is not a valid login; export a fresh one")
    if state == "needs_consent":
        return Verdict(True, False, f"{name} ({account}) must accept the AI Studio terms of "
                                    f"service ({w.get('last_error') or 'no detail'}): open AI "
                                    "Studio as that account in a browser, accept them, then "
                                    f"restart or swap the profile {name}")
    return Verdict(False, False, f"{name} is {state}")


def health_url(env: Mapping[str, str] | None = None) -> str:
    """The front's /health, from `env` (the pool's recorded settings: bpool.ops.record)."""
    host = config.value("BPOOL_HOST", env)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.value('BPOOL_PORT', env)}/health"


def front_process_keys(proxy: Any) -> str:
    """BPOOL_API_KEYS of the running front (readable by its own user only): the keys of a pool
    started with keys in its environment, for an operator shell that does not have them."""
    if proxy is None:
        return ""
    try:
        pid = proxy.supervisor.getProcessInfo("front")["pid"]
        with open(f"/proc/{pid}/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except (OSError, xmlrpc.client.Error, KeyError, TypeError):
        return ""
    for e in entries:
        if e.startswith(b"BPOOL_API_KEYS="):
            return e[len(b"BPOOL_API_KEYS="):].decode(errors="replace")
    return ""


def operator_key(env: Mapping[str, str] | None = None, proxy: Any = None) -> str | None:
    """A key of the pool, when keys are configured: /health shows worker details only with one.
    From the pool's keys file, the caller's BPOOL_API_KEYS, or the running front's."""
    from bpool.front.settings import load_api_keys

    try:
        keys = load_api_keys(config.value("BPOOL_API_KEYS", env) or front_process_keys(proxy),
                             config.value("BPOOL_API_KEYS_FILE", env))
    except Exception:  # an unreadable keys file: ask without a key, the front says the rest
        return None
    return keys[0] if keys else None


def fetch_health(url: str, key: str | None = None) -> Any:
    """/health's JSON, also from a 503 (it still carries the pool details); None if unreachable
    or not JSON. Sends `key` (default: the pool's, from this environment) when there is one."""
    key = key if key is not None else operator_key()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except OSError:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def fetch_workers(url: str, key: str | None = None) -> list[dict[str, Any]] | None:
    """/health's workers; it answers 503 (still with the list) when nobody is idle or busy."""
    body = fetch_health(url, key)
    workers = body.get("workers") if isinstance(body, dict) else None
    return workers if isinstance(workers, list) else None


def proc_info(proxy: Any, name: str) -> dict[str, Any] | None:
    if proxy is None:
        return None
    try:
        return proxy.supervisor.getProcessInfo(PROGRAM_PREFIX + name)
    except (OSError, xmlrpc.client.Error):
        return None


def log_tail(proxy: Any, name: str, max_bytes: int = 1500) -> str:
    if proxy is None:
        return ""
    try:
        text, _, _ = proxy.supervisor.tailProcessStdoutLog(PROGRAM_PREFIX + name, 0, max_bytes)
    except (OSError, xmlrpc.client.Error):
        return ""
    return "\n".join(text.splitlines()[-10:])


def wait(name: str, timeout_s: float, fetch: Fetch, info: ProcInfo, not_pid: int | None = None,
         *, poll_s: float = 0.25, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep, log: str = "") -> Verdict:
    """`log`: the worker's log file, named when the wait times out (a hung or unregistered
    worker says why there, not in /health)."""
    deadline = clock() + timeout_s
    while True:
        v = judge(name, fetch(), info(), not_pid)
        if v.done:
            return v
        if clock() >= deadline:
            where = f"; its log says why: {log}" if log else ""
            return Verdict(True, False, f"timed out after {timeout_s:g} s: {v.message}{where}")
        sleep(poll_s)


# ---------------------------------------------------------------------------- profiles list


def describe(name: str, proc: dict[str, Any] | None, workers: list[dict[str, Any]] | None,
             log: str, now: float | None = None) -> tuple[str, str]:
    """(state, detail) of one profile for `bpool profiles list`: supervisord's view joined with
    the broker's (the entry of the worker supervisord runs now), and the last error known."""
    now = time.time() if now is None else now
    if proc is None:
        return "not in supervisord", "run `bpool profiles sync`"
    sv = proc.get("statename", "?")
    if sv in ("FATAL", "BACKOFF"):
        return sv.lower(), proc.get("spawnerr") or f"it keeps exiting at start: see {log}"
    if sv == "EXITED":
        code = proc.get("exitstatus")
        why = " (configuration error)" if code == CONFIG_ERROR_EXIT else ""
        return "exited", f"status {code}{why}: see {log}"
    if sv in ("STOPPED", "STOPPING"):
        return sv.lower(), f"supervisorctl start {PROGRAM_PREFIX}{name}"
    if workers is None:
        return sv.lower(), "the front's /health does not answer"
    pid = proc.get("pid")
    mine = [w for w in workers if w.get("profile_id") == name and w.get("pid") == pid]
    if not mine:
        up = now - float(proc.get("start") or now)
        if up < 15:
            return "starting", f"running {up:.0f} s, not registered with the broker yet"
        return "unregistered", (f"running {up:.0f} s but not registered with the broker (hung, "
                                f"or it cannot reach the broker): see {log}")
    w = mine[-1]
    state, err = w.get("state", "?"), w.get("last_error")
    parts = [f"pid {pid}", f"account {w.get('account') or '?'}"]
    if state in ("cooling", "paused") and w.get("cooldown_remaining_s") is not None:
        parts.append(f"{float(w['cooldown_remaining_s']):.0f} s left")
    for model, left in sorted((w.get("cooling") or {}).items()):  # rate-limited for one model
        parts.append(f"{model} cooling, {float(left):.0f} s left")
    if state == "busy" and w.get("job_id"):
        parts.append(f"job {w['job_id']}")
    if err:
        parts.append(f"last error: {err}")
    return state, ", ".join(parts)
