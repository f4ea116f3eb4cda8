"""The broker's decisions, with no sockets and no clock (the contract is in bpool/protocol.py).

Every input method takes `now` (monotonic seconds) and returns a list of actions for the shell to
perform. The core never raises on a decoded message: whatever a peer sends, the answer is an
action, a counter or a log line.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections import deque

from bpool.pool.health import AccountHealth
from bpool.pool.jobs import JobBook
from bpool.pool.leases import LeaseBook
from bpool.pool.state import (
    COUNTERS, MAX_MOVES, MOVABLE_KINDS, TIMED_STATES, Action, ForwardFront, Job, SendFront,
    SendWorker, Worker, WorkerState, can_take, nobody_in_time, rest_left, worker_status,
)
from bpool.protocol import (
    PROTOCOL_VERSION, AccountState, Cancel, Chunk, Disconnect, Done,
    Failed, Goodbye, Heartbeat, Idle, JobFailed, JobsKnown, JobsQuery, LeaseEnd, LeaseFailed,
    LeaseRequest, Leased, Ping, PoolStatus, Pong, ProfileInfo, Ready, Started, StatusQuery,
    StatusReply, Submit, error,
)

__all__ = ["Action", "BrokerCore", "ForwardFront", "SendFront", "SendWorker"]

log = logging.getLogger("bpool.broker")


class BrokerCore(AccountHealth, JobBook, LeaseBook):
    def __init__(
        self,
        *,
        heartbeat_interval_s: float = 1.0,
        heartbeat_liveness: int = 3,
        max_queue: int = 256,
        queue_timeout_s: float = 60.0,
        cooldown_s: float = 60.0,
        pause_s: float = 1800.0,
        broker_id: str | None = None,
    ) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.expiry_s = heartbeat_interval_s * heartbeat_liveness
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.cooldown_s = cooldown_s  # rate_limited with no retry_after_s
        self.pause_s = pause_s  # paused with no retry_after_s
        self.broker_id = broker_id or os.urandom(8).hex()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._workers: dict[bytes, Worker] = {}
        self._idle: deque[Worker] = deque()  # left = idle the longest
        self._queue: deque[Job] = deque()  # left = next to go
        self._deadlines: list[tuple[float, int, Job]] = []  # heap; stale entries skipped
        self._seq = 0
        self._jobs: dict[str, Job] = {}  # queued or running, by job id
        self._model_count: dict[str, int] = {}  # registered workers listing each model
        self._any_model = 0  # registered workers with an empty model list (serve anything)
        self._avg_job_s = 5.0  # moving average of job durations, for Retry-After estimates
        self._cool: dict[str, dict[str, float]] = {}  # rate-limit cool-downs (pool/health.py)
        self._usage = {}  # usage rows per profile and model (pool/health.py)
        self._next_cool_end = math.inf
        self.cooling_changed = False

    # ------------------------------------------------------------------ worker side

    def on_worker(self, identity: bytes, msg: object, raw: bytes, now: float) -> list[Action]:
        acts: list[Action] = []
        w = self._workers.get(identity)
        if isinstance(msg, Ready):
            self._on_ready(identity, w, msg, now, acts)
            return acts
        if w is None:
            self.counters["unknown_worker_messages"] += 1
            acts.append(SendWorker(identity, Disconnect("unknown worker: send Ready")))
            return acts
        w.last_seen = now
        match msg:
            case Chunk() | Done() | Started() | JobFailed():
                self._on_job_message(w, msg, raw, now, acts)
            case Idle():
                self._on_idle(w, now, acts)
            case AccountState(error=err, model=model):
                self._on_account_state(w, err, model, now, acts)
            case ProfileInfo(cookie_expires_at=expires):
                w.cookie_expires_at = expires
            case Leased() | LeaseFailed():
                self._on_leased(w, msg, acts)
            case Goodbye(reason=reason):
                w.leaving = True
                if w.job is None:
                    self._lease_over(w, f"the worker left ({reason})", acts)
                    self._forget(w, f"said goodbye ({reason})")
                else:
                    self._set_state(w, "draining", now)
        # Heartbeat: liveness only, refreshed above; it never makes a busy worker idle.
        return acts

    def _on_job_message(self, w: Worker, msg: Chunk | Done | Started | JobFailed, raw: bytes,
                        now: float, acts: list[Action]) -> None:
        job = w.job
        if job is None or job.job_id != msg.job_id:
            self.counters["late_messages"] += 1
            return
        match msg:
            case Chunk():
                acts.append(ForwardFront(job.front, raw))
            case Started():
                job.started = True
                self.counters["jobs_started"] += 1
            case Done():
                acts.append(ForwardFront(job.front, raw))
                self._end_job(w, job, now)
                w.jobs_served += 1
                row = w.usage.get(job.spec.model) or self._usage_row(w, job.spec.model)
                row.requests += 1
                if msg.usage is not None:
                    row.prompt_tokens += msg.usage.prompt_tokens
                    row.completion_tokens += msg.usage.completion_tokens
                if msg.finish_reason != "cancelled":
                    w.last_answer = now
                self.counters["jobs_done"] += 1
                self._avg_job_s += 0.2 * (now - job.assigned_at - self._avg_job_s)
            case JobFailed():
                self._on_job_failed(w, job, msg, now, acts)
        if w.leaving and w.job is None:
            self._forget(w, "left after its last job")

    def on_worker_garbage(self, identity: bytes, now: float) -> list[Action]:
        """An undecodable frame is the worker's fault: count it and ask it to re-register."""
        self.counters["decode_errors"] += 1
        w = self._workers.get(identity)
        if w is not None:
            w.last_seen = now
        return [SendWorker(identity, Disconnect("undecodable frame: send Ready"))]

    def worker_unreachable(self, identity: bytes, now: float) -> list[Action]:
        acts: list[Action] = []
        w = self._workers.get(identity)
        if w is not None:
            self.counters["workers_unreachable"] += 1
            self._remove(w, "unreachable", now, acts)
        return acts

    def _on_ready(self, identity: bytes, old: Worker | None, msg: Ready, now: float, acts) -> None:
        if old is not None and old.ready.incarnation == msg.incarnation and old.ready == msg:
            # A repeat that crossed our acknowledgement: the same registration, not a new one
            # (re-registering would hand its job to it a second time).
            self.counters["repeated_ready"] += 1
            acts.append(SendWorker(identity, Heartbeat()))
            return
        if old is not None:
            self._remove(old, "re-registered", now, acts)
        if msg.version != PROTOCOL_VERSION:
            self.counters["version_mismatch"] += 1
            log.warning("refused worker %s: protocol version %s", msg.profile_id, msg.version)
            reason = f"protocol version {msg.version} not supported (broker speaks {PROTOCOL_VERSION})"
            acts.append(SendWorker(identity, Disconnect(reason)))
            return
        w = Worker(identity, msg, frozenset(msg.models), "busy", now, now, now)
        self._profile_books(w)
        self._workers[identity] = w
        self.counters["workers_registered"] += 1
        if w.models:
            for m in w.models:
                self._model_count[m] = self._model_count.get(m, 0) + 1
        else:
            self._any_model += 1
        log.info(
            "worker %s registered (pid %s, %s, models %s)",
            w.profile, msg.pid, msg.engine or "?", ",".join(sorted(w.models)) or "any",
        )
        # Acknowledge at once: a worker repeats Ready until it hears from us, and a repeat that
        # crossed an Assign would look like a re-registration.
        acts.append(SendWorker(identity, Heartbeat()))
        if msg.unusable is not None:
            self._apply_account(w, msg.unusable, now)
            if w.state == "busy":  # a kind with no effect of its own: out of rotation, as asked
                self._set_state(w, "logged_out", now)
            return
        self._make_available(w, now, acts)

    def _on_job_failed(self, w: Worker, job: Job, msg: JobFailed, now: float, acts) -> None:
        err = msg.error
        w.last_error = f"{err.kind}: {err.message}"
        self._end_job(w, job, now)
        self._count_error(w, job.spec.model, err.kind)
        limited = err.kind == "rate_limited"  # for this model only: no account state
        if err.kind == "broken":
            w.broken = True
            self._set_state(w, "draining", now)
        elif err.kind in MOVABLE_KINDS and not limited:
            w.pending = err
        if err.kind in MOVABLE_KINDS and not msg.output_sent and job.moves < MAX_MOVES:
            self._requeue(job, now, acts)
        else:
            self._fail(job, err, acts)
        if limited:  # after the move: a moved job nobody can take now fails with the 429
            self._cool_model(w, job.spec.model, err, now, acts)

    def _on_idle(self, w: Worker, now: float, acts) -> None:
        if not w.held:
            return  # a repeated Idle, or one from an excluded worker: nothing to do
        w.held = False
        if w.lease is not None:  # its browser is reset: the lease is over
            self._lease_over(w, "the worker ended the lease", acts)
        if w.job is not None:  # the worker dropped a job it never finished
            job, w.job = w.job, None
            self._lose_job(job, w, "went idle without finishing the job", now, acts)
        if w.leaving:
            self._forget(w, "left after its last job")
        elif w.broken:
            self._set_state(w, "draining", now)
        elif w.pending is not None:
            err, w.pending = w.pending, None
            self._apply_account(w, err, now)
            if w.state == "busy":  # an error kind with no account effect
                self._make_available(w, now, acts)
        else:
            self._make_available(w, now, acts)

    # ------------------------------------------------------------------ front side

    def on_front(self, front: bytes, msg: object, now: float) -> list[Action]:
        acts: list[Action] = []
        match msg:
            case Submit():
                self._on_submit(front, msg, now, acts)
            case Cancel(job_id=job_id):
                job = self._jobs.get(job_id)
                if job is not None and job.front == front:
                    was_queued = job.state == "queued"
                    self._cancel(job, acts)
                    # A running job's front has given up on it: what its worker still sends is late.
                    if was_queued:
                        acts.append(SendFront(front, Failed(job.job_id, error("cancelled", "cancelled"))))
            case Ping(nonce=nonce):
                acts.append(SendFront(front, Pong(nonce, self.broker_id)))
            case StatusQuery(query_id=qid):
                acts.append(SendFront(front, StatusReply(qid, self.status(now))))
            case JobsQuery(query_id=qid, job_ids=job_ids):
                known = tuple(j for j in job_ids if j in self._jobs)
                acts.append(SendFront(front, JobsKnown(qid, known)))
            case LeaseRequest():
                self._on_lease_request(front, msg, now, acts)
            case LeaseEnd(lease_id=lease_id):
                self._on_lease_end(front, lease_id, acts)
        return acts

    def on_front_garbage(self, front: bytes, now: float) -> list[Action]:
        self.counters["decode_errors"] += 1
        return []

    def front_unreachable(self, front: bytes, now: float) -> list[Action]:
        """The front that submitted jobs is gone: stop its work instead of finishing it for nobody."""
        acts: list[Action] = []
        lost = [job for job in self._jobs.values() if job.front == front]
        if lost:
            self.counters["fronts_lost"] += 1
        for job in lost:
            self._cancel(job, acts)
        for w in list(self._workers.values()):  # nobody is left to use its leases
            if w.lease is not None and w.lease.front == front:
                self._on_lease_end(front, w.lease.lease_id, acts)
        return acts

    def _on_submit(self, front: bytes, msg: Submit, now: float, acts) -> None:
        self.counters["jobs_submitted"] += 1
        model = msg.spec.model
        if msg.job_id in self._jobs:
            self.counters["jobs_failed"] += 1
            err = error("bad_request", f"job id {msg.job_id!r} is already in use")
            acts.append(SendFront(front, Failed(msg.job_id, err)))
            return
        if self._workers and not self._any_model and not self._model_count.get(model):
            self.counters["jobs_failed"] += 1
            available = ", ".join(sorted(self._model_count)) or "none"
            err = error("model_not_found", f"model {model!r} is not served here; available: {available}")
            acts.append(SendFront(front, Failed(msg.job_id, err)))
            return
        timeout = msg.queue_timeout_s
        if timeout is None or not timeout >= 0:  # None or NaN: the pool's default
            timeout = self.queue_timeout_s
        w = self._take_idle(model)
        if w is None:  # only then can nobody be in time (keeps the common path short)
            hopeless = nobody_in_time(self._workers.values(), model, now, timeout)
            if hopeless is not None:
                self.counters["jobs_failed"] += 1
                acts.append(SendFront(front, Failed(msg.job_id, hopeless)))
                return
        job = Job(msg.job_id, msg.spec, front, timeout)
        if w is not None:
            self._jobs[job.job_id] = job
            self._assign(w, job, now, acts)
        elif len(self._queue) >= self.max_queue:
            self.counters["queue_full"] += 1
            self.counters["jobs_failed"] += 1
            err = error("queue_full", f"{len(self._queue)} requests already waiting", retry_after_s=self._retry_after())
            acts.append(SendFront(front, Failed(job.job_id, err)))
        else:
            self._jobs[job.job_id] = job
            self._enqueue(job, now, front_of_queue=False)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[Action]:
        """Heartbeats out, dead workers out, cooled-down and paused workers back, overdue queued
        jobs failed."""
        acts: list[Action] = []
        for w in list(self._workers.values()):
            if now - w.last_seen > self.expiry_s:
                self.counters["workers_expired"] += 1
                self._remove(w, f"silent for {now - w.last_seen:.1f} s", now, acts)
                continue
            if w.state in TIMED_STATES and now >= w.cooldown_until:
                self._make_available(w, now, acts)
            if now - w.last_sent >= self.heartbeat_interval_s:
                w.last_sent = now
                acts.append(SendWorker(w.identity, Heartbeat()))
        if now >= self._next_cool_end:
            self._expire_cooldowns(now, acts)
        self._lease_deadlines(now, acts)
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, job = heapq.heappop(heap)
            if job.state == "queued" and job.deadline == deadline:
                self._queue.remove(job)
                self.counters["queue_timeout"] += 1
                # While every account for the model rests, a retry helps only once one is back.
                left = rest_left(self._workers.values(), job.spec.model, now)
                err = error(
                    "queue_timeout",
                    f"no worker became free within {job.queue_timeout_s:g} s",
                    retry_after_s=max(self._retry_after(), round(left or 0.0, 1)),
                )
                self._fail(job, err, acts)
        return acts

    # ------------------------------------------------------------------ internals

    def _set_state(self, w: Worker, state: WorkerState, now: float) -> None:
        """The one place a worker's state changes (logged, with the time it changed)."""
        if state != w.state:
            # idle <-> busy happens on every job: too common to log.
            if state not in ("idle", "busy") or w.state not in ("idle", "busy"):
                log.info("worker %s: %s -> %s", w.profile, w.state, state)
            w.state = state
            w.since = now
            if state == "cooling":  # per profile, for /metrics (profiles are few: one per file)
                key = f"cooldowns:{w.profile}"
                self.counters[key] = self.counters.get(key, 0) + 1

    def _take_idle(self, model: str) -> Worker | None:
        idle = self._idle
        for i, w in enumerate(idle):
            # The longest-idle worker whose account is not cooling down for this model.
            if (not w.models or model in w.models) and model not in w.cooling:
                del idle[i]
                return w
        return None

    def _make_available(self, w: Worker, now: float, acts) -> None:
        """w holds nothing and may work: give it the oldest job it can serve, else park it."""
        for i, job in enumerate(self._queue):
            if can_take(w, job.spec.model):
                del self._queue[i]
                self._assign(w, job, now, acts)
                return
        self._set_state(w, "idle", now)
        self._idle.append(w)

    def _remove(self, w: Worker, why: str, now: float, acts) -> None:
        self._lease_over(w, f"worker {w.profile} {why} during the lease", acts)
        self._forget(w, why)
        if w.job is not None:
            job, w.job = w.job, None
            self._lose_job(job, w, why, now, acts)

    def _forget(self, w: Worker, why: str) -> None:
        if self._workers.pop(w.identity, None) is None:
            return
        if w.state == "idle":
            self._idle.remove(w)
        if w.models:
            for m in w.models:
                if self._model_count[m] <= 1:
                    del self._model_count[m]
                else:
                    self._model_count[m] -= 1
        else:
            self._any_model -= 1
        self.counters["workers_left"] += 1
        log.info("worker %s removed: %s", w.profile, why)

    # ------------------------------------------------------------------ status

    def status(self, now: float) -> PoolStatus:
        workers = tuple(
            worker_status(w, now)
            for w in self._workers.values()
        )
        return PoolStatus(self.broker_id, workers, len(self._queue), dict(self.counters),
                          self.usage_rows())
