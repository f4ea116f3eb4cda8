"""The front's DEALER link to the broker: submits jobs and routes the answers to their requests.

`BrokerWatch` is the sans-IO part (when is the broker lost?); `BrokerLink` owns the socket, a
reader task that dispatches each BrokerToFront message to the queue of its job, and a ping task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Callable

import msgspec
import zmq

from bpool import protocol

from bpool.wire import sockets as _zmq
from bpool.front.errors import ApiError
from bpool.protocol import (
    Assigned, BrokerToFront, Cancel, Chunk, Done, ErrorInfo, Failed, JobsKnown, JobsQuery, JobSpec,
    LeaseEnd, LeaseGranted, LeaseRequest, Ping, PoolStatus,
    Pong, StatusQuery, StatusReply, Submit,
)

log = logging.getLogger("bpool.front")

JobEvent = Assigned | Chunk | Done | Failed | LeaseGranted


class BrokerWatch:
    """Decides when the broker counts as lost: silent for `silence_s`, or a different broker
    (its id changed, i.e. it restarted and forgot every job we sent it)."""

    def __init__(self, silence_s: float, now: float) -> None:
        self.silence_s = silence_s
        self.broker_id: str | None = None
        self.last_pong = now  # grace period at start: not "lost" before the first deadline

    def on_pong(self, broker_id: str, now: float) -> bool:
        """Record a Pong; True if it comes from a different broker than before."""
        changed = self.broker_id is not None and broker_id != self.broker_id
        self.broker_id = broker_id
        self.last_pong = now
        return changed

    def lost(self, now: float) -> bool:
        return now - self.last_pong > self.silence_s


class BrokerLink:
    def __init__(
        self, endpoint: str, heartbeat_interval_s: float, liveness: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.interval_s = heartbeat_interval_s
        self.clock = clock
        self.watch = BrokerWatch(heartbeat_interval_s * liveness, clock())
        self.jobs: dict[str, asyncio.Queue[JobEvent]] = {}
        self.queries: dict[int, asyncio.Future[PoolStatus]] = {}
        self.counters = {"submitted": 0, "cancelled": 0, "late": 0, "bad_frames": 0,
                         "broker_lost": 0, "no_broker": 0}
        self._ids = itertools.count(1)
        self._enc = protocol.encoder()
        self._dec = protocol.decoder(BrokerToFront)
        self._ctx: zmq.Context | None = None
        self._raw: zmq.Socket | None = None  # the same socket, used without futures
        self._readable: _zmq.Readable | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._was_lost = False
        self._verifying: dict[int, set[str]] = {}  # JobsQuery id -> the jobs it asked about

    # -------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._ctx = zmq.Context()
        identity = _zmq.new_identity(f"front-{os.getpid()}")
        self._raw = _zmq.dealer(self._ctx, self.endpoint, identity)
        self._readable = _zmq.Readable(self._raw)
        self._tasks = [asyncio.create_task(self._reader(), name="broker-reader"),
                       asyncio.create_task(self._pinger(), name="broker-pinger")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_all(protocol.error("broker_lost", "The front is shutting down"))
        if self._raw is not None:
            self._readable.close()
            self._raw.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()

    # -------------------------------------------------------------------- sending

    def _send(self, msg: msgspec.Struct) -> None:
        """Send without waiting. With IMMEDIATE a missing broker shows up as zmq.Again at once."""
        self._send_frame(self._enc.encode(msg))

    def _send_frame(self, frame: bytes) -> None:
        assert self._raw is not None, "link not started"
        self._raw.send(frame, zmq.NOBLOCK)
        self._readable.after_send()

    def submit(self, job_id: str, spec: JobSpec, queue_timeout_s: float) -> asyncio.Queue[JobEvent]:
        """Hand a job to the broker; its events arrive on the returned queue.

        The job is tracked only once its Submit is on its way: a message that cannot be encoded
        or sent raises with nothing left behind (no entry that would count as in flight forever).
        No answer can overtake the registration: the reader runs on this same loop."""
        if self.watch.lost(self.clock()):
            self.counters["no_broker"] += 1
            raise ApiError(503, "The broker is not answering; try again shortly",
                           code="broker_lost", retry_after_s=max(1.0, self.interval_s))
        try:
            frame = self._enc.encode(Submit(job_id, spec, queue_timeout_s))
        except (OverflowError, TypeError, ValueError, msgspec.EncodeError) as exc:
            log.warning("job %s could not be encoded: %s", job_id, type(exc).__name__)
            raise ApiError(400, "The request holds a value the pool cannot carry",
                           code="invalid_value") from None
        try:
            self._send_frame(frame)
        except zmq.ZMQError:
            self.counters["no_broker"] += 1
            raise ApiError(503, "No broker is connected; try again shortly",
                           code="broker_unavailable", retry_after_s=1.0) from None
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self.jobs[job_id] = queue
        self.counters["submitted"] += 1
        return queue

    def cancel(self, job_id: str) -> None:
        """Stop a job the client no longer waits for, so its worker is freed. Never raises."""
        self.jobs.pop(job_id, None)
        self.counters["cancelled"] += 1
        try:
            self._send(Cancel(job_id))
        except zmq.ZMQError as exc:
            # No broker: it has forgotten the job anyway (a restarted broker fails it itself).
            log.info("could not send Cancel for job %s: %s", job_id, exc)

    def lease(self, lease_id: str, profile_id: str, timeout_s: float) -> asyncio.Queue[JobEvent]:
        """Ask for an account lease (docs/sessions.md): `LeaseGranted`, then a `Failed` when
        the pool ends it (or at once when refused), arrive on the returned queue. Tracked like
        a job, so a lost or restarted broker fails it too."""
        if self.watch.lost(self.clock()):
            raise ApiError(503, "The broker is not answering; try again shortly",
                           code="broker_lost", retry_after_s=max(1.0, self.interval_s))
        try:
            self._send(LeaseRequest(lease_id, profile_id, timeout_s))
        except zmq.ZMQError:
            raise ApiError(503, "No broker is connected; try again shortly",
                           code="broker_unavailable", retry_after_s=1.0) from None
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self.jobs[lease_id] = queue
        return queue

    def end_lease(self, lease_id: str) -> None:
        """Give a leased browser back. Never raises."""
        self.jobs.pop(lease_id, None)
        try:
            self._send(LeaseEnd(lease_id))
        except zmq.ZMQError as exc:
            log.info("could not send LeaseEnd for %s: %s", lease_id, exc)

    def forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    async def status(self, timeout_s: float) -> PoolStatus:
        query_id = next(self._ids)
        fut: asyncio.Future[PoolStatus] = asyncio.get_running_loop().create_future()
        self.queries[query_id] = fut
        try:
            self._send(StatusQuery(query_id))
            return await asyncio.wait_for(fut, timeout_s)
        except zmq.ZMQError:
            raise ApiError(503, "No broker is connected", code="broker_unavailable",
                           retry_after_s=1.0) from None
        except TimeoutError:
            raise ApiError(503, f"The broker did not answer within {timeout_s:g} s",
                           code="broker_lost", retry_after_s=1.0) from None
        finally:
            self.queries.pop(query_id, None)

    @property
    def broker_ok(self) -> bool:
        return not self.watch.lost(self.clock())

    # -------------------------------------------------------------------- receiving

    def _fail_all(self, info: ErrorInfo, only: set[str] | None = None) -> None:
        if only is None:
            jobs, self.jobs = self.jobs, {}
        else:
            jobs = {j: self.jobs.pop(j) for j in only if j in self.jobs}
        for job_id, queue in jobs.items():
            queue.put_nowait(Failed(job_id, info))
            try:  # a broker that was only slow still holds the job: free its worker
                self._send(Cancel(job_id))
            except zmq.ZMQError:
                pass
        if jobs:
            self.counters["broker_lost"] += len(jobs)
            log.warning("failed %d in-flight job(s): %s", len(jobs), info.message)

    def dispatch(self, msg: BrokerToFront) -> None:
        if isinstance(msg, Pong):
            if self.watch.on_pong(msg.broker_id, self.clock()):
                # Jobs sent to the old broker died with it, but a Submit sent after the restart
                # (before this Pong) is safe at the new one: ask which is which.
                log.warning("the broker restarted (new id %s)", msg.broker_id)
                query = JobsQuery(next(self._ids), tuple(self.jobs))
                try:
                    self._send(query)
                    self._verifying[query.query_id] = set(query.job_ids)
                except zmq.ZMQError:
                    self._fail_all(protocol.error("broker_lost", "The broker restarted mid-job"))
            if self._was_lost:
                log.info("the broker answers again (id %s)", msg.broker_id)
                self._was_lost = False
        elif isinstance(msg, JobsKnown):
            asked = self._verifying.pop(msg.query_id, set())
            self._fail_all(protocol.error("broker_lost", "The broker restarted mid-job"),
                           only=asked - set(msg.job_ids))
        elif isinstance(msg, StatusReply):
            fut = self.queries.get(msg.query_id)
            if fut is not None and not fut.done():
                fut.set_result(msg.status)
        elif isinstance(msg, LeaseGranted):
            queue = self.jobs.get(msg.lease_id)
            if queue is not None:
                queue.put_nowait(msg)
        else:
            queue = self.jobs.get(msg.job_id)
            if queue is None:
                self.counters["late"] += 1  # finished, cancelled or failed already
                return
            queue.put_nowait(msg)
            if isinstance(msg, (Done, Failed)):
                del self.jobs[msg.job_id]

    async def _reader(self) -> None:
        assert self._raw is not None
        while True:
            for frame in _zmq.recv_ready(self._raw):
                try:
                    msg = self._dec.decode(frame)
                except msgspec.DecodeError as exc:
                    self.counters["bad_frames"] += 1
                    log.warning("dropped an undecodable frame from the broker: %s", exc)
                    continue
                self.dispatch(msg)
            await self._readable.wait()

    async def _pinger(self) -> None:
        for nonce in itertools.count():
            try:
                self._send(Ping(nonce))
            except zmq.ZMQError:
                pass  # not connected: the silence check below notices
            if self.watch.lost(self.clock()):
                if not self._was_lost:
                    log.warning("the broker has been silent for over %.1f s",
                                self.watch.silence_s)
                    self._was_lost = True
                self._fail_all(protocol.error(
                    "broker_lost", "Lost contact with the broker", retry_after_s=1.0))
            await asyncio.sleep(self.interval_s)
