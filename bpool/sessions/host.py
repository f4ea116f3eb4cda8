"""A session host: registers its capacity with the broker's placement and runs one isolated
Chromium (browser.py) per session it is given.

One asyncio loop, one DEALER (a fresh identity per incarnation, like the chat workers). The
placement's `HostDisconnect` (it does not know us: it restarted) is answered by `HostReady`
again, listing the sessions still running so they survive nothing they should not: the
placement stops those it does not know. SIGTERM: every browser is closed, `HostGoodbye`, exit 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import msgspec
import zmq

from bpool import config
from bpool.sessions import protocol as sp
from bpool.sessions.browser import LaunchError, SessionBrowser, launch
from bpool.sessions.placement_shell import hosts_endpoint
from bpool.sessions.recorder import SessionRecorder
from bpool.wire import curve
from bpool.wire import sockets as _zmq
from bpool.worker import procs

log = logging.getLogger("bpool.sessions.host")


@dataclass(frozen=True)
class HostSettings:
    ENV: ClassVar[dict[str, str]] = {
        "capacity": "BPOOL_MAX_CONTEXTS", "chromium": "BPOOL_CHROMIUM_PATH",
        "bind_host": "BPOOL_SESSION_BIND_HOST", "host_id": "BPOOL_SESSION_HOST_ID",
        "start_timeout_s": "BPOOL_SESSION_START_TIMEOUT_S",
        "heartbeat_interval_s": "BPOOL_HEARTBEAT_INTERVAL_S",
        "heartbeat_liveness": "BPOOL_HEARTBEAT_LIVENESS",
    }
    endpoint: str
    run_dir: str
    host_id: str = ""
    capacity: config.Count = config.default("BPOOL_MAX_CONTEXTS")
    chromium: str = config.default("BPOOL_CHROMIUM_PATH")
    bind_host: str = config.default("BPOOL_SESSION_BIND_HOST")
    start_timeout_s: config.Positive = config.default("BPOOL_SESSION_START_TIMEOUT_S")
    heartbeat_interval_s: config.Positive = config.default("BPOOL_HEARTBEAT_INTERVAL_S")
    heartbeat_liveness: config.Count = config.default("BPOOL_HEARTBEAT_LIVENESS")

    @classmethod
    def from_env(cls, overrides: dict | None = None, slot: int = 0) -> "HostSettings":
        rd = config.run_dir()
        s = config.build(cls, {"endpoint": hosts_endpoint(rd), "run_dir": str(rd),
                               **{k: v for k, v in (overrides or {}).items() if v is not None}})
        if not s.host_id:
            s = dataclasses.replace(s, host_id=f"{socket.gethostname()}-{slot}")
        return s

    @property
    def home(self) -> Path:
        """This host's browsers: profile directories, the reaping tag and the lock."""
        return Path(self.run_dir) / "sessions" / self.host_id


class SessionHost:
    def __init__(self, settings: HostSettings) -> None:
        self.s = settings
        self.browsers: dict[str, SessionBrowser] = {}
        self.recorders: dict[str, SessionRecorder] = {}
        self.starting: dict[str, asyncio.Task] = {}
        self.stopping = asyncio.Event()
        self.enc = sp.encoder()
        self.dec = sp.decoder(sp.PlacementToHost)
        self.last_heard = time.monotonic()
        self.tag = str(settings.home)
        self._tasks: set[asyncio.Task] = set()

    # ---------------------------------------------------------------- socket

    def _connect(self) -> None:
        keys = curve.client_keys_from_env() if not curve.is_local(self.s.endpoint) else None
        if not curve.is_local(self.s.endpoint) and keys is None:
            raise curve.CurveError(f"BPOOL_BROKER_SESSIONS={self.s.endpoint} needs "
                                   "BPOOL_CURVE_SERVER_KEY and BPOOL_CURVE_CLIENT_KEY")
        self.ctx = zmq.Context()
        self.sock = _zmq.dealer(self.ctx, self.s.endpoint, _zmq.new_identity("host"),
                                (lambda s: curve.apply_client(s, keys)) if keys else None)
        self.readable = _zmq.Readable(self.sock)

    def send(self, msg: object) -> None:
        try:
            self.sock.send(self.enc.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no broker connected: HostReady is sent again once it answers
        self.readable.after_send()

    def ready_msg(self) -> sp.HostReady:
        return sp.HostReady(sp.SESSION_PROTOCOL_VERSION, self.s.host_id, os.getpid(),
                            os.urandom(6).hex(), self.s.capacity,
                            tuple(sp.HostSession(b.session_id, b.ws_url)
                                  for b in self.browsers.values()))

    # ---------------------------------------------------------------- sessions

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def start_session(self, sid: str, record: str) -> None:
        try:
            b = await launch(sid, binary=self.s.chromium, base_dir=self.s.home,
                             bind_host=self.s.bind_host, owner_tag=self.tag,
                             timeout_s=self.s.start_timeout_s)
        except LaunchError as exc:
            log.warning("session %s: browser did not start: %s", sid, exc)
            self.send(sp.StartFailed(sid, str(exc)))
            return
        finally:
            self.starting.pop(sid, None)
        self.browsers[sid] = b
        if record != "none":
            self.recorders[sid] = SessionRecorder.start(sid, record, b.ws_url, self.s.home,
                                                        Path(self.s.run_dir))
        log.info("session %s: browser pid %d ready", sid, b.pid)
        self.send(sp.SessionStarted(sid, b.ws_url, b.pid))
        self._spawn(self.watch(b))

    async def watch(self, b: SessionBrowser) -> None:
        await b.proc.wait()
        if self.browsers.get(b.session_id) is b:  # not stopped by us: it crashed
            await self.stop_session(b.session_id, "browser_exited")

    async def stop_session(self, sid: str, reason: str, tell: bool = True) -> None:
        task = self.starting.pop(sid, None)
        if task is not None:
            task.cancel()
        b = self.browsers.pop(sid, None)
        if b is None:
            if tell and task is None:
                self.send(sp.SessionEnded(sid, reason))
            return
        rec = self.recorders.pop(sid, None)
        if rec is not None:
            await rec.stop()
        await b.close()
        log.info("session %s ended: %s", sid, reason)
        location = await rec.save() if rec is not None else None
        if tell:
            self.send(sp.SessionEnded(sid, reason, location))

    def handle(self, msg: object) -> None:
        match msg:
            case sp.StartSession(session_id=sid, record=record):
                if sid not in self.browsers and sid not in self.starting:
                    self.starting[sid] = self._spawn(self.start_session(sid, record))
            case sp.StopSession(session_id=sid, reason=reason):
                self._spawn(self.stop_session(sid, reason))
            case sp.HostDisconnect():
                self.send(self.ready_msg())

    # ---------------------------------------------------------------- main loop

    async def run(self) -> int:
        self.s.home.mkdir(parents=True, exist_ok=True)
        lock = procs.ProfileLock(self.s.home)
        if not lock.acquire():
            log.error("another session host (pid %s) runs as %s", lock.holder(), self.s.host_id)
            return 1
        reaped = procs.kill_tagged(self.tag)  # browsers a killed predecessor left behind
        if reaped:
            log.warning("reaped %d browser processes of a previous host", len(reaped))
        self._connect()
        self.send(self.ready_msg())
        log.info("session host %s: capacity %d, placement %s", self.s.host_id, self.s.capacity,
                 self.s.endpoint)
        interval = self.s.heartbeat_interval_s
        dead_after = interval * self.s.heartbeat_liveness
        next_beat = time.monotonic() + interval
        try:
            while not self.stopping.is_set():
                await self.readable.wait(interval / 2)
                for raw in _zmq.recv_ready(self.sock):
                    self.last_heard = time.monotonic()
                    try:
                        self.handle(self.dec.decode(raw))
                    except msgspec.MsgspecError:
                        log.warning("undecodable frame from the placement")
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + interval
                    self.send(sp.HostBeat())
                if now - self.last_heard > dead_after:
                    # The broker is gone or restarted: register again (the sessions run on).
                    self.last_heard = now
                    self.send(self.ready_msg())
        finally:
            await self.shutdown()
            lock.release()
        return 0

    async def shutdown(self) -> None:
        for sid in list(self.starting) + list(self.browsers):
            await self.stop_session(sid, "host_stopping", tell=False)
        for t in list(self._tasks):
            t.cancel()
        try:
            self.send(sp.HostGoodbye("stopping"))
        except Exception:
            pass
        self.readable.close()
        self.sock.close(0)
        self.ctx.term()
