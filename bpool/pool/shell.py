"""The broker's zmq shell: two ROUTER sockets around a `BrokerCore` (bpool/pool/core.py).

The only I/O of the pool package, with cooldown_file.py (which it calls to keep the rate-limit
cool-downs across restarts). One thread, one zmq.Poller: decode each frame with the decoder of
its direction, hand it to the core with the current monotonic time, perform the actions the core
returns. Frames from a socket are taken in batches so that one busy side cannot starve the other
or the clock.
"""

from __future__ import annotations

import fcntl
import logging
import time
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import msgspec
import zmq

from bpool import config, protocol
from bpool.wire import curve
from bpool.wire import sockets as _zmq
from bpool.pool import cooldown_file
from bpool.pool.core import Action, BrokerCore, ForwardFront, SendFront, SendWorker

__all__ = ["BrokerCore", "BrokerSettings", "ForwardFront", "SendFront", "SendWorker", "Stop", "run"]

log = logging.getLogger("bpool.broker")

BATCH = 512  # frames taken from one socket before looking at the other one and the clock


@dataclass(frozen=True)
class BrokerSettings:
    ENV: ClassVar[dict[str, str]] = {
        "heartbeat_interval_s": "BPOOL_HEARTBEAT_INTERVAL_S",
        "heartbeat_liveness": "BPOOL_HEARTBEAT_LIVENESS", "max_queue": "BPOOL_MAX_QUEUE",
        "queue_timeout_s": "BPOOL_QUEUE_TIMEOUT_S", "cooldown_s": "BPOOL_COOLDOWN_S",
        "pause_s": "BPOOL_PAUSE_S", "tcp_endpoint": "BPOOL_BROKER_TCP",
    }
    front_endpoint: str
    worker_endpoint: str
    heartbeat_interval_s: config.Positive = config.default("BPOOL_HEARTBEAT_INTERVAL_S")
    heartbeat_liveness: config.Count = config.default("BPOOL_HEARTBEAT_LIVENESS")
    max_queue: config.NonNegativeInt = config.default("BPOOL_MAX_QUEUE")
    queue_timeout_s: config.Positive = config.default("BPOOL_QUEUE_TIMEOUT_S")
    cooldown_s: config.Positive = config.default("BPOOL_COOLDOWN_S")
    pause_s: config.Positive = config.default("BPOOL_PAUSE_S")
    tcp_endpoint: str = ""  # extra worker endpoint for other hosts, CURVE only
    curve_dir: str = ""
    cooldown_file: str = ""  # where rate-limit cool-downs outlive the broker ("": nowhere)

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> BrokerSettings:
        """From the registry's variables; `overrides` (flags) win. ConfigError if invalid."""
        rd = config.run_dir()
        return config.build(cls, {
            "front_endpoint": config.front_endpoint(rd),
            "worker_endpoint": config.worker_endpoint(rd),
            "curve_dir": str(curve.curve_dir()),
            "cooldown_file": str(rd / cooldown_file.FILE_NAME),
            **{k: v for k, v in (overrides or {}).items() if v is not None},
        })

    def core(self) -> BrokerCore:
        return BrokerCore(
            heartbeat_interval_s=self.heartbeat_interval_s,
            heartbeat_liveness=self.heartbeat_liveness,
            max_queue=self.max_queue,
            queue_timeout_s=self.queue_timeout_s,
            cooldown_s=self.cooldown_s,
            pause_s=self.pause_s,
        )


def _prepare_ipc(endpoint: str) -> None:
    """An ipc socket's directory must exist; the pool's run directory is kept private (0700)."""
    if not endpoint.startswith("ipc://"):
        return
    parent = Path(endpoint[len("ipc://"):]).parent
    if parent.resolve() == config.run_dir():
        config.ensure_private_dir(parent)
    else:
        parent.mkdir(parents=True, exist_ok=True)


class AlreadyRunning(Exception):
    pass


def _lock_endpoints(settings: BrokerSettings) -> list:
    """Hold a lock next to each ipc socket: a second broker on the same run directory would
    silently take the sockets over (binding ipc replaces the file) and split the pool in two."""
    held = []
    for ep in (settings.front_endpoint, settings.worker_endpoint):
        if ep.startswith("ipc://"):
            f = open(ep[len("ipc://"):] + ".lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                for other in held:
                    other.close()
                raise AlreadyRunning(f"another broker is already bound to {ep}") from None
            held.append(f)
    return held


def bind_sockets(
    ctx: zmq.Context, settings: BrokerSettings
) -> tuple[zmq.Socket, zmq.Socket, curve.CurveServer | None]:
    """Every endpoint the broker listens on. Workers on other hosts reach the same worker ROUTER
    over tcp, and only with CURVE: libzmq copies socket options at bind time, so the CURVE
    server options set after the ipc bind apply to the tcp endpoint alone."""
    curve.refuse_plain("BPOOL_BROKER_FRONT", settings.front_endpoint,
                       "the HTTP front connects without it")
    server = curve.server_for("BPOOL_BROKER_WORKERS", settings.worker_endpoint,
                              Path(settings.curve_dir))  # None for ipc
    if server is None and settings.tcp_endpoint:
        server = curve.CurveServer.load(Path(settings.curve_dir))
    if server is not None:
        server.start(ctx)
    front = _zmq.router(ctx, settings.front_endpoint)
    workers = _zmq.router(ctx, settings.worker_endpoint,
                          None if curve.is_local(settings.worker_endpoint) else server.apply)
    if settings.tcp_endpoint:
        server.apply(workers)
        workers.bind(settings.tcp_endpoint)
    return front, workers, server


class CooldownStore:
    """The core's cool-downs on disk: read once at start, written whenever they changed."""

    def __init__(self, core: BrokerCore, path: str) -> None:
        self.core = core
        self.path = Path(path) if path else None

    def restore(self) -> None:
        if self.path is None:
            return
        saved = cooldown_file.load(self.path, time.monotonic(), time.time())
        if saved:
            self.core.restore_cooldowns(saved)
            log.info("restored rate-limit cool-downs: %s", "; ".join(
                f"{p}: {', '.join(sorted(m))}" for p, m in sorted(saved.items())))

    def save(self) -> None:
        cooldowns = self.core.cooldowns()  # marks them saved, even if the write fails below
        if self.path is None:
            return
        try:
            cooldown_file.save(self.path, cooldowns, time.monotonic(), time.time())
        except OSError as exc:  # routing goes on; only a restart would forget them
            log.warning("cannot save the rate-limit cool-downs to %s: %s", self.path, exc)


class Stop:
    requested = False

    def __call__(self) -> None:
        self.requested = True  # the loop notices within one poll timeout


def run(settings: BrokerSettings, stop: Stop) -> None:
    core = settings.core()
    for ep in (settings.front_endpoint, settings.worker_endpoint):
        _prepare_ipc(ep)
    locks = _lock_endpoints(settings)  # released by the kernel however this process ends
    store = CooldownStore(core, settings.cooldown_file)
    store.restore()  # before any worker registers: one that re-registers is still cooling
    ctx = zmq.Context()
    front, workers, curve_server = bind_sockets(ctx, settings)
    log.info(
        "broker %s listening: front %s, workers %s%s",
        core.broker_id, settings.front_endpoint, settings.worker_endpoint,
        f" and {settings.tcp_endpoint} (CURVE)" if curve_server else "",
    )
    front_enc, worker_enc = protocol.encoder(), protocol.encoder()
    front_dec = protocol.decoder(protocol.FrontToBroker)
    worker_dec = protocol.decoder(protocol.WorkerToBroker)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(workers, zmq.POLLIN)
    tick_every_s = max(0.01, settings.heartbeat_interval_s / 4)
    poll_ms = max(1, int(tick_every_s * 1000))
    next_tick = time.monotonic()
    # Plain ints: pyzmq's flag enums cost more than the send itself on this hot path.
    NOBLOCK, MORE_NOBLOCK = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)
    UNREACHABLE = (zmq.EHOSTUNREACH, zmq.EAGAIN)
    Again, MsgspecError = zmq.Again, msgspec.MsgspecError

    def send(sock: zmq.Socket, ident: bytes, payload: bytes) -> bool:
        """False if the peer is gone (EHOSTUNREACH) or so far behind that its queue is full."""
        try:
            sock.send(ident, MORE_NOBLOCK)  # a refusal comes here, on the routing frame
        except zmq.ZMQError as exc:
            if exc.errno in UNREACHABLE:
                return False
            raise
        sock.send(payload, NOBLOCK)
        return True

    def perform(acts: list[Action], now: float) -> None:
        i = 0
        while i < len(acts):  # the core may answer a failed send with more actions
            a = acts[i]
            i += 1
            if type(a) is SendWorker:
                if not send(workers, a.identity, worker_enc.encode(a.msg)):
                    acts.extend(core.worker_unreachable(a.identity, now))
            else:
                payload = a.raw if type(a) is ForwardFront else front_enc.encode(a.msg)
                if not send(front, a.front, payload):
                    acts.extend(core.front_unreachable(a.front, now))

    def drain(sock: zmq.Socket, is_worker: bool) -> None:
        dec = worker_dec if is_worker else front_dec
        for _ in range(BATCH):
            try:
                ident = sock.recv(NOBLOCK)
            except Again:
                return
            frame = sock.recv(0, copy=False)  # a ROUTER delivers identity and body together
            now = time.monotonic()
            try:
                raw = frame.bytes
                try:
                    if frame.more:  # a message is exactly one frame: drop the rest with it
                        while sock.recv(0, copy=False).more:
                            pass
                        raise msgspec.DecodeError("multi-part message")
                    msg = dec.decode(raw)
                except MsgspecError:  # the peer's fault: the core counts it
                    if is_worker:
                        perform(core.on_worker_garbage(ident, now), now)
                    else:
                        perform(core.on_front_garbage(ident, now), now)
                    continue
                if is_worker:
                    perform(core.on_worker(ident, msg, raw, now), now)
                else:
                    perform(core.on_front(ident, msg, now), now)
            except Exception:
                # Our bug. Losing every worker and queued job to a restart would hurt more than
                # carrying on past one bad frame.
                log.exception("error handling a %s frame", "worker" if is_worker else "front")

    try:
        while not stop.requested:
            ready = dict(poller.poll(poll_ms))
            if workers in ready:
                drain(workers, True)
            if front in ready:
                drain(front, False)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + tick_every_s
                perform(core.tick(now), now)
            if core.cooling_changed:  # rare (a rate limit): written at once, off the job path
                store.save()
    finally:
        front.close(0)
        workers.close(0)
        if curve_server is not None:
            curve_server.stop()
        ctx.term()
        for f in locks:
            f.close()
        log.info("broker %s stopped", core.broker_id)
