"""The one place where bpool sets ZeroMQ socket options."""

from __future__ import annotations

import os
from typing import Callable

import zmq
import zmq.asyncio


def new_identity(prefix: str = "") -> bytes:
    """A random routing identity, fresh for each worker incarnation."""
    return (prefix + "-" if prefix else "").encode() + os.urandom(8).hex().encode()


Setup = Callable[[zmq.Socket], None] | None  # e.g. CURVE options, applied before bind/connect


def router(ctx: zmq.Context, endpoint: str, setup: Setup = None) -> zmq.Socket:
    """A bound ROUTER that raises EHOSTUNREACH instead of silently dropping frames to the gone."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    if setup is not None:
        setup(sock)
    sock.bind(endpoint)
    return sock


def dealer(
    ctx: zmq.Context, endpoint: str, identity: bytes | None = None, setup: Setup = None
) -> zmq.Socket:
    """A connected DEALER. IMMEDIATE: frames are only queued on live connections, so a send while
    the broker is down fails at once instead of being delivered to the next broker incarnation."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if setup is not None:
        setup(sock)
    sock.connect(endpoint)
    return sock


def recv_ready(sock: zmq.Socket):
    """Every frame waiting on `sock` now, without blocking."""
    # Ask EVENTS first: cheaper than raising zmq.Again at the end of every batch.
    while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
        try:
            yield sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return


class Readable:
    """Await input on a plain (non-asyncio) zmq socket from an asyncio loop.

    Cheaper than zmq.asyncio's futures on the hot path. The socket's FD is edge-triggered: the
    caller drains with `recv_ready` before waiting again, and `wait` re-checks EVENTS after
    clearing, so no wake-up is lost (a send can also consume the edge; EVENTS still tells)."""

    def __init__(self, sock: zmq.Socket) -> None:
        import asyncio

        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.fd = sock.getsockopt(zmq.FD)
        self.loop.add_reader(self.fd, self.event.set)

    async def wait(self, timeout_s: float | None = None) -> None:
        self.event.clear()
        if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
        timer = self.loop.call_later(timeout_s, self.event.set) if timeout_s else None
        try:
            await self.event.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def after_send(self) -> None:
        """Call after sending on the socket: the send may have taken the FD's edge while input
        arrived, and a waiter would then sleep through it."""
        if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.event.set()

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
