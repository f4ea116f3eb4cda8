"""A real front (the production runner, real TCP on 127.0.0.1) against the scripted broker, and a
raw-socket HTTP client for requests no well-behaved client library would send."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bpool.front.broker_link import BrokerLink
from bpool.front.appstate import LINK
from bpool.front.settings import FrontSettings
from bpool.front.app import make_app, make_runner
from bpool.protocol import Submit
from support import ScriptedBroker


@dataclass
class Front:
    port: int
    app: web.Application
    runner: web.AppRunner

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def link(self) -> BrokerLink:
        return self.app[LINK]


async def start_front(tmp_path: Path, broker: ScriptedBroker, **kw: Any) -> Front:
    base: dict[str, Any] = dict(
        broker_endpoint=f"ipc://{tmp_path}/front.sock", heartbeat_interval_s=0.2,
        heartbeat_liveness=3, queue_timeout_s=5.0, status_timeout_s=0.5, drain_timeout_s=1.0)
    base.update(kw)
    settings = FrontSettings(**base)
    app = make_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    front = Front(site.port, app, runner)
    await wait_for(lambda: broker.front is not None, 5, "the front to reach the broker")
    return front


async def wait_for(check: Any, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(port: int, data: bytes, timeout_s: float = 10.0) -> RawReply:
    """Send bytes as they are; read the reply until the server closes (send `Connection:
    close` for that) or the one response ends (Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
        return RawReply(status, headers, body)
    finally:
        writer.close()


def post_bytes(body: bytes, headers: dict[str, str] | None = None,
               path: str = "/v1/chat/completions") -> bytes:
    hdrs = {"Host": "127.0.0.1", "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    return head.encode("latin-1") + b"\r\n" + body


def assert_openai_4xx(status: int, body: Any, expected: int | None = None) -> None:
    assert 400 <= status < 500, (status, body)
    if expected is not None:
        assert status == expected, (status, body)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]


async def assert_next_submit_is(broker: ScriptedBroker, marker: str) -> Submit:
    """The next message the broker got is the Submit carrying `marker`: nothing refused before
    it reached the broker (a DEALER delivers in order)."""
    sub = await broker.expect(Submit)
    assert marker in sub.spec.messages[-1].content, sub
    return sub
