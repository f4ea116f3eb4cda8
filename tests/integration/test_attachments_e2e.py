"""Images end to end: the official `openai` SDK sends an image as a data: URL and as an http URL
(served by a loopback aiohttp server), the front decodes / fetches it, the broker carries it to a
Chromium worker, the worker uploads it through the simulator page's file input, and the
simulator's answer names what its request body held: the same bytes (digest), size and type.

One small pool (simulator, broker, front, one worker); the front may fetch from loopback only
because BPOOL_ATTACHMENT_PRIVATE_URLS=1 is set for it here.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import web
from openai import AsyncOpenAI, BadRequestError

from bpool.testing.browser_pool import (ACCOUNTS, MODEL, BrowserPool, answer_for, kill_leftovers,
                                        start_sim, wait_no_leftovers)
from bpool.testing.pool import Pool
from bpool.worker import engines

if not Path(engines.DEFAULT_CHROMIUM).exists():
    pytest.skip("no system Chromium", allow_module_level=True)

POOL_ENV = {"BPOOL_BROWSER": "chromium", "BPOOL_ATTACHMENT_PRIVATE_URLS": "1"}
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
                    "0000000a49444154789c63600000000200015d0b2d9a0000000049454e44ae426082")
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


def described(mime: str, data: bytes) -> str:
    return f"{mime} {len(data)} bytes sha256:{hashlib.sha256(data).hexdigest()[:16]}"


@pytest.fixture(scope="module")
def bp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserPool]:
    base = tmp_path_factory.mktemp("attach-pool")
    pool = Pool(base, env=POOL_ENV)
    try:
        browser_pool = BrowserPool(pool, start_sim(pool, ACCOUNTS), base / "cookies")
        browser_pool.sim.fresh()
        pool.start_broker()
        pool.start_front()
        browser_pool.start_worker(browser_pool.cookies / "alice.json", browser_pool.worker("alice"))
        pool.wait_states({"alice": "idle"}, 100.0)
        yield browser_pool
    finally:
        pool.close()
        left = wait_no_leftovers(base, 15.0)
        kill_leftovers(left)
    assert not left, f"processes outlived the pool: {left}"


@pytest.fixture
async def image_server() -> Any:
    hits: list[str] = []

    async def gif(req: web.Request) -> web.Response:
        hits.append(req.path)
        return web.Response(body=GIF, content_type="image/gif")

    app = web.Application()
    app.router.add_get("/pictures/dot.gif", gif)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


def sdk(bp: BrowserPool) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=bp.pool.api_url, api_key="unused", max_retries=0, timeout=90)


async def test_a_data_url_and_an_http_url_reach_the_page_request(bp, image_server):
    base, hits = image_server
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    client = sdk(bp)
    resp = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": data_url}},
        {"type": "image_url", "image_url": {"url": base + "/pictures/dot.gif"}},
    ]}])
    expected = f"compare [attached: {described('image/png', PNG)}; {described('image/gif', GIF)}]"
    assert resp.choices[0].message.content == answer_for("alice", expected)
    assert hits == ["/pictures/dot.gif"]  # fetched once, by the front
    await client.close()


async def test_a_refused_image_is_a_400_naming_the_part_and_no_job(bp):
    client = sdk(bp)
    before = len(bp.sim.admin("stats")["requests"])
    with pytest.raises(BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:text/html;base64,PGgxPg=="}}]}])
    err = info.value.body
    assert err["param"] == "messages[0].content[1].image_url.url"
    assert err["code"] == "unsupported_attachment"
    assert len(bp.sim.admin("stats")["requests"]) == before
    await client.close()
