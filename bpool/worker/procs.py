"""Keeping track of the browser processes a worker starts, so that none outlives it.

Every process the worker launches for a profile (the Playwright driver, the browser and all its
children) carries an environment marker `BPOOL_BROWSER_OWNER=<run dir>/browsers/<profile>`. The
marker survives double forks and re-parenting, unlike a parent pid, and is unique per pool and
profile. `find_tagged()` scans /proc for it; `kill_tagged()` SIGKILLs those processes and their
process groups (Playwright starts each browser as a process-group leader).

`ProfileLock` is an flock on `<run dir>/browsers/<profile>/worker.lock`: the kernel drops it when
the worker dies, even by kill -9. Holding it proves that tagged processes still running belong to
a dead predecessor and may be reaped; failing to take it means another live worker serves the
same profile.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("bpool.procs")

OWNER_ENV = "BPOOL_BROWSER_OWNER"


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:  # gone, or not ours to read
        return []


def pids_with_env(match: Callable[[bytes], bool]) -> list[int]:
    """Pids of live processes (never our own) with an environment entry `match` accepts."""
    me = os.getpid()
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and int(name) != me and any(map(match, _environ(int(name))))]


def find_tagged(tag: str) -> list[int]:
    """Pids of live processes whose environment carries OWNER_ENV=tag (never our own)."""
    needle = f"{OWNER_ENV}={tag}".encode()
    return pids_with_env(needle.__eq__)


def pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) from /proc/<pid>/stat, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may contain spaces
    return fields[0], int(fields[1]), int(fields[2])


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def kill_tagged(tag: str) -> list[int]:
    """SIGKILL every process tagged `tag` and the process groups they lead; returns the pids."""
    pids = find_tagged(tag)
    own_group = os.getpgrp()  # the Playwright driver runs in ours: kill it by pid only
    groups = {g for g in map(pgid_of, pids) if g is not None and g != own_group}
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def ancestors() -> set[int]:
    """This process and its ancestors (never to be reaped by it)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        st = proc_stat(pid)
        if st is None:
            break
        pid = st[1]
    return out


def terminate(pids: list[int], grace_s: float) -> list[int]:
    """SIGTERM `pids`, give them `grace_s` to exit, then SIGKILL what is left and the process
    groups it leads (browsers lead their own). Returns the pids that had to be killed."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    own_group = os.getpgrp()
    for pid in left:
        if pgid_of(pid) == pid and pid != own_group:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


class ProfileLock:
    """Exclusive per-profile lock; also records the browser's process groups for the operator."""

    def __init__(self, profile_dir: Path):
        self.dir = profile_dir
        self.path = profile_dir / "worker.lock"
        self.pid_file = profile_dir / "browser.pid"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def record(self, pgids: list[int]) -> None:
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"worker_pid": os.getpid(), "pgids": sorted(set(pgids))}))
        tmp.replace(self.pid_file)

    def clear_record(self) -> None:
        try:
            self.pid_file.unlink()
        except OSError:
            pass
