"""Helpers the tests import (`from support import ...`); the fixtures live in conftest.py.

They live here rather than in conftest.py because a test run that includes a folder with its own
conftest.py (tests/sessions) would otherwise find `conftest` to mean that folder's module."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import aiohttp
import msgspec
import zmq
import zmq.asyncio

from bpool import protocol
from bpool.protocol import FrontToBroker, Ping, PoolStatus, Pong, StatusQuery, StatusReply
from bpool.testing.pool import Pool
from bpool.wire import sockets as _zmq

# Fast heartbeats keep failure detection (3 x 0.5 s) well inside the tests' bounds.
TEST_ENV = {
    "BPOOL_HEARTBEAT_INTERVAL_S": "0.5",
    "BPOOL_HEARTBEAT_LIVENESS": "3",
    "BPOOL_DRAIN_TIMEOUT_S": "5",
    "BPOOL_LOG_LEVEL": "INFO",
}


PoolFactory = Callable[..., Pool]


def records(pool: Pool) -> list[dict[str, Any]]:
    path = pool.base_dir / "jobs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chat_body(text: str = "hello", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}],
            "stream": stream, **extra}


async def read_sse(resp: aiohttp.ClientResponse) -> list[Any]:
    """Every `data:` event of a stream, JSON-decoded ("[DONE]" stays a string)."""
    events = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ---------------------------------------------------------------------------- scripted broker


class ScriptedBroker:
    """The broker side of the front protocol, driven by the test: answers Ping (unless told not
    to) and StatusQuery (with `status`), and queues every other message for the test."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = _zmq.router(self.ctx, endpoint)
        self.enc = protocol.encoder()
        self.dec = protocol.decoder(FrontToBroker)
        self.broker_id = "broker-1"
        self.answer_pings = True
        self.answer_status = True
        self.status = PoolStatus("broker-1", (), 0, {})
        self.front: bytes | None = None
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            ident, frame = await self.sock.recv_multipart()
            self.front = ident
            msg = self.dec.decode(frame)
            if isinstance(msg, Ping):
                if self.answer_pings:
                    self.send(Pong(msg.nonce, self.broker_id))
            elif isinstance(msg, StatusQuery):
                if self.answer_status:
                    self.send(StatusReply(msg.query_id, self.status))
            else:
                self.inbox.put_nowait(msg)

    def send(self, msg: msgspec.Struct) -> None:
        assert self.front is not None, "the front has not said anything yet"
        self.sock.send_multipart([self.front, self.enc.encode(msg)])

    async def expect(self, kind: type, timeout_s: float = 3.0) -> Any:
        """The next queued message, which must be of type `kind`."""
        msg = await asyncio.wait_for(self.inbox.get(), timeout_s)
        assert isinstance(msg, kind), f"expected {kind.__name__}, got {msg!r}"
        return msg

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.sock.close(linger=0)
        self.ctx.term()
