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
