"""Which sessions must end now, and why: the sweeper's pure decision (no clock, no sockets).

The placement core (placement.py) calls `due` on every tick with the current time and ends what
it returns; the reason is recorded in the log and counted in /metrics (bpool_session_sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass
class Timing:
    """What the sweeper needs to know about one live session."""

    id: str
    state: str
    created_at: float
    timeout_s: float
    idle_timeout_s: float
    last_activity: float  # last relayed frame, or the creation time: a client that never
    #                       connects is idle from the start
    queue_deadline: float | None = None  # only while queued
    start_deadline: float | None = None  # only while starting: a host that never answers


def due(sessions: Iterable[Timing], now: float) -> list[tuple[str, str]]:
    """(session id, reason) for every session past one of its limits. A session's whole
    lifetime bounds everything else; a queued one ends when its bounded wait is over; idleness
    counts from the last frame in either direction."""
    out = []
    for s in sessions:
        if s.state == "ended":
            continue
        if s.state == "queued":
            if s.queue_deadline is not None and now >= s.queue_deadline:
                out.append((s.id, "queue_timeout"))
        elif now >= s.created_at + s.timeout_s:
            out.append((s.id, "timeout"))
        elif s.state == "starting":
            if s.start_deadline is not None and now >= s.start_deadline:
                out.append((s.id, "start_failed"))
        elif s.state != "starting" and now >= s.last_activity + s.idle_timeout_s:
            out.append((s.id, "idle"))
    return out
