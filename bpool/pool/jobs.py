"""The broker's job bookkeeping (no I/O): assigning, queueing with deadlines, moving, failing
and cancelling jobs. `BrokerCore` (core.py) inherits it and decides when each of these happens.
"""

from __future__ import annotations

import heapq
from collections import deque

from bpool.pool.state import MAX_MOVES, Job, SendFront, SendWorker, Worker
from bpool.protocol import Assign, Assigned, Cancel, ErrorInfo, Failed, error


class JobBook:
    # Set by BrokerCore.__init__.
    counters: dict[str, int]
    _workers: dict[bytes, Worker]
    _queue: deque[Job]
    _deadlines: list[tuple[float, int, Job]]
    _seq: int
    _jobs: dict[str, Job]
    _avg_job_s: float

    def _take_idle(self, model: str) -> Worker | None:
        raise NotImplementedError

    def _set_state(self, w: Worker, state, now: float) -> None:
        raise NotImplementedError

    def _count_error(self, w: Worker, model: str, kind: str) -> None:
        raise NotImplementedError

    def _assign(self, w: Worker, job: Job, now: float, acts) -> None:
        job.state = "running"
        job.worker = w.identity
        job.started = False
        job.assigned_at = now
        w.job = job
        w.held = True
        self._set_state(w, "busy", now)
        w.last_sent = now
        acts.append(SendWorker(w.identity, Assign(job.job_id, job.spec)))
        acts.append(SendFront(job.front, Assigned(job.job_id, w.profile)))

    def _enqueue(self, job: Job, now: float, *, front_of_queue: bool) -> None:
        job.state = "queued"
        job.worker = None
        job.deadline = now + job.queue_timeout_s
        if front_of_queue:
            self._queue.appendleft(job)
        else:
            self._queue.append(job)
        self._seq += 1
        heapq.heappush(self._deadlines, (job.deadline, self._seq, job))
        if len(self._deadlines) > 4 * (len(self._queue) + 256):
            # Entries of jobs that left the queue linger until their deadline; under a steady
            # backlog at thousands of jobs/s that adds up, so rebuild from the live queue.
            self._deadlines = [(j.deadline, i, j) for i, j in enumerate(self._queue)]
            heapq.heapify(self._deadlines)

    def _requeue(self, job: Job, now: float, acts) -> None:
        """Move a job that never produced output: first in line, it already waited once."""
        job.moves += 1
        self.counters["jobs_moved"] += 1
        w = self._take_idle(job.spec.model)
        if w is not None:
            self._assign(w, job, now, acts)
        else:
            self._enqueue(job, now, front_of_queue=True)

    def _end_job(self, w: Worker, job: Job, now: float) -> None:
        w.job = None
        job.state = "ended"
        job.worker = None
        self._jobs.pop(job.job_id, None)

    def _fail(self, job: Job, err: ErrorInfo, acts) -> None:
        job.state = "ended"
        self._jobs.pop(job.job_id, None)
        self.counters["jobs_failed"] += 1
        acts.append(SendFront(job.front, Failed(job.job_id, err)))

    def _cancel(self, job: Job, acts) -> None:
        """Stop a job for a client that no longer wants it; its worker stays held until Idle."""
        self.counters["cancelled"] += 1
        self._jobs.pop(job.job_id, None)
        if job.state == "queued":
            self._queue.remove(job)
        elif job.worker is not None:
            w = self._workers.get(job.worker)
            if w is not None:
                w.job = None  # what it still sends for this job is late
                acts.append(SendWorker(w.identity, Cancel(job.job_id)))
        job.state = "ended"

    def _lose_job(self, job: Job, w: Worker, why: str, now: float, acts) -> None:
        """The worker holding `job` is gone (or lost it): move it once if it never started."""
        job.worker = None
        self._count_error(w, job.spec.model, "worker_died")
        if not job.started and not job.moved_for_death and job.moves < MAX_MOVES:
            job.moved_for_death = True
            self._requeue(job, now, acts)
        else:
            self._fail(job, error("worker_died", f"worker {w.profile} {why} while running the job"), acts)

    def _retry_after(self) -> float:
        """A rough wait before a retry may find room: the queue's drain time, within 1-5 s."""
        est = self._avg_job_s * (len(self._queue) + 1) / max(1, len(self._workers))
        return round(min(5.0, max(1.0, est)), 1)
