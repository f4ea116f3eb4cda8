"""The session placement's I/O: two ROUTERs (session hosts; fronts) around a `PlacementCore`,
run on its own thread of the broker process with its own asyncio loop, so the chat broker's
loop (bpool/pool/shell.py) is untouched by it and cannot be slowed by the session log.

Hosts connect to BPOOL_BROKER_SESSIONS (ipc in the run directory) and, from other machines, to
BPOOL_SESSIONS_TCP with CURVE (the broker's keys, bpool/wire/curve.py). Fronts connect to
BPOOL_BROKER_SESSIONS_FRONT (ipc only). Log writes go through one queue in order, off the
socket loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import zmq

from bpool import config
from bpool.sessions import protocol as sp
from bpool.sessions.book import open_book, to_info, to_record
from bpool.sessions.placement import (Action, LogCreated, LogUpdate, PlacementCore, ToFront,
                                      ToHost)
from bpool.wire import curve
from bpool.wire import sockets as _zmq

log = logging.getLogger("bpool.sessions")


def hosts_endpoint(rd: Path | None = None) -> str:
    return config.value("BPOOL_BROKER_SESSIONS") or f"ipc://{(rd or config.run_dir()) / 'sessions.sock'}"


def front_endpoint(rd: Path | None = None) -> str:
    return (config.value("BPOOL_BROKER_SESSIONS_FRONT")
            or f"ipc://{(rd or config.run_dir()) / 'sessions-front.sock'}")


@dataclass(frozen=True)
class PlacementSettings:
    ENV: ClassVar[dict[str, str]] = {
        "heartbeat_interval_s": "BPOOL_HEARTBEAT_INTERVAL_S",
        "heartbeat_liveness": "BPOOL_HEARTBEAT_LIVENESS", "tcp_endpoint": "BPOOL_SESSIONS_TCP",
        "start_timeout_s": "BPOOL_SESSION_START_TIMEOUT_S",
    }
    hosts_endpoint: str
    front_endpoint: str
    run_dir: str
    heartbeat_interval_s: config.Positive = config.default("BPOOL_HEARTBEAT_INTERVAL_S")
    heartbeat_liveness: config.Count = config.default("BPOOL_HEARTBEAT_LIVENESS")
    start_timeout_s: config.Positive = config.default("BPOOL_SESSION_START_TIMEOUT_S")
    tcp_endpoint: str = ""
    curve_dir: str = ""

    @classmethod
    def from_env(cls) -> "PlacementSettings":
        rd = config.run_dir()
        return config.build(cls, {"hosts_endpoint": hosts_endpoint(rd),
                                  "front_endpoint": front_endpoint(rd), "run_dir": str(rd),
                                  "curve_dir": str(curve.curve_dir())})


class PlacementThread:
    """The placement running beside the chat broker; `stop()` ends it within a poll."""

    def __init__(self, settings: PlacementSettings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="sessions", daemon=True)

    def start(self) -> "PlacementThread":
        self.thread.start()
        self.ready.wait(10)
        return self

    def _main(self) -> None:
        try:
            asyncio.run(serve(self.settings, self.stopping, self.ready))
        except BaseException as exc:  # the chat broker keeps serving without sessions
            self.error = exc
            log.exception("session placement stopped")
        finally:
            self.ready.set()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


def start_in_thread() -> PlacementThread | None:
    """Start the placement beside the broker; None (logged) if it cannot run: chat goes on."""
    try:
        return PlacementThread(PlacementSettings.from_env()).start()
    except (config.ConfigError, OSError) as exc:
        log.error("session placement cannot start: %s", exc)
        return None


def _lock(endpoint: str) -> Any:
    """Like the chat broker's: a second broker on the same run directory must not take the
    ipc socket over."""
    if not endpoint.startswith("ipc://"):
        return None
    path = Path(endpoint[len("ipc://"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(str(path) + ".lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise OSError(f"another broker is already bound to {endpoint}") from None
    return f


async def serve(settings: PlacementSettings, stopping: threading.Event,
                ready: threading.Event | None = None) -> None:
    locks = [_lock(settings.hosts_endpoint), _lock(settings.front_endpoint)]
    curve.refuse_plain("BPOOL_BROKER_SESSIONS_FRONT", settings.front_endpoint,
                       "the HTTP front connects without it")
    server = curve.server_for("BPOOL_BROKER_SESSIONS", settings.hosts_endpoint,
                              Path(settings.curve_dir))
    if server is None and settings.tcp_endpoint:
        server = curve.CurveServer.load(Path(settings.curve_dir))
    ctx = zmq.Context()
    if server is not None:
        server.start(ctx)
    hosts = _zmq.router(ctx, settings.hosts_endpoint,
                        None if curve.is_local(settings.hosts_endpoint) else server.apply)
    if settings.tcp_endpoint:
        server.apply(hosts)
        hosts.bind(settings.tcp_endpoint)
    fronts = _zmq.router(ctx, settings.front_endpoint)
    core = PlacementCore(settings.heartbeat_interval_s, settings.heartbeat_liveness,
                         settings.start_timeout_s)
    book = open_book(Path(settings.run_dir))
    await book.open()
    shell = _Shell(core, hosts, fronts, book)
    writer = asyncio.create_task(shell.write_log())
    log.info("session placement %s listening: hosts %s%s, fronts %s", core.placement_id,
             settings.hosts_endpoint, f" and {settings.tcp_endpoint} (CURVE)"
             if settings.tcp_endpoint else "", settings.front_endpoint)
    if ready is not None:
        ready.set()
    try:
        await shell.loop(stopping, min(0.25, settings.heartbeat_interval_s / 4))
    finally:
        await shell.writes.put(None)
        await asyncio.wait_for(writer, 5)
        await book.close()
        hosts.close(0)
        fronts.close(0)
        if server is not None:
            server.stop()
        ctx.term()
        for f in locks:
            if f is not None:
                f.close()


class _Shell:
    def __init__(self, core: PlacementCore, hosts: zmq.Socket, fronts: zmq.Socket,
                 book: Any) -> None:
        self.core, self.hosts, self.fronts, self.book = core, hosts, fronts, book
        self.enc = sp.encoder()
        self.host_dec = sp.decoder(sp.HostToPlacement)
        self.front_dec = sp.decoder(sp.FrontToPlacement)
        self.writes: asyncio.Queue[Action | None] = asyncio.Queue()
        self.bad_frames = 0

    def send(self, sock: zmq.Socket, ident: bytes, msg: object) -> bool:
        try:
            sock.send_multipart([ident, self.enc.encode(msg)], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                return False
            raise

    def perform(self, acts: list[Action]) -> None:
        i = 0
        while i < len(acts):
            a = acts[i]
            i += 1
            if isinstance(a, ToHost):
                if not self.send(self.hosts, a.identity, a.msg):
                    acts.extend(self.core.host_unreachable(a.identity, time.time()))
            elif isinstance(a, ToFront):
                self.send(self.fronts, a.identity, a.msg)  # a gone front: nobody to tell
            else:
                self.writes.put_nowait(a)

    async def write_log(self) -> None:
        while (a := await self.writes.get()) is not None:
            try:
                if isinstance(a, LogCreated):
                    await self.book.created(to_record(a.info))
                elif isinstance(a, LogUpdate):
                    await self.book.update(a.session_id, **a.fields)
            except Exception:  # the log is a record, not the service: sessions go on
                log.exception("session log write failed")

    async def from_log(self, ident: bytes, msg: object) -> None:
        """Questions about sessions that have left memory are answered from the log."""
        try:
            if isinstance(msg, sp.GetSession):
                info = to_info(await self.book.get(msg.session_id))
                reply: object = sp.SessionReply(msg.req, info, None if info else "not_found")
            else:
                assert isinstance(msg, sp.ListSessions)
                live = self.core.list(msg.state, msg.limit) if msg.state != "ended" else []
                seen = {i.id for i in live}
                older = [] if msg.state not in (None, "ended") else [
                    i for i in map(to_info, await self.book.list(state="ended", limit=msg.limit))
                    if i is not None and i.id not in seen]
                reply = sp.SessionListReply(msg.req, tuple((live + older)[:msg.limit]))
        except Exception:
            log.exception("session log read failed")
            reply = (sp.SessionReply(msg.req, None, "not_found") if isinstance(msg, sp.GetSession)
                     else sp.SessionListReply(msg.req, tuple(self.core.list(msg.state,
                                                                            msg.limit))))
        self.send(self.fronts, ident, reply)

    def drain(self, sock: zmq.Socket, is_host: bool) -> None:
        dec = self.host_dec if is_host else self.front_dec
        for _ in range(512):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.time()
            if len(frames) != 2:
                self.bad_frames += 1
                continue
            ident, raw = frames
            try:
                msg = dec.decode(raw)
            except msgspec.MsgspecError:  # the peer's fault
                self.bad_frames += 1
                if is_host:
                    self.send(sock, ident, sp.HostDisconnect())
                continue
            try:
                if is_host:
                    self.perform(self.core.on_host(ident, msg, now))
                elif (isinstance(msg, sp.GetSession) and self.core.get(msg.session_id) is None
                      ) or (isinstance(msg, sp.ListSessions) and msg.state in (None, "ended")):
                    asyncio.get_running_loop().create_task(self.from_log(ident, msg))
                else:
                    self.perform(self.core.on_front(ident, msg, now))
            except Exception:  # our bug: one bad frame must not end every session
                log.exception("error handling a session %s frame", "host" if is_host else "front")

    async def loop(self, stopping: threading.Event, tick_s: float) -> None:
        hr, fr = _zmq.Readable(self.hosts), _zmq.Readable(self.fronts)
        waiters: dict[asyncio.Task, tuple[zmq.Socket, bool, _zmq.Readable]] = {}
        try:
            next_tick = 0.0
            while not stopping.is_set():
                for sock, is_host, r in ((self.hosts, True, hr), (self.fronts, False, fr)):
                    if not any(v[0] is sock for v in waiters.values()):
                        waiters[asyncio.ensure_future(r.wait(tick_s))] = (sock, is_host, r)
                done, _ = await asyncio.wait(list(waiters), timeout=tick_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    sock, is_host, r = waiters.pop(t)
                    self.drain(sock, is_host)
                    r.after_send()
                now = time.time()
                if now >= next_tick:
                    next_tick = now + tick_s
                    self.perform(self.core.tick(now))
                    hr.after_send()
                    fr.after_send()
        finally:
            for t in waiters:
                t.cancel()
            hr.close()
            fr.close()
