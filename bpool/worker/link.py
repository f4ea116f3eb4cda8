"""The DEALER side of the worker protocol, shared by the browser worker and the fake worker.

A backend only produces answers. What the broker contract asks of a worker (registration,
heartbeats from the link's own task so a busy browser still looks alive, one job at a time,
`Cancel`, the reset before `Idle`, re-registration, drain + `Goodbye`) is decided by the pure
`LinkCore` (bpool.worker.link_core); this shell owns the socket, the backend's tasks and the clock,
and performs the core's actions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import ClassVar, Protocol

import zmq
import zmq.asyncio

from bpool import config

from bpool.wire import sockets as _zmq

from bpool.wire import curve
from bpool.protocol import (PROTOCOL_VERSION, Assign, BrokerToWorker, Disconnect, Done, ErrorInfo,
                            JobFailed, JobSpec, NativeCall, ProfileInfo, Ready, Usage, decoder,
                            encoder, error)
from bpool.worker.link_core import (BackendGone, Cancelled, CancelRun, EndLease, Exit, Failed,
                                    Finished, LinkCore, LinkTimes, Reconnect, ResetPage,
                                    RunOutcome, Send, StartLease, StartRun)

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

    # Optional, for account leases (docs/sessions.md): `lease()` returns the browser's CDP
    # WebSocket URL (raises JobError to refuse); `end_lease()` takes the browser back and
    # returns the account's state found afterwards (None: usable). A backend without them
    # refuses every lease.


@dataclass(frozen=True)
class LinkSettings:
    ENV: ClassVar[dict[str, str]] = {
        "heartbeat_interval_s": "BPOOL_HEARTBEAT_INTERVAL_S",
        "heartbeat_liveness": "BPOOL_HEARTBEAT_LIVENESS",
        "drain_timeout_s": "BPOOL_DRAIN_TIMEOUT_S", "timings_path": "BPOOL_TIMINGS_FILE",
    }
    endpoint: str
    heartbeat_interval_s: config.Positive = config.default("BPOOL_HEARTBEAT_INTERVAL_S")
    heartbeat_liveness: config.Count = config.default("BPOOL_HEARTBEAT_LIVENESS")
    drain_timeout_s: config.NonNegative = config.default("BPOOL_DRAIN_TIMEOUT_S")
    send_heartbeats: bool = True
    curve_keys: tuple[bytes, bytes, bytes] | None = None  # for tcp:// brokers on other hosts
    timings_path: str = ""  # BPOOL_TIMINGS_FILE: one JSON line of phase times per job (benchmarks)

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> "LinkSettings":
        """From the registry's variables; `overrides` (flags) win. ConfigError if invalid."""
        return config.build(cls, {"endpoint": config.worker_endpoint(),
                                  "curve_keys": curve.client_keys_from_env(),
                                  **(overrides or {})})


class Job:
    """One assigned job as the backend sees it."""

    def __init__(self, link: "_Link", job_id: str, spec: JobSpec):
        self.id = job_id
        self.spec = spec
        self._link = link
        # Monotonic phase times (the clock is shared by every process on the host).
        self.t_received = time.monotonic()
        self.t_started = self.t_first = self.t_last = 0.0

    @property
    def started(self) -> bool:
        return self.t_started > 0

    @property
    def output_sent(self) -> bool:
        return self.t_first > 0

    def start(self) -> None:
        """Acknowledge the job: from here on the broker will never replay it elsewhere."""
        now = time.monotonic()
        acts = self._link.core.start(self.id, now)
        if acts and not self.t_started:
            self.t_started = now
        self._link.perform(acts)

    def emit(self, content: str = "", reasoning: str = "",
             tool_calls: tuple[NativeCall, ...] = ()) -> None:
        now = time.monotonic()
        acts = self._link.core.emit(self.id, content, reasoning, now, tool_calls)
        if acts:
            self.t_started = self.t_started or now
            self.t_last = now
            self.t_first = self.t_first or now
        self._link.perform(acts)


class _Link:
    """The socket and tasks around `LinkCore`, which decides what is sent and when."""

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
        self.core = LinkCore(self.ready, LinkTimes(
            settings.heartbeat_interval_s, settings.heartbeat_liveness,
            settings.drain_timeout_s, settings.send_heartbeats))
        self.sock: zmq.asyncio.Socket | None = None
        self.raw: zmq.Socket | None = None
        self.job: Job | None = None
        self.job_task: asyncio.Task | None = None
        self.run_task: asyncio.Task | None = None
        self.exit_code: int | None = None
        self.readable: _zmq.Readable
        self.told_expiry: float | None = None  # the cookie expiry the broker last heard of
        self.lease_task: asyncio.Task | None = None

    # -- socket

    def open(self) -> None:
        self.close()
        ident = _zmq.new_identity(self.backend.profile_id)
        keys = self.settings.curve_keys
        setup = (lambda sock: curve.apply_client(sock, keys)) if keys else None
        self.sock = _zmq.dealer(self.ctx, self.settings.endpoint, identity=ident, setup=setup)
        self.raw = zmq.Socket.shadow(self.sock.underlying)
        self.readable = _zmq.Readable(self.raw)
        self.core.connected(time.monotonic())

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
            self.readable.after_send()
        except zmq.Again:
            pass  # no live connection to the broker: liveness will notice and reconnect

    def ready(self) -> Ready:
        b = self.backend
        self.told_expiry = getattr(b, "cookie_expires_at", None)
        return Ready(PROTOCOL_VERSION, b.profile_id, os.getpid(), self.incarnation,
                     b.engine, b.account, tuple(b.models), b.unusable, self.told_expiry)

    def tell_profile_info(self) -> None:
        """A login refreshed while registered (bpool.worker.refresh) reaches /health without
        re-registering, which would take the worker out of rotation for a moment."""
        expiry = getattr(self.backend, "cookie_expires_at", None)
        if expiry != self.told_expiry and self.core.registered:
            self.told_expiry = expiry
            self.send(ProfileInfo(expiry))

    # -- performing the core's decisions

    def perform(self, actions: list) -> None:
        for act in actions:
            if isinstance(act, Send):
                self.send(act.msg)
            elif isinstance(act, StartRun):
                self.job = Job(self, act.job_id, act.spec)
                # The run task exists before we read the next frame, so a Cancel right behind
                # the Assign finds something to cancel.
                self.run_task = asyncio.ensure_future(self.backend.run(self.job))
                self.job_task = asyncio.ensure_future(self.run_job(self.job, self.run_task))
            elif isinstance(act, CancelRun):
                if self.run_task is not None and not self.run_task.done():
                    self.run_task.cancel()
            elif isinstance(act, Reconnect):
                if self.core.registered:
                    log.warning("broker silent: reconnecting")
                self.open()
            elif isinstance(act, Exit):
                self.exit_code = act.code
            elif isinstance(act, StartLease):
                self.lease_task = asyncio.ensure_future(self.start_lease(act.lease_id))
            elif isinstance(act, EndLease):
                starting = self.lease_task
                self.lease_task = asyncio.ensure_future(self.end_lease(act.lease_id, starting))
            # ResetPage is awaited by run_job itself.

    async def run_job(self, job: Job, run_task: asyncio.Task) -> None:
        outcome: RunOutcome
        try:
            finish, usage = await run_task
            outcome = Finished(finish, usage)
        except asyncio.CancelledError:
            if not run_task.cancelled():
                raise  # the job task itself was cancelled: we are shutting down
            outcome = Cancelled()
        except JobError as exc:
            outcome = Failed(exc.error)
        except BackendDead as exc:
            log.error("browser died during job: %s", exc)
            outcome = BackendGone(str(exc))
        except Exception as exc:  # a bug in the backend must not take the worker down silently
            log.exception("job failed unexpectedly")
            outcome = Failed(error("internal", f"worker error: {exc}"))
        acts = self.core.run_finished(job.id, outcome, time.monotonic())
        reply = next((a.msg for a in acts if isinstance(a, Send)
                      and isinstance(a.msg, (Done, JobFailed))), None)
        self.perform(acts)
        if any(isinstance(a, ResetPage) for a in acts):
            ok = True
            try:
                await self.backend.reset()
            except Exception as exc:
                log.error("could not reset the page after a job: %s", exc)
                ok = False
            self.perform(self.core.reset_finished(job.id, ok, time.monotonic()))
        self.job = None
        self.run_task = None
        if self.settings.timings_path:
            self.write_timings(job, type(reply).__name__ if reply is not None else "abandoned")

    async def start_lease(self, lease_id: str) -> None:
        ws_url: str | None = None
        err: ErrorInfo | None = None
        lease = getattr(self.backend, "lease", None)
        try:
            if lease is None:
                raise JobError(ErrorInfo("bad_request", f"a {self.backend.engine or 'this'} "
                                         "worker cannot be leased", 409))
            ws_url = await lease()
        except JobError as exc:
            err = exc.error
        except Exception as exc:
            log.error("could not open the browser to a lease: %s", exc)
            err = error("internal", f"could not open the browser: {exc}")
        if ws_url is not None:
            log.info("browser leased (%s)", lease_id)
        self.perform(self.core.lease_started(lease_id, ws_url, err, time.monotonic()))

    async def end_lease(self, lease_id: str, starting: asyncio.Task | None) -> None:
        if starting is not None and not starting.done():
            await asyncio.gather(starting, return_exceptions=True)
        ok, account = True, self.backend.unusable
        end = getattr(self.backend, "end_lease", None)
        if end is not None:
            try:
                account = await end()
            except Exception as exc:
                log.error("could not take the browser back after a lease: %s", exc)
                ok = False
        log.info("lease %s over; account %s", lease_id,
                 "usable" if account is None else account.kind)
        self.perform(self.core.lease_finished(lease_id, ok, account, time.monotonic()))

    def write_timings(self, job: Job, outcome: str) -> None:
        line = {"profile": self.backend.profile_id, "job_id": job.id, "outcome": outcome,
                "received": job.t_received, "started": job.t_started, "first_chunk": job.t_first,
                "last_chunk": job.t_last, "idle": time.monotonic()}
        with open(self.settings.timings_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    # -- main loop

    async def serve(self) -> int:
        self.open()
        wait_s = self.settings.heartbeat_interval_s / 4
        while True:
            now = time.monotonic()
            if not self.stop.is_set() and os.getppid() != self.parent:
                log.warning("parent process %d is gone: stopping", self.parent)
                self.stop.set()
            if self.stop.is_set() and self.core.stopping_since is None:
                log.info("stopping: draining the current job, then saying goodbye")
                self.perform(self.core.stop(now))
            self.perform(self.core.tick(now))
            self.tell_profile_info()
            if self.exit_code is not None:
                if self.core.dead:
                    return self.exit_code
                if self.job is not None:
                    log.warning("drain timeout: abandoned job %s", self.job.id)
                return self.exit_code
            assert self.raw is not None
            for frame in _zmq.recv_ready(self.raw):
                try:
                    msg = self.dec.decode(frame)
                except Exception:
                    log.warning("undecodable frame from the broker dropped")
                    continue
                if isinstance(msg, Disconnect) and not self.stop.is_set():
                    log.info("broker asked to re-register (%s)", msg.reason)
                if isinstance(msg, Assign) and (self.core.job is not None or self.stop.is_set()):
                    log.warning("refusing job %s: already busy or stopping", msg.job_id)
                self.perform(self.core.on_message(msg, time.monotonic()))
            if not self.stop.is_set() or self.job is not None:
                await self.readable.wait(wait_s)

    async def shutdown(self) -> None:
        for task in (self.run_task, self.job_task, self.lease_task):
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
