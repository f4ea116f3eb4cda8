"""The worker's half of the broker contract as a pure state machine (no sockets, no clock).

`LinkCore` decides every message a worker sends and when: `Ready` (repeated each interval until
the broker answers), heartbeats (also while a job runs or drains), one job at a time, `Started`
before the first output, `Done`/`JobFailed` when the job ends, `Idle` only after the page was
reset, re-registration after `Disconnect`, a fresh socket when the broker goes silent, and
drain + `Goodbye` on stop, and account leases: `Lease` opens the browser to a CDP client
(`Leased` with its endpoint), `LeaseEnd` (or losing the broker) resets it, then the account's
state as found after the lease and `Idle`. Each call takes `now` and returns actions; the shell
(`bpool.worker.link`) owns the socket, the backend's tasks and the timers, and performs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from bpool.protocol import (AccountState, Assign, Cancel, Chunk, Disconnect, Done, ErrorInfo,
                            Goodbye, Heartbeat, Idle, JobFailed, JobSpec, Lease, LeaseEnd,
                            LeaseFailed, Leased, NativeCall, Ready, Started, Usage, error)


@dataclass(frozen=True)
class Send:
    msg: object


@dataclass(frozen=True)
class StartRun:
    """Start the backend on this job."""

    job_id: str
    spec: JobSpec


@dataclass(frozen=True)
class CancelRun:
    """Stop the backend's work on this job (it still ends through `run_finished`)."""

    job_id: str


@dataclass(frozen=True)
class ResetPage:
    """Reset the backend for the next job, then call `reset_finished`."""

    job_id: str


@dataclass(frozen=True)
class Reconnect:
    """Open a fresh socket with a new identity, then call `connected`."""


@dataclass(frozen=True)
class Exit:
    code: int


@dataclass(frozen=True)
class StartLease:
    """Open the browser to a CDP client, then call `lease_started`."""

    lease_id: str


@dataclass(frozen=True)
class EndLease:
    """Take the browser back (close what the client opened, reset the page, check the login),
    then call `lease_finished`."""

    lease_id: str


Action = Union[Send, StartRun, CancelRun, ResetPage, Reconnect, Exit, StartLease, EndLease]


# How a backend's run ended (the shell maps exceptions to these).
@dataclass(frozen=True)
class Finished:
    finish_reason: str
    usage: Usage | None = None


@dataclass(frozen=True)
class Failed:
    error: ErrorInfo


@dataclass(frozen=True)
class Cancelled:
    pass


@dataclass(frozen=True)
class BackendGone:
    """The browser died: the job fails, the worker says Goodbye and exits non-zero."""

    message: str


RunOutcome = Union[Finished, Failed, Cancelled, BackendGone]


@dataclass
class JobState:
    id: str
    started: bool = False
    output_sent: bool = False
    running: bool = True  # the backend works on it (until run_finished)
    seq: int = 0


@dataclass(frozen=True)
class LinkTimes:
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    drain_timeout_s: float = 30.0
    send_heartbeats: bool = True


@dataclass
class LinkCore:
    ready: Callable[[], Ready]  # the Ready to send (the backend's current account state)
    times: LinkTimes = field(default_factory=LinkTimes)
    registered: bool = False
    job: JobState | None = None
    dead: bool = False
    stopping_since: float | None = None
    last_recv: float = 0.0
    last_send: float = float("-inf")
    last_disconnect: float = float("-inf")
    abandoned: set[str] = field(default_factory=set)  # jobs the broker has forgotten
    lease: str | None = None  # the lease id, from Lease until the browser is taken back
    lease_ending: bool = False

    # -- socket

    def connected(self, now: float) -> None:
        """A fresh socket: register again, at once."""
        self.registered = False
        self.last_recv = now
        self.last_send = float("-inf")

    def _send(self, msg: object, now: float) -> Send:
        self.last_send = now
        return Send(msg)

    # -- from the broker

    def on_message(self, msg: object, now: float) -> list[Action]:
        self.last_recv = now
        if isinstance(msg, Disconnect):
            if self.stopping_since is not None:
                return []  # we said Goodbye: the broker forgot us on purpose
            self.registered = False
            acts = self._abandon()
            if now - self.last_disconnect > self.times.heartbeat_interval_s:
                self.last_send = float("-inf")  # re-register at once, unless refused again and again
            self.last_disconnect = now
            return acts
        self.registered = True
        if isinstance(msg, Lease):
            if self.job is not None or self.lease is not None or self.stopping_since is not None:
                busy = ErrorInfo("bad_request", "worker busy", 409)
                return [self._send(LeaseFailed(msg.lease_id, busy), now)]
            self.lease, self.lease_ending = msg.lease_id, False
            return [StartLease(msg.lease_id)]
        if isinstance(msg, LeaseEnd):
            return self._end_lease() if self.lease == msg.lease_id else []
        if isinstance(msg, Assign):
            if self.job is not None or self.lease is not None or self.stopping_since is not None:
                return [self._send(JobFailed(msg.job_id, error("internal", "worker busy"), False), now)]
            self.job = JobState(msg.job_id)
            return [StartRun(msg.job_id, msg.spec)]
        if isinstance(msg, Cancel):
            job = self.job
            if job is not None and job.id == msg.job_id and job.running:
                return [CancelRun(job.id)]
        return []

    def _end_lease(self) -> list[Action]:
        if self.lease is None or self.lease_ending:
            return []
        self.lease_ending = True
        return [EndLease(self.lease)]

    def _abandon(self) -> list[Action]:
        """The broker no longer knows our job: stop it silently (the reset still happens)."""
        if self.lease is not None:
            return self._end_lease()
        job = self.job
        if job is None or job.id in self.abandoned:
            return []
        self.abandoned.add(job.id)
        return [CancelRun(job.id)] if job.running else []

    # -- from the backend

    def start(self, job_id: str, now: float) -> list[Action]:
        """The backend is about to do something irreversible: from here on no replay."""
        job = self.job
        if job is None or job.id != job_id or job.started:
            return []
        job.started = True
        return [] if job_id in self.abandoned else [self._send(Started(job_id), now)]

    def emit(self, job_id: str, content: str, reasoning: str, now: float,
             tool_calls: tuple[NativeCall, ...] = ()) -> list[Action]:
        job = self.job
        if job is None or job.id != job_id or not job.running or not (
                content or reasoning or tool_calls):
            return []
        acts = self.start(job_id, now)
        job.output_sent = True
        if job_id not in self.abandoned:
            acts.append(self._send(Chunk(job_id, job.seq, content, reasoning, tool_calls), now))
        job.seq += 1
        return acts

    def run_finished(self, job_id: str, outcome: RunOutcome, now: float) -> list[Action]:
        job = self.job
        if job is None or job.id != job_id or not job.running:
            return []
        job.running = False
        acts: list[Action] = []
        if isinstance(outcome, Finished):
            acts += self.start(job_id, now)
            reply: object = Done(job_id, outcome.finish_reason, outcome.usage)
        elif isinstance(outcome, Cancelled):
            reply = Done(job_id, "cancelled")
        elif isinstance(outcome, Failed):
            reply = JobFailed(job_id, outcome.error, job.output_sent)
        else:
            self.dead = True
            reply = JobFailed(job_id, error("broken", f"browser died: {outcome.message}"),
                              job.output_sent)
        if job_id not in self.abandoned:
            acts.append(self._send(reply, now))
        if not self.dead:
            acts.append(ResetPage(job_id))
        else:
            self._forget_job()
        return acts

    def reset_finished(self, job_id: str, ok: bool, now: float) -> list[Action]:
        """The page is ready for the next job (or could not be reset: the worker is done for)."""
        if self.job is None or self.job.id != job_id:
            return []
        if not ok:
            self.dead = True
        self._forget_job()
        if not self.dead and self.registered:
            return [self._send(Idle(), now)]
        return []

    def _forget_job(self) -> None:
        if self.job is not None:
            self.abandoned.discard(self.job.id)
        self.job = None

    # -- leases, from the backend

    def lease_started(self, lease_id: str, ws_url: str | None, err: ErrorInfo | None,
                      now: float) -> list[Action]:
        """The browser's CDP endpoint (or why there is none: then it is taken back at once)."""
        if self.lease != lease_id or self.lease_ending:
            return []
        if ws_url is not None:
            return [self._send(Leased(lease_id, ws_url), now)]
        acts: list[Action] = [self._send(LeaseFailed(
            lease_id, err or error("internal", "the browser has no CDP endpoint")), now)]
        return acts + self._end_lease()

    def lease_finished(self, lease_id: str, ok: bool, account: ErrorInfo | None,
                       now: float) -> list[Action]:
        """The browser is back to its clean state; `account` is the login found after the
        lease (None: usable), said before `Idle` so a repaired account returns to rotation."""
        if self.lease != lease_id:
            return []
        self.lease, self.lease_ending = None, False
        if not ok:
            self.dead = True
            return []
        if not self.registered:
            return []  # the next Ready carries the account's state
        return [self._send(AccountState(account), now), self._send(Idle(), now)]

    def backend_dead(self) -> None:
        self.dead = True

    # -- the clock and stopping

    def stop(self, now: float) -> list[Action]:
        """Take no new jobs; finish the current one within the drain timeout."""
        if self.stopping_since is not None:
            return []
        self.stopping_since = now
        return [self._send(Goodbye("stopping"), now)]

    def tick(self, now: float) -> list[Action]:
        t = self.times
        if self.dead:
            return [self._send(Goodbye("browser died"), now), Exit(1)]
        acts: list[Action] = []
        if self.stopping_since is not None:
            if self.job is None:
                return [Exit(0)]
            if now - self.stopping_since > t.drain_timeout_s:
                job = self.job
                if job.id not in self.abandoned:
                    acts.append(self._send(JobFailed(job.id, error("worker_died", "worker stopped"),
                                                     job.output_sent), now))
                acts += self._abandon()
                return acts + [Exit(0)]
        elif now - self.last_recv > t.heartbeat_interval_s * t.heartbeat_liveness:
            acts += self._abandon()
            acts.append(Reconnect())
            self.connected(now)
        if now - self.last_send >= t.heartbeat_interval_s:
            if not self.registered:
                # Never re-register while a forgotten job still resets, nor when stopping.
                if self.job is None and self.lease is None and self.stopping_since is None:
                    acts.append(self._send(self.ready(), now))
            elif t.send_heartbeats:
                acts.append(self._send(Heartbeat(), now))  # also while draining
        return acts
