"""The broker's state records and the actions it asks its shell to perform (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, NamedTuple, Union

from bpool.protocol import (
    Assign, Assigned, Cancel, Disconnect, ErrorInfo, Failed, Heartbeat, JobsKnown, JobSpec, Pong,
    Ready, StatusReply, WorkerStatus, error,
)

WorkerState = Literal["idle", "busy", "draining", "cooling", "paused", "logged_out", "needs_consent",
                      "leased"]
JobState = Literal["queued", "running", "ended"]

MAX_MOVES = 3  # a job goes to at most this many further workers, whatever the reasons
# Account trouble (an error kind) -> the state that keeps the worker out of rotation.
ACCOUNT_STATES: dict[str, WorkerState] = {
    "rate_limited": "cooling",
    "paused": "paused",
    "logged_out": "logged_out",
    "needs_consent": "needs_consent",
}
TIMED_STATES: tuple[WorkerState, ...] = ("cooling", "paused")  # end by themselves at `cooldown_until`
OUT_STATES = tuple(ACCOUNT_STATES.values())  # an AccountState(error=None) ends any of them
# A JobFailed of these kinds before any output was sent goes to another worker: the account or
# browser failed, not the request.
MOVABLE_KINDS = (*ACCOUNT_STATES, "broken")
COUNTERS = (
    "jobs_submitted", "jobs_started", "jobs_done", "jobs_failed", "jobs_moved", "late_messages",
    "decode_errors",
    "workers_registered", "workers_expired", "workers_unreachable", "workers_left",
    "unknown_worker_messages", "version_mismatch", "queue_full", "queue_timeout", "cancelled",
    "fronts_lost", "repeated_ready",
)


# ---------------------------------------------------------------------------- actions


class SendWorker(NamedTuple):
    identity: bytes
    msg: Union[Assign, Cancel, Heartbeat, Disconnect]


class SendFront(NamedTuple):
    front: bytes
    msg: Union[Assigned, Failed, Pong, StatusReply, JobsKnown]


class ForwardFront(NamedTuple):
    """A worker's Chunk/Done frame, passed on to the front unchanged (no re-encoding)."""

    front: bytes
    raw: bytes


Action = Union[SendWorker, SendFront, ForwardFront]


# ---------------------------------------------------------------------------- state


@dataclass(slots=True, eq=False)
class Job:
    job_id: str
    spec: JobSpec
    front: bytes
    queue_timeout_s: float
    deadline: float = 0.0
    state: JobState = "queued"
    worker: bytes | None = None
    started: bool = False
    moves: int = 0
    moved_for_death: bool = False
    assigned_at: float = 0.0


@dataclass(slots=True, eq=False)
class Worker:
    identity: bytes
    ready: Ready
    models: frozenset[str]
    state: WorkerState  # only ever changed by BrokerCore._set_state
    since: float
    last_seen: float
    last_sent: float
    job: Job | None = None  # the job the client is still waiting on
    held: bool = False  # between Assign and Idle, even after the job has ended
    jobs_served: int = 0
    last_error: str | None = None
    cooldown_until: float = 0.0  # end of "cooling" or "paused"
    pending: ErrorInfo | None = None  # account trouble reported mid-job, applied at Idle
    broken: bool = False  # the worker cannot continue and will exit
    leaving: bool = False  # Goodbye received
    cookie_expires_at: float | None = None  # from ProfileInfo; until then the Ready's
    last_answer: float | None = None  # when its last answer finished (not cancelled)
    # model -> end of its rate-limit cool-down: the profile's own dict in BrokerCore, shared by
    # every registration of the profile (a quota belongs to the account, not to a process).
    cooling: dict[str, float] = field(default_factory=dict)
    usage: dict[str, "UsageRow"] = field(default_factory=dict)  # the profile's rows, by model
    lease: object = None  # pool.leases.LeaseRec while an operator borrows its browser

    @property
    def profile(self) -> str:
        return self.ready.profile_id


@dataclass(slots=True, eq=False)
class UsageRow:
    """One profile's work for one model (protocol.ModelUsage once in a status reply)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def serves(w: Worker, model: str) -> bool:
    return not w.models or model in w.models


def can_take(w: Worker, model: str) -> bool:
    """w serves `model` and its account is not cooling down for it."""
    return (not w.models or model in w.models) and model not in w.cooling


def _resting(workers: Iterable[Worker], model: str, now: float
             ) -> tuple[list[Worker], list[float], bool] | None:
    """The workers for `model`, when the resting ones come back and whether one of them is
    rate-limited for it, if none can work now (None when one is idle, busy or about to be, or
    when none is registered)."""
    candidates = [w for w in workers if serves(w, model)]
    if not candidates:
        return None  # nobody registered yet: a worker may still come (queue as usual)
    back_at: list[float] = []
    limited = False
    for w in candidates:
        end = w.cooling.get(model)
        if end is not None and end <= now:
            end = None  # over; the next tick takes it off
        if w.state in TIMED_STATES:
            back_at.append(w.cooldown_until if end is None else max(end, w.cooldown_until))
            limited = limited or w.state == "cooling" or end is not None
        elif end is not None:
            back_at.append(end)
            limited = True
        elif w.state not in OUT_STATES and not w.leaving and not w.broken:
            return None
    return candidates, back_at, limited


def rest_left(workers: Iterable[Worker], model: str, now: float) -> float | None:
    """Seconds until the first account for `model` is back, when every one of them rests."""
    resting = _resting(workers, model, now)
    return min(resting[1]) - now if resting and resting[1] else None


def nobody_in_time(workers: Iterable[Worker], model: str, now: float, timeout: float
                   ) -> ErrorInfo | None:
    """Why no registered worker can take `model` before the queue deadline, if none can:
    every account logged out (or awaiting consent) fails at once instead of after the
    whole queue timeout; accounts that all rest past the deadline say when to retry. When one
    of them is rate-limited for the model, the answer is a 429 at once, whatever the deadline:
    a quota ends at a known time and the client is better told when than kept waiting."""
    resting = _resting(workers, model, now)
    if resting is None:
        return None
    candidates, back_at, limited = resting
    if limited:
        wait = max(0.1, min(back_at) - now)
        return error("rate_limited", f"every account for {model!r} is rate-limited or resting; "
                                     f"the first is back in {wait:.0f} s",
                     retry_after_s=round(wait, 1))
    states = ", ".join(sorted({f"{w.profile} {w.state}" for w in candidates}))
    if not back_at:
        return error("no_workers", f"no account can serve {model!r} now ({states}); "
                                   "replace the logged-out profiles")
    wait = min(back_at) - now
    if wait <= timeout:
        return None
    return error("no_workers", f"every account for {model!r} rests ({states})",
                 retry_after_s=round(wait, 1))


def worker_status(w: Worker, now: float) -> WorkerStatus:
    return WorkerStatus(
        profile_id=w.profile,
        state=w.state,
        since_s=round(now - w.since, 3),
        jobs_served=w.jobs_served,
        last_error=w.last_error,
        pid=w.ready.pid,
        engine=w.ready.engine,
        account=w.ready.account,
        models=w.ready.models,
        job_id=w.job.job_id if w.job is not None else None,
        cooldown_remaining_s=(
            round(max(0.0, w.cooldown_until - now), 3) if w.state in TIMED_STATES else None
        ),
        cookie_expires_at=(w.cookie_expires_at if w.cookie_expires_at is not None
                           else w.ready.cookie_expires_at),
        last_answer_s=round(now - w.last_answer, 3) if w.last_answer is not None else None,
        cooling={m: round(max(0.0, end - now), 3) for m, end in w.cooling.items()},
    )
