"""The live pool page (GET /, /pool, /pool/data) on a real front over a broker and fake workers:
who may read what, and, in real Chromium, the page following the pool without a reload (a worker
killed, an account cooling down, cookie expiry), on a desktop and on a phone-sized screen."""

from __future__ import annotations

import asyncio
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import async_playwright

from bpool.config import REPO_ROOT
from bpool.testing.pool import Pool
from support import PoolFactory

KEY = "sk-pool-page-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "gemini-2.5-flash"
DAY = 86400.0
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def workers(now: float) -> dict[str, list[str]]:
    base = ["--models", MODEL, "--chunks", "2"]
    return {
        "alice": [*base, "--cookie-expires-at", str(now + 3 * DAY)],  # soon: shown as a warning
        "bob": [*base, "--cookie-expires-at", str(now + 90 * DAY)],
        "carol": [*base, "--rate-limited-after", "0", "--cooldown-s", "600"],
    }


def png(width: int = 4, height: int = 3) -> bytes:
    """A small valid PNG (grey), standing in for a worker's snapshot of a failed step."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def put_snapshot(pool: Pool, profile: str, stem: str) -> bytes:
    d = pool.run_dir / "snapshots" / profile
    d.mkdir(parents=True, exist_ok=True)
    body = png()
    (d / f"{stem}.png").write_bytes(body)
    return body


async def data(http: aiohttp.ClientSession, pool: Pool) -> dict[str, Any]:
    async with http.get(f"{pool.base_url}/pool/data", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def chat(http: aiohttp.ClientSession, pool: Pool) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{pool.api_url}/chat/completions", json=body, headers=AUTH) as resp:
        await resp.read()
        return resp.status


async def until(check, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not (value := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return value


async def test_the_page_is_public_its_data_needs_the_key_and_carries_the_login_fields(
        make_pool: PoolFactory, http: aiohttp.ClientSession) -> None:
    now = time.time()
    pool = make_pool(workers(now), env={"BPOOL_API_KEYS": KEY})
    for path in ("/", "/pool", "/pool/static/pool.js", "/pool/static/pool.css"):
        async with http.get(pool.base_url + path) as resp:
            assert resp.status == 200, path
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    async with http.get(f"{pool.base_url}/pool/data") as resp:
        assert resp.status == 401
    async with http.get(f"{pool.base_url}/pool/static/secret.py") as resp:
        assert resp.status in (401, 404)  # only the page's own files are served
    assert await chat(http, pool) == 200
    body = await data(http, pool)
    by_name = {w["profile_id"]: w for w in body["workers"]}
    assert set(by_name) == {"alice", "bob", "carol"}
    assert abs(by_name["alice"]["cookie_expires_at"] - (now + 3 * DAY)) < 1
    assert 3 * DAY - 120 < by_name["alice"]["cookie_expires_in_s"] <= 3 * DAY
    assert by_name["carol"]["cookie_expires_at"] is None
    served = [w for w in by_name.values() if w["last_answer_s"] is not None]
    assert len(served) == 1 and served[0]["jobs_served"] == 1  # the one that answered
    async with http.get(f"{pool.base_url}/health", headers=AUTH) as resp:
        health = {w["profile_id"]: w for w in (await resp.json())["workers"]}
    assert health["bob"]["cookie_expires_at"] == by_name["bob"]["cookie_expires_at"]
    shot = put_snapshot(pool, "carol", "20260101-120000-parse")
    async with http.get(f"{pool.base_url}/pool/snapshot/carol") as resp:
        assert resp.status == 401  # a snapshot shows the account and the prompt
    async with http.get(f"{pool.base_url}/pool/snapshot/carol", headers=AUTH) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert await resp.read() == shot
    async with http.get(f"{pool.base_url}/pool/snapshot/..%2Fcarol", headers=AUTH) as resp:
        assert resp.status == 404
    async with http.get(f"{pool.base_url}/metrics", headers=AUTH) as resp:
        text = await resp.text()
    assert f'bpool_worker_cookie_expiry_timestamp_seconds{{profile="alice"}} ' in text
    assert "bpool_worker_last_answer_age_seconds{profile=" in text


async def test_the_page_follows_the_pool_without_a_reload(
        make_pool: PoolFactory, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    pool = make_pool(workers(time.time()), env={"BPOOL_API_KEYS": KEY})
    home = tmp_path / "home"
    home.mkdir()
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path="/usr/bin/chromium",
            args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(home)},
            viewport={"width": 1100, "height": 560})
        try:
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            loads: list[str] = []
            page.on("load", lambda p: loads.append(p.url))
            await page.goto(pool.base_url + "/")
            await page.locator("#keyform").wait_for(state="visible")  # 401 until a key is given
            await page.fill("#key", KEY)
            await page.click("#keyform button")
            rows = page.locator("#rows tr")
            await until(lambda: _count(rows, 3), "three profiles on the page")
            assert not await page.locator("#keyform").is_visible()  # the key was taken
            row = {n: page.locator(f'#rows tr[data-profile="{n}"]') for n in ("alice", "bob", "carol")}
            assert await row["alice"].locator(".soon").count() == 1  # expires within a week
            assert await row["bob"].locator(".soon").count() == 0
            assert (await row["bob"].locator('td[data-label="cookies expire"]').inner_text()
                    ).strip().startswith("in 89d")

            # An account cools down: carol's requests fail as rate-limited and move elsewhere.
            async def carol_cools() -> bool:
                assert await chat(http, pool) == 200
                c = next(w for w in (await data(http, pool))["workers"] if w["profile_id"] == "carol")
                return bool(c["cooling"]) or c["cooldown_remaining_s"] is not None
            await until(carol_cools, "carol cooling down")
            cool = row["carol"].locator("td.cooldowns")
            await until(lambda: _has(cool, "left"), "carol's cool-down on the page")
            assert "9m" in await cool.inner_text()  # 600 s, counting down

            # Her last error, and the snapshot a worker saved, fetched with the key.
            put_snapshot(pool, "carol", "20260101-120000-parse")
            show = row["carol"].locator("td.error button")
            await until(lambda: _has(show, "20260101-120000-parse"), "the snapshot button")
            assert "rate_limited" in await row["carol"].locator("td.error").inner_text()
            await show.click()
            img = row["carol"].locator("td.error img")
            await until(lambda: _count(img, 1), "the snapshot on the page")
            await until(lambda: img.evaluate("i => i.complete && i.naturalWidth === 4"),
                        "the snapshot image decoded")

            # A worker dies: the broker forgets it, the page marks it gone.
            pool.kill("worker-bob")
            state = row["bob"].locator(".state")
            await until(lambda: _has(state, "gone"), "bob gone on the page")
            assert await row["alice"].locator(".state").inner_text() == "idle"
            assert len(loads) == 1, loads  # all of it without reloading

            shot = (REPO_ROOT / "docs" / "pool-page.png" if os.environ.get("BPOOL_DOCS_SCREENSHOT")
                    else tmp_path / "pool-page.png")
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0

            await page.set_viewport_size({"width": 390, "height": 844})  # a phone
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
            assert await row["alice"].evaluate("tr => getComputedStyle(tr).display") == "block"
        finally:
            await ctx.close()


async def _count(locator, n: int) -> bool:
    return await locator.count() == n


async def _has(locator, text: str) -> bool:
    return await locator.count() > 0 and text in await locator.inner_text()


def test_the_request_rate_is_per_minute_over_the_last_minute_and_restarts_with_the_broker() -> None:
    from bpool.front.pool_page import RateMeter

    m = RateMeter(window_s=60.0)
    assert m.add(0.0, "b1", 100) is None  # one sample says nothing yet
    assert m.add(30.0, "b1", 130) == 60.0  # 30 requests in 30 s
    assert m.add(90.0, "b1", 130) == 0.0  # the burst is more than a minute old: forgotten
    assert m.add(91.0, "b2", 3) is None  # a new broker counts from zero: start over
    assert m.add(101.0, "b2", 13) == 60.0
