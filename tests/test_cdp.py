"""A Playwright client drives a browser session through the front's CDP relay."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from sessions.fixtures import pool  # noqa: F401  (a fixture)
from sessions.harness import AUTH, KEY, SessionPool

pytestmark = pytest.mark.chromium

PAGE = "data:text/html,<title>relay</title><p id=x>forty</p><script>window.n = 40 + 2</script>"


async def test_playwright_navigates_evaluates_and_screenshots_through_the_relay(
        pool: SessionPool) -> None:
    s = pool.create(idle_timeout_s=120)
    assert s["state"] == "ready" and s["host"] == "h1"
    assert s["ws_url"] == f"ws://127.0.0.1:{pool.port}/v1/sessions/{s['id']}/ws"
    assert pool.browsers_of("h1")  # its own Chromium runs
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(s["ws_url"], headers=AUTH)
        context = browser.contexts[0]
        page = await context.new_page()
        await page.goto(PAGE)
        assert await page.title() == "relay"
        assert await page.evaluate("window.n") == 42
        assert await page.text_content("#x") == "forty"
        shot = await page.screenshot()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 1000
        # The host reports the attached client with its next heartbeat.
        await asyncio.to_thread(pool.wait_state, s["id"], "connected")
        await browser.close()
    # The relay's counters reach the placement with the next heartbeat.
    counted = pool.wait_until(lambda: (x := pool.session(s["id"]))["bytes_from_browser"] > len(shot)
                              and x, 10, "relayed bytes counted")
    assert counted["bytes_to_browser"] > 0 and counted["connected_at"] is not None
    assert 'bpool_session_relay_bytes_total{direction="from_browser"}' in pool.metrics()
    status, ended = pool.request("DELETE", f"/v1/sessions/{s['id']}")
    assert status == 200 and ended["state"] == "ended" and ended["end_reason"] == "deleted"
    pool.wait_until(lambda: not pool.browsers_of("h1"), 20, "the session's browser gone")
    assert pool.session(s["id"])["end_reason"] == "deleted"  # kept in the session log


async def test_http_discovery_for_clients_given_an_http_endpoint(pool: SessionPool) -> None:
    s = pool.create()
    status, version = pool.request("GET", f"/v1/sessions/{s['id']}/json/version/")
    assert status == 200 and version["webSocketDebuggerUrl"] == s["ws_url"]
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(
            f"http://127.0.0.1:{pool.port}/v1/sessions/{s['id']}", headers=AUTH)
        page = await browser.contexts[0].new_page()
        assert await page.evaluate("6 * 7") == 42
        await browser.close()
    assert pool.request("DELETE", f"/v1/sessions/{s['id']}")[0] == 200


async def test_the_relay_closes_with_the_reason_the_session_ended(pool: SessionPool) -> None:
    s = pool.create()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(s["ws_url"], headers=AUTH) as ws:
            await ws.send_json({"id": 1, "method": "Browser.getVersion"})
            answer = await ws.receive_json(timeout=30)
            assert answer["id"] == 1 and "Chrome" in answer["result"]["product"]
            # A second client on the same session is refused while the first is attached.
            with pytest.raises(aiohttp.WSServerHandshakeError) as second:
                await http.ws_connect(s["ws_url"], headers=AUTH)
            assert second.value.status == 409
            assert pool.request("DELETE", f"/v1/sessions/{s['id']}")[0] == 200
            msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4410 and msg.extra == "session ended: deleted"
        # An ended session cannot be joined; a bad key cannot even try.
        with pytest.raises(aiohttp.WSServerHandshakeError) as gone:
            await http.ws_connect(s["ws_url"], headers=AUTH)
        assert gone.value.status == 410
        other = pool.create()
        with pytest.raises(aiohttp.WSServerHandshakeError) as denied:
            await http.ws_connect(other["ws_url"], headers={"Authorization": "Bearer wrong"})
        assert denied.value.status == 401
        assert pool.request("DELETE", f"/v1/sessions/{other['id']}")[0] == 200
    assert KEY not in "".join(pool.logs(n) for n in pool.procs)  # never logged


@pytest.fixture
async def site():
    """A page on 127.0.0.1 for the recordings to see."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<title>rec</title><h1 style='font-size:80px'>recorded</h1>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/page", page)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield f"http://127.0.0.1:{tcp._server.sockets[0].getsockname()[1]}/page"  # type: ignore
    await runner.cleanup()


async def test_recordings_har_and_video_are_kept_and_served(pool: SessionPool, site: str) -> None:
    har_s, video_s = pool.create(record="har"), pool.create(record="video")
    async with async_playwright() as p:
        for s in (har_s, video_s):
            browser = await p.chromium.connect_over_cdp(s["ws_url"], headers=AUTH)
            page = await browser.contexts[0].new_page()
            await page.goto(site)
            await page.evaluate("document.body.style.background = 'red'")
            await page.wait_for_timeout(300)  # a few screencast frames of the changed page
            await browser.close()
    for s in (har_s, video_s):
        assert pool.request("DELETE", f"/v1/sessions/{s['id']}")[0] == 200
    for s in (har_s, video_s):
        pool.wait_until(lambda: pool.session(s["id"])["recording"], 60, "the recording stored")
    status, text = pool.request("GET", f"/v1/sessions/{har_s['id']}/recording", raw=True)
    assert status == 200
    urls = [e["request"]["url"] for e in json.loads(text)["log"]["entries"]]
    assert site in urls
    req = urllib.request.Request(f"{pool.base_url}/v1/sessions/{video_s['id']}/recording",
                                 headers=AUTH)
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "video/webm"
        assert resp.read(4) == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
    plain = pool.create()
    status, out = pool.request("GET", f"/v1/sessions/{plain['id']}/recording")
    assert status == 404 and out["error"]["code"] == "no_recording"
    assert pool.request("DELETE", f"/v1/sessions/{plain['id']}")[0] == 200


async def test_a_front_restart_closes_the_socket_and_keeps_the_session(pool: SessionPool) -> None:
    s = pool.create()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(s["ws_url"], headers=AUTH) as ws:
            assert pool.terminate("front") == 0
            msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
        pool.start_front()
        pool.wait_hosts(1)
        async with http.ws_connect(s["ws_url"], headers=AUTH) as ws:  # the same browser
            await ws.send_json({"id": 7, "method": "Browser.getVersion"})
            assert (await ws.receive_json(timeout=30))["id"] == 7
    assert pool.request("DELETE", f"/v1/sessions/{s['id']}")[0] == 200
