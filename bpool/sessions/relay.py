"""The CDP relay: frames both ways between a client's WebSocket (on the front) and the
session's browser (its own CDP WebSocket on its host), counted per session.

Close codes the client sees (the reason text says more):
  4410  the session ended (reason: idle, timeout, deleted, host_lost, browser_exited, ...)
  1011  the browser could not be reached or the relay failed
  1001  the front is shutting down
A client that closes its socket leaves the session running (it may connect again) until it is
deleted or swept.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web

from bpool.sessions import protocol as sp

log = logging.getLogger("bpool.front")

CLOSE_ENDED = 4410
CLOSE_RELAY_ERROR = 1011
CLOSE_GOING_AWAY = 1001
CONNECT_TIMEOUT_S = 10.0


@dataclass
class Counter:
    to_browser: int = 0
    from_browser: int = 0
    client: web.WebSocketResponse | None = None
    reported: tuple[int, int, bool] = (0, 0, False)
    dirty: bool = True


@dataclass
class Relays:
    """Every session this front relays or has relayed since its last report."""

    counters: dict[str, Counter] = field(default_factory=dict)
    on_bytes: Callable[[str, int], None] = lambda direction, n: None

    def busy(self, sid: str) -> bool:
        c = self.counters.get(sid)
        return c is not None and c.client is not None

    def traffic(self) -> tuple[sp.Traffic, ...]:
        """Counters that changed since the last call (for the placement's sweeper)."""
        out = []
        for sid, c in list(self.counters.items()):
            now = (c.to_browser, c.from_browser, c.client is not None)
            if now != c.reported or c.dirty:
                out.append(sp.Traffic(sid, c.to_browser, c.from_browser, now[2]))
                c.reported, c.dirty = now, False
            elif c.client is None:
                del self.counters[sid]  # reported as detached: nothing more to tell
        return tuple(out)

    async def close_all(self, code: int, reason: str) -> None:
        for c in list(self.counters.values()):
            if c.client is not None:
                await c.client.close(code=code, message=reason.encode())


async def relay(request: web.Request, info: sp.SessionInfo, relays: Relays,
                http: aiohttp.ClientSession,
                ended_reason: Callable[[str], Awaitable[str | None]]) -> web.WebSocketResponse:
    """Run one client's relay until either side closes. `ended_reason(id)` asks the placement
    why a session's browser went away (None: it did not end)."""
    client = web.WebSocketResponse(max_msg_size=0, autoping=True, compress=False)
    await client.prepare(request)
    counter = relays.counters.setdefault(info.id, Counter(info.bytes_to_browser,
                                                          info.bytes_from_browser))
    counter.client, counter.dirty = client, True
    try:
        try:
            browser = await http.ws_connect(info.ws_url, max_msg_size=0, autoping=True,
                                            timeout=aiohttp.ClientWSTimeout(ws_close=5),
                                            compress=0)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = await ended_reason(info.id)
            if reason is not None:
                await client.close(code=CLOSE_ENDED, message=f"session ended: {reason}".encode())
            else:
                log.warning("session %s: browser unreachable: %s", info.id, exc)
                await client.close(code=CLOSE_RELAY_ERROR, message=b"browser unreachable")
            return client
        log.info("session %s: client attached", info.id)
        async with browser:
            up = asyncio.create_task(_pump(client, browser, counter, "to_browser", relays))
            down = asyncio.create_task(_pump(browser, client, counter, "from_browser", relays))
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            failed = next((t.exception() for t in done if t.exception() is not None), None)
            if down in done and not client.closed:  # the browser side went first
                reason = await ended_reason(info.id)
                if reason is not None:
                    await client.close(code=CLOSE_ENDED,
                                       message=f"session ended: {reason}".encode())
                else:
                    if failed is not None:
                        log.warning("session %s: relay error: %r", info.id, failed)
                    await client.close(code=CLOSE_RELAY_ERROR,
                                       message=b"the browser closed the connection")
            elif failed is not None and not client.closed:
                log.warning("session %s: relay error: %r", info.id, failed)
                await client.close(code=CLOSE_RELAY_ERROR, message=b"relay error")
        return client
    finally:
        log.info("session %s: client detached (%s)", info.id, client.close_code)
        if counter.client is client:
            counter.client, counter.dirty = None, True


async def _pump(src, dst, counter: Counter, direction: str, relays: Relays) -> None:
    """Copy frames src -> dst until src closes; count what went through."""
    TEXT, BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
    async for msg in src:
        if msg.type is TEXT:
            await dst.send_str(msg.data)
            n = len(msg.data)  # CDP text is JSON, base64 for binary payloads: ASCII
        elif msg.type is BINARY:
            await dst.send_bytes(msg.data)
            n = len(msg.data)
        else:
            break
        setattr(counter, direction, getattr(counter, direction) + n)
        relays.on_bytes(direction, n)
