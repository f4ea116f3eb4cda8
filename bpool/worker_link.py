"""The DEALER side of the worker protocol, shared by the browser worker and the fake worker.

A backend only produces answers. This module owns everything else the broker contract asks of a
worker: registration (`Ready`, repeated until the broker answers), heartbeats in both directions
from the link's own task (so a busy browser still looks alive), a fresh socket and identity when
the broker goes silent, re-registration after `Disconnect`, one job at a time, `Cancel`, the reset
before `Idle`, and drain + `Goodbye` on stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Protocol

import zmq
import zmq.asyncio

from bpool import _zmq, config, curve
from bpool.protocol import (
    PROTOCOL_VERSION,
    Assign,
    BrokerToWorker,
    Cancel,
    Chunk,
    Disconnect,
    Done,
    ErrorInfo,
    Goodbye,
    Heartbeat,
    Idle,
    JobFailed,
    JobSpec,
    Ready,
    Started,
    Usage,
    decoder,
    encoder,
    error,
)

log = logging.getLogger("bpool.worker")


class JobError(Exception):
    """Raised by a backend to fail the current job with a specific ErrorInfo."""

    def __init__(self, err: ErrorInfo):
        super().__init__(err.message)
        self.error = err


class BackendDead(Exception):
    """The backend (its browser) is gone: fail the job, say Goodbye, exit non-zero."""


class Backend(Protocol):
    profile_id: str
    engine: str
    account: str
    models: tuple[str, ...]
    unusable: ErrorInfo | None

    async def run(self, job: "Job") -> tuple[str, Usage | None]: ...

    async def reset(self) -> None: ...


@dataclass
class LinkSettings:
    endpoint: str
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    drain_timeout_s: float = 30.0
    send_heartbeats: bool = True
    curve_keys: tuple[bytes, bytes, bytes] | None = None  # for tcp:// brokers on other hosts
    timings_path: str = ""  # BPOOL_TIMINGS_FILE: one JSON line of phase times per job (benchmarks)

    @classmethod
    def from_env(cls) -> "LinkSettings":
        return cls(
            endpoint=config.worker_endpoint(),
            curve_keys=curve.client_keys_from_env(),
            timings_path=config.env_str("BPOOL_TIMINGS_FILE", ""),
            heartbeat_interval_s=config.heartbeat_interval_s(),
            heartbeat_liveness=config.heartbeat_liveness(),
            drain_timeout_s=config.env_float("BPOOL_DRAIN_TIMEOUT_S", 30.0),
        )


class Job:
    """One assigned job as the backend sees it."""

    def __init__(self, link: "_Link", job_id: str, spec: JobSpec):
        self.id = job_id
        self.spec = spec
        self.output_sent = False
        self.started = False
        self._link = link
        self._seq = 0
        # Monotonic phase times (the clock is shared by every process on the host).
        self.t_received = time.monotonic()
        self.t_started = self.t_first = self.t_last = 0.0

    def start(self) -> None:
        """Acknowledge the job: from here on the broker will never replay it elsewhere."""
        if not self.started:
            self.started = True
            self.t_started = time.monotonic()
            self._link.send(Started(self.id))

    def emit(self, content: str = "", reasoning: str = "") -> None:
        if not content and not reasoning:
            return
        self.start()
        self.output_sent = True
        self.t_last = time.monotonic()
        if not self.t_first:
            self.t_first = self.t_last
        self._link.send(Chunk(self.id, self._seq, content, reasoning))
        self._seq += 1


class _Link:
    def __init__(self, backend: Backend, settings: LinkSettings, stop: asyncio.Event):
        self.backend = backend
        self.settings = settings
        self.stop = stop
        # A worker orphaned by its supervisor (kill -9 of supervisord, and a wrapper that did
        # not pass the parent-death signal on) stops as if told to: a new pool cannot start
        # this profile while it holds the profile's lock.
        self.parent = os.getppid()
        self.ctx = zmq.asyncio.Context.instance()
        self.enc = encoder()
        self.dec = decoder(BrokerToWorker)
        self.incarnation = os.urandom(8).hex()
        self.sock: zmq.asyncio.Socket | None = None
        self.raw: zmq.Socket | None = None
        self.registered = False
        self.last_recv = 0.0
        self.last_send = 0.0
        self.job: Job | None = None
        self.job_task: asyncio.Task | None = None
        self.run_task: asyncio.Task | None = None
        self.abandoned: set[str] = set()  # jobs the broker has forgotten (Disconnect / lost)
        self.dead = False
        self.last_disconnect = 0.0
        self.readable: _zmq.Readable

    # -- socket

    def open(self) -> None:
        self.close()
        ident = _zmq.new_identity(self.backend.profile_id)
        keys = self.settings.curve_keys
        setup = (lambda sock: curve.apply_client(sock, keys)) if keys else None
        self.sock = _zmq.dealer(self.ctx, self.settings.endpoint, identity=ident, setup=setup)
        self.raw = zmq.Socket.shadow(self.sock.underlying)
        self.readable = _zmq.Readable(self.raw)
        self.registered = False
        self.last_recv = time.monotonic()
        self.last_send = 0.0

    def close(self) -> None:
        if self.sock is not None:
            self.readable.close()
            self.sock.close(linger=0)
            self.sock = self.raw = None

    def send(self, msg: object) -> None:
        if self.raw is None:
            return
        try:
            self.raw.send(self.enc.encode(msg), zmq.NOBLOCK)
            self.last_send = time.monotonic()
            self.readable.after_send()
        except zmq.Again:
            pass  # no live connection to the broker: liveness will notice and reconnect

    def recv_all(self):
        assert self.raw is not None
        for frame in _zmq.recv_ready(self.raw):
            self.last_recv = time.monotonic()
            yield frame

    def send_ready(self) -> None:
        b = self.backend
        self.send(
            Ready(PROTOCOL_VERSION, b.profile_id, os.getpid(), self.incarnation,
                  b.engine, b.account, tuple(b.models), b.unusable)
        )

    # -- jobs

    def abandon_job(self) -> None:
        """The broker no longer knows our job: stop it silently (the reset still happens)."""
        if self.job is not None:
            self.abandoned.add(self.job.id)
            if self.run_task is not None and not self.run_task.done():
                self.run_task.cancel()

    async def run_job(self, job: Job) -> None:
        assert self.run_task is not None
        reply: object | None
        try:
            finish, usage = await self.run_task
            job.start()
            reply = Done(job.id, finish, usage)
        except asyncio.CancelledError:
            if self.run_task.cancelled():
                reply = Done(job.id, "cancelled")
            else:  # the job task itself was cancelled: we are shutting down
                raise
        except JobError as exc:
            reply = JobFailed(job.id, exc.error, job.output_sent)
        except BackendDead as exc:
            log.error("browser died during job: %s", exc)
            self.dead = True
            reply = JobFailed(job.id, error("broken", f"browser died: {exc}"), job.output_sent)
        except Exception as exc:  # a bug in the backend must not take the worker down silently
            log.exception("job failed unexpectedly")
            reply = JobFailed(job.id, error("internal", f"worker error: {exc}"), job.output_sent)
        if job.id not in self.abandoned:
            self.send(reply)
        if not self.dead:
            try:
                await self.backend.reset()
            except Exception as exc:
                log.error("could not reset the page after a job: %s", exc)
                self.dead = True
        self.abandoned.discard(job.id)
        self.job = None
        self.run_task = None
        if not self.dead and self.registered:
            self.send(Idle())
        if self.settings.timings_path:
            self.write_timings(job, type(reply).__name__)

    def write_timings(self, job: Job, outcome: str) -> None:
        line = {"profile": self.backend.profile_id, "job_id": job.id, "outcome": outcome,
                "received": job.t_received, "started": job.t_started, "first_chunk": job.t_first,
                "last_chunk": job.t_last, "idle": time.monotonic()}
        with open(self.settings.timings_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def on_message(self, msg: object) -> None:
        if isinstance(msg, Disconnect):
            if self.stop.is_set():
                return  # we said Goodbye: the broker has forgotten us on purpose
            log.info("broker asked to re-register (%s)", msg.reason)
            self.registered = False
            self.abandon_job()
            now = time.monotonic()
            if now - self.last_disconnect > self.settings.heartbeat_interval_s:
                self.last_send = 0.0  # re-register at once, unless the broker keeps refusing us
            self.last_disconnect = now
            return
        self.registered = True
        if isinstance(msg, Assign):
            if self.job is not None or self.stop.is_set():
                log.warning("refusing job %s: already busy or stopping", msg.job_id)
                self.send(JobFailed(msg.job_id, error("internal", "worker busy"), False))
                return
            self.job = Job(self, msg.job_id, msg.spec)
            # The run task exists before we read the next frame, so a Cancel right behind the
            # Assign finds something to cancel.
            self.run_task = asyncio.ensure_future(self.backend.run(self.job))
            self.job_task = asyncio.ensure_future(self.run_job(self.job))
        elif isinstance(msg, Cancel):
            if self.job is not None and self.job.id == msg.job_id and self.run_task is not None:
                self.run_task.cancel()

    # -- main loop

    async def serve(self) -> int:
        s = self.settings
        self.open()
        stopping_since: float | None = None
        wait_s = s.heartbeat_interval_s / 4
        while True:
            now = time.monotonic()
            if self.dead:
                self.send(Goodbye("browser died"))
                return 1
            if not self.stop.is_set() and os.getppid() != self.parent:
                log.warning("parent process %d is gone: stopping", self.parent)
                self.stop.set()
            if self.stop.is_set():
                if stopping_since is None:
                    stopping_since = now
                    log.info("stopping: draining the current job, then saying goodbye")
                    self.send(Goodbye("stopping"))
                if self.job is None:
                    return 0
                if now - stopping_since > s.drain_timeout_s:
                    log.warning("drain timeout: abandoning job %s", self.job.id)
                    self.send(JobFailed(self.job.id, error("worker_died", "worker stopped"),
                                        self.job.output_sent))
                    self.abandon_job()
                    if self.job_task is not None:
                        self.job_task.cancel()
                    return 0
            elif now - self.last_recv > s.heartbeat_interval_s * s.heartbeat_liveness:
                if self.registered:
                    log.warning("broker silent for %.1fs: reconnecting", now - self.last_recv)
                self.abandon_job()
                self.open()
            if now - self.last_send >= s.heartbeat_interval_s:
                if not self.registered:
                    # Never re-register while a forgotten job still resets, nor when stopping.
                    if self.job is None and not self.stop.is_set():
                        self.send_ready()
                elif s.send_heartbeats:
                    self.send(Heartbeat())  # also while draining: a quiet job must not expire
            for frame in self.recv_all():
                try:
                    msg = self.dec.decode(frame)
                except Exception:
                    log.warning("undecodable frame from the broker dropped")
                    continue
                self.on_message(msg)
            if not self.stop.is_set() or self.job is not None:
                await self.readable.wait(wait_s)

    async def shutdown(self) -> None:
        for task in (self.run_task, self.job_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:
                    pass
        self.close()


async def run_worker(backend: Backend, settings: LinkSettings, stop: asyncio.Event) -> int:
    """Serve jobs until `stop` is set (drain, Goodbye, 0) or the backend dies (1)."""
    link = _Link(backend, settings, stop)
    try:
        return await link.serve()
    finally:
        await link.shutdown()
