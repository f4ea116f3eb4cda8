"""Concurrent sessions over two hosts: placed by free capacity, each its own browser (a cookie
set in one is absent from the others), and a host killed with -9 ends only its own sessions,
within the heartbeat window, taking its browsers with it."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from sessions.harness import AUTH, SessionPool, kill9

pytestmark = pytest.mark.chromium

N = 4


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionPool]:
    p = SessionPool(tmp_path_factory.mktemp("parallel"), {"h1": 3, "h2": 3})
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """A page on 127.0.0.1 that shows the cookies it was sent."""
    async def show(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Cookie", ""), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", show)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def _create(pool: SessionPool) -> dict:
    return await asyncio.to_thread(pool.create, idle_timeout_s=120)


async def test_concurrent_sessions_are_spread_and_isolated(pool: SessionPool, site: str) -> None:
    sessions = await asyncio.gather(*(_create(pool) for _ in range(N)))
    assert len({s["id"] for s in sessions}) == N
    hosts = [s["host"] for s in sessions]
    assert sorted(hosts.count(h) for h in ("h1", "h2")) == [N // 2, N // 2], hosts

    async def drive(i: int, s: dict, p) -> str:
        browser = await p.chromium.connect_over_cdp(s["ws_url"], headers=AUTH)
        page = await browser.contexts[0].new_page()
        await page.goto(site)
        await page.evaluate(f"document.cookie = 'who=s{i}; path=/'")
        await page.reload()
        seen = await page.evaluate("document.body.innerText")
        await browser.close()
        return seen

    async with async_playwright() as p:
        seen = await asyncio.gather(*(drive(i, s, p) for i, s in enumerate(sessions)))
    # Each browser sent only its own cookie back to the same origin.
    assert seen == [f"who=s{i}" for i in range(N)]
    for s in sessions:
        assert (await asyncio.to_thread(pool.request, "DELETE", f"/v1/sessions/{s['id']}"))[0] == 200


async def test_kill_9_of_a_host_ends_its_sessions_only(pool: SessionPool) -> None:
    a, b = await asyncio.gather(_create(pool), _create(pool))
    assert {a["host"], b["host"]} == {"h1", "h2"}
    victim, survivor = (a, b) if a["host"] == "h1" else (b, a)
    assert pool.browsers_of("h1")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(victim["ws_url"], headers=AUTH) as ws:
            await ws.send_json({"id": 1, "method": "Browser.getVersion"})
            assert (await ws.receive_json(timeout=30))["id"] == 1
            kill9(pool, "h1")
            msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            # The browser died with its host; the relay waits for the placement to know why.
            assert (ws.close_code, msg.extra) == (4410, "session ended: host_lost")
    # Heartbeat window: 3 x 0.5 s; the deadline is generous for a loaded machine.
    ended = await asyncio.to_thread(pool.wait_state, victim["id"], "ended", 20)
    assert ended["end_reason"] == "host_lost"
    await asyncio.to_thread(pool.wait_until, lambda: not pool.browsers_of("h1"), 20,
                            "the killed host's browsers gone")
    assert (await asyncio.to_thread(pool.session, survivor["id"]))["state"] == "ready"
    # The capacity left is the survivor's: a new session goes there.
    again = await _create(pool)
    assert again["host"] == "h2"
    pool.start_host("h1", 3)  # back for any later test of this module
    await asyncio.to_thread(pool.wait_hosts, 2)
    for s in (survivor, again):
        assert (await asyncio.to_thread(pool.request, "DELETE", f"/v1/sessions/{s['id']}"))[0] == 200
