"""Who pays for a request: CPU time of the benchmark's own processes, by kind, from /proc.

`snapshot()` sums user + system time per kind over the processes under this one (the pool, the
simulator, the browsers and their drivers it started; whatever else runs on the machine is not
counted); the difference of two snapshots taken around a load, divided by the requests served,
is the CPU each request cost each kind. Processes that start and end inside the window are
missed, which for a steady pool is nothing, and so are the few that leave the tree (Chromium's
crashpad handler).
"""

from __future__ import annotations

import os
from collections import Counter

TICK = os.sysconf("SC_CLK_TCK")
# Chromium's processes by their --type; the browser process has none.
CHROMIUM_TYPES = ("renderer", "gpu-process", "utility", "zygote", "crashpad-handler")
ORDER = ("renderer", "gpu-process", "browser", "utility", "driver", "worker", "broker", "front",
         "sim")


def kind_of(cmdline: list[str]) -> str | None:
    if not cmdline:
        return None
    if len(cmdline) == 1:  # a process that rewrote its title (Chromium's zygote children)
        cmdline = cmdline[0].split()
    exe = os.path.basename(cmdline[0])
    if exe in ("chromium", "chrome", "chrome_crashpad_handler") or exe.startswith("chromium"):
        for arg in cmdline[1:]:
            if arg.startswith("--type="):
                t = arg.removeprefix("--type=")
                return t if t in CHROMIUM_TYPES else "utility"
        return "utility" if "crashpad" in exe else "browser"
    if exe == "node" and any("playwright" in a for a in cmdline[1:]):
        return "driver"
    joined = " ".join(cmdline[1:4])
    for module, kind in (("bpool.browser_proc", "worker"), ("bpool.broker", "broker"),
                         ("bpool.http_front", "front"), ("bpool.sim", "sim")):
        if module in joined:
            return kind
    return None


def _read(pid: str) -> tuple[list[str], int, float] | None:
    """(command line, parent pid, CPU seconds) of a process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return cmdline, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def snapshot(root: int | None = None) -> Counter:
    """CPU seconds by kind of every process under `root` (default: this process)."""
    root = os.getpid() if root is None else root
    procs = {int(pid): got for pid in os.listdir("/proc")
             if pid.isdigit() and (got := _read(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out: Counter = Counter()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        cmdline, _, seconds = procs[pid]
        kind = kind_of(cmdline)
        if kind is not None:
            out[kind] += seconds
    return out


def per_request(before: Counter, after: Counter, requests: int) -> dict[str, float]:
    """Seconds of CPU per request, by kind."""
    return {k: max(0.0, after[k] - before[k]) / max(1, requests) for k in ORDER}


def describe(cpu: dict[str, float], cores: int, answer_s: float, n: int) -> str:
    """One line: ms per request by kind, and what Chromium's share alone allows on `cores`."""
    ms = lambda k: cpu.get(k, 0.0) * 1e3  # noqa: E731
    chromium = sum(cpu.get(k, 0.0) for k in ("renderer", "gpu-process", "browser", "utility"))
    total = sum(cpu.values())
    parts = ", ".join(f"{k} {ms(k):.0f}" for k in ORDER if ms(k) >= 0.5)
    line = f"CPU ms per request: {parts}; total {total * 1e3:.0f}"
    if chromium:
        ceiling = cores / chromium
        line += (f"; Chromium alone ({chromium * 1e3:.0f} ms) allows at most {ceiling:.1f} req/s "
                 f"on {cores} cores = {min(1.0, ceiling / (n / answer_s)) * 100:.0f} % of ideal")
    return line
