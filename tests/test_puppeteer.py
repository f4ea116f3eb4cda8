"""A Puppeteer client (Node, puppeteer-core pinned in tests/js/package-lock.json, installed by
scripts/bootstrap) drives a browser session through the front's CDP relay."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import struct
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from sessions.fixtures import pool  # noqa: F401  (a fixture)
from sessions.harness import KEY, SessionPool

NODE = shutil.which("node")
JS = Path(__file__).with_name("js")
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.chromium,
              pytest.mark.skipif(NODE is None, reason="no node binary (scripts/bootstrap installs "
                                 "nodejs and puppeteer-core)")]


class Site:
    """A page on 127.0.0.1 whose title, text and script value are fresh per test, so what the
    client reports can only have come from this server."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(6)
        self.a, self.b = secrets.randbelow(1000) + 2, secrets.randbelow(1000) + 2
        self.hits = 0
        self.url = ""

    async def page(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(content_type="text/html", text=(
            f"<title>pptr {self.nonce}</title><p id=x>text {self.nonce}</p>"
            f"<script>window.n = {self.a} * {self.b}</script>"))


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    s = Site()
    app = web.Application()
    app.router.add_get("/page", s.page)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    s.url = f"http://127.0.0.1:{tcp._server.sockets[0].getsockname()[1]}/page"  # type: ignore
    yield s
    await runner.cleanup()


async def drive(ws_url: str, page_url: str, shot: Path, key: str) -> tuple[int, dict[str, Any]]:
    """Run tests/js/drive_session.mjs; the test's own loop keeps serving the page meanwhile."""
    if not (JS / "node_modules" / "puppeteer-core").is_dir():
        pytest.fail("puppeteer-core is not installed in tests/js: run scripts/bootstrap")
    proc = await asyncio.create_subprocess_exec(
        NODE, str(JS / "drive_session.mjs"), ws_url, page_url, str(shot),  # type: ignore[arg-type]
        env={**os.environ, "BPOOL_KEY": key}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 100)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    assert lines, f"no output from node (exit {proc.returncode}): {err.decode()[-2000:]}"
    return proc.returncode or 0, json.loads(lines[-1])


async def test_puppeteer_navigates_evaluates_and_screenshots_through_the_relay(
        pool: SessionPool, site: Site, tmp_path: Path) -> None:
    s = pool.create(idle_timeout_s=120)
    assert s["state"] == "ready"
    shot = tmp_path / "shot.png"
    code, out = await drive(s["ws_url"], site.url, shot, KEY)
    assert code == 0, out
    assert out["status"] == 200 and site.hits >= 1
    assert out["title"] == f"pptr {site.nonce}" and out["text"] == f"text {site.nonce}"
    assert out["value"] == site.a * site.b
    assert "Chrome" in out["browser"]
    data = shot.read_bytes()
    assert data[:8] == PNG and len(data) == out["screenshot_bytes"]
    width, height = struct.unpack(">II", data[16:24])  # IHDR: the image's size in pixels
    assert (width, height) == (out["viewport"]["width"], out["viewport"]["height"]) == (640, 360)
    # The relay's counters reach the session log with the next heartbeat; the screenshot alone
    # came from the browser, base64 in a CDP frame.
    pool.wait_until(lambda: pool.session(s["id"])["bytes_from_browser"] > len(data), 20,
                    "relayed bytes counted")
    status, ended = pool.request("DELETE", f"/v1/sessions/{s['id']}")
    assert status == 200 and ended["state"] == "ended"
    row = pool.session(s["id"])  # the ended session, from the log
    assert row["end_reason"] == "deleted" and row["connected_at"] is not None
    assert row["bytes_from_browser"] > len(data) and row["bytes_to_browser"] > 0


async def test_a_wrong_key_cannot_connect(pool: SessionPool, site: Site, tmp_path: Path) -> None:
    s = pool.create()
    code, out = await drive(s["ws_url"], site.url, tmp_path / "no.png", "sk-wrong")
    assert code == 1 and "401" in out["error"]
    assert site.hits == 0 and not (tmp_path / "no.png").exists()
    row = pool.session(s["id"])
    assert row["state"] == "ready" and row["connected_at"] is None  # nobody got in
    assert pool.request("DELETE", f"/v1/sessions/{s['id']}")[0] == 200
