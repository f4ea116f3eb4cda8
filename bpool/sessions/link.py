"""The front's DEALER to the broker's session placement: requests with a number, each answered
once; a ping each heartbeat (its answer carries the numbers /metrics shows); relay traffic
reported with it, so the placement's sweeper sees which sessions are in use."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Callable

import msgspec
import zmq

from bpool.sessions import protocol as sp
from bpool.wire import sockets as _zmq

log = logging.getLogger("bpool.front")


class PlacementUnavailable(Exception):
    """The placement did not answer in time (the broker is down or restarting)."""


class SessionLink:
    def __init__(self, endpoint: str, interval_s: float,
                 traffic: Callable[[], tuple[sp.Traffic, ...]] = tuple) -> None:
        self.endpoint = endpoint
        self.interval_s = interval_s
        self.traffic = traffic  # the relays' counters, sent with every ping
        self.last_pong: sp.FrontPong | None = None
        self.waiting: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._enc = sp.encoder()
        self._dec = sp.decoder(sp.PlacementToFront)
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._ctx = zmq.Context()
        self._sock = _zmq.dealer(self._ctx, self.endpoint, _zmq.new_identity("front"))
        self._readable = _zmq.Readable(self._sock)
        self._tasks = [asyncio.create_task(self._reader()), asyncio.create_task(self._pinger())]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._readable.close()
        self._sock.close(0)
        self._ctx.term()

    def _send(self, msg: object) -> bool:
        try:
            self._sock.send(self._enc.encode(msg), zmq.NOBLOCK)
            return True
        except zmq.Again:  # IMMEDIATE: no broker connected
            return False
        finally:
            self._readable.after_send()

    async def ask(self, make: Callable[[int], object], timeout_s: float):
        req = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiting[req] = fut
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            # Not connected (yet, or again after a broker restart): IMMEDIATE refuses the
            # frame, so it is offered again until the deadline instead of failing at once.
            while not self._send(make(req)):
                if loop.time() >= deadline:
                    raise PlacementUnavailable("the broker's session placement is not reachable")
                await asyncio.sleep(0.02)
            return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise PlacementUnavailable("the broker's session placement did not answer") from None
        finally:
            self.waiting.pop(req, None)

    async def _reader(self) -> None:
        while True:
            await self._readable.wait()
            for raw in _zmq.recv_ready(self._sock):
                try:
                    msg = self._dec.decode(raw)
                except msgspec.MsgspecError:
                    log.warning("undecodable frame from the session placement")
                    continue
                if isinstance(msg, sp.FrontPong):
                    self.last_pong = msg
                    continue
                fut = self.waiting.get(msg.req)
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    async def _pinger(self) -> None:
        nonce = itertools.count(1)
        while True:
            try:
                traffic = self.traffic()
                if traffic:
                    self._send(sp.Activity(traffic))
                self._send(sp.FrontPing(next(nonce)))
            except Exception:
                log.exception("session ping failed")
            await asyncio.sleep(self.interval_s)
