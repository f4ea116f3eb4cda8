"""An account lease end to end (docs/sessions.md "Account leases"): the simulator, the broker,
the front and one real Chromium worker with BPOOL_ACCOUNT_LEASES=1. A Playwright client leases
alice's browser through the front's relay, sees the studio logged in as alice, the session ends
with DELETE, and the worker then answers a chat request again. Then alice is logged out on the
simulator, and the operator logs her in again through a lease: she is back in rotation."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.async_api import async_playwright

from bpool.testing.browser_pool import (ACCOUNTS, MODEL, Sim, answer_for, kill_leftovers,
                                        start_sim, wait_no_leftovers)
from bpool.sessions.log import open_log
from bpool.testing.pool import Pool
from bpool.worker import engines

pytestmark = pytest.mark.chromium
if not Path(engines.DEFAULT_CHROMIUM).exists():
    pytest.skip("no system Chromium", allow_module_level=True)

EMAIL_JS = """sels => { for (const s of sels) { const e = document.querySelector(s);
  if (e) return [e.textContent, e.getAttribute('aria-label'), e.getAttribute('alt')].join(' '); }
  return ''; }"""
EMAIL_SELECTORS = ['[data-test-id="account-email"]', 'a[aria-label^="Google Account"]',
                   '[aria-label*="@"]', 'img[alt*="@"]']


def request(pool: Pool, method: str, path: str, body: Any = None, timeout_s: float = 60.0
            ) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", pool.port, timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, data, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pool, Sim]]:
    base = tmp_path_factory.mktemp("lease")
    # A short queue timeout: the request that finds alice logged out waits for no other account.
    p = Pool(base, env={"BPOOL_BROWSER": "chromium", "BPOOL_ACCOUNT_LEASES": "1",
                        "BPOOL_QUEUE_TIMEOUT_S": "5"})
    try:
        sim, cookies = start_sim(p, ACCOUNTS), base / "cookies"
        sim.admin("config", {"tokens_per_s": 0, "first_token_s": 0, "answer_s": 0})
        p.start_broker()
        p.start_front()
        p.start_module("worker-alice", "bpool.browser_proc", "--profile",
                       str(cookies / "alice.json"), env={"BPOOL_STUDIO_URL": sim.url})
        p.wait_states({"alice": "idle"}, 90.0)
        yield p, sim
    finally:
        p.close()
        left = wait_no_leftovers(base, 15.0)
        kill_leftovers(left)
    assert not left, f"processes outlived the pool: {left}"


def chat(pool: Pool, prompt: str) -> str:
    status, out = request(pool, "POST", "/v1/chat/completions",
                          {"model": MODEL, "messages": [{"role": "user", "content": prompt}]})
    assert status == 200, out
    return out["choices"][0]["message"]["content"]


async def test_a_leased_account_browser_is_reached_through_the_relay_and_returned(pool) -> None:
    p, sim = pool
    status, refused = request(p, "POST", "/v1/sessions", {"profile": "nobody"})
    assert status == 404 and refused["error"]["code"] == "lease_refused", refused
    status, s = request(p, "POST", "/v1/sessions", {"profile": "alice", "timeout_s": 300})
    assert status == 201, s
    assert s["profile"] == "alice" and s["ws_url"].endswith(f"/v1/sessions/{s['id']}/ws")
    p.wait_states({"alice": "leased"}, 10.0)
    status, again = request(p, "POST", "/v1/sessions", {"profile": "alice"})
    assert status == 409, again  # one lease per account
    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(s["ws_url"])
        (context,) = browser.contexts
        studio = next(pg for pg in context.pages if pg.url.startswith(sim.url))
        assert "alice@sim.test" in await studio.evaluate(EMAIL_JS, EMAIL_SELECTORS)
        extra = await context.new_page()  # what an operator opens is closed after the lease
        await extra.goto(sim.url)
        assert "ServiceLogin" not in extra.url  # the account's own cookies: logged in
        # The lease's watch sees the attached client at its next check (every 0.5 s).
        await p.await_until(
            lambda: request(p, "GET", f"/v1/sessions/{s['id']}")[1]["state"] == "connected",
            10, "the lease's state: connected")
        status, ended = request(p, "DELETE", f"/v1/sessions/{s['id']}")
        assert status == 200 and ended["state"] == "ended" and ended["end_reason"] == "deleted"
    async with open_log(p.run_dir, None) as book:  # the lease is a row of the session log
        row = await book.get(s["id"])
    assert row is not None and (row.profile, row.state, row.end_reason) == (
        "alice", "ended", "deleted"), row
    assert row.connected_at is not None and row.bytes_from_browser > 0, row
    p.wait_states({"alice": "idle"}, 60.0)
    assert chat(p, "after the lease") == answer_for("alice", "after the lease")


async def test_a_logged_out_account_is_repaired_through_a_lease(pool) -> None:
    p, sim = pool
    sim.admin("expire", {"account": "alice", "expired": True})
    status, out = request(p, "POST", "/v1/chat/completions",
                          {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert status >= 500, out  # the job finds the account logged out
    p.wait_states({"alice": "logged_out"}, 30.0)
    status, s = request(p, "POST", "/v1/sessions", {"profile": "alice"})
    assert status == 201, s
    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(s["ws_url"])
        page = await browser.contexts[0].new_page()
        await page.goto(sim.url)
        assert "ServiceLogin" in page.url  # what the operator finds: the sign-in page
        await page.fill("#identifierId", "alice@sim.test")
        await page.press("#identifierId", "Enter")
        await page.fill('input[type="password"]', "sim-password")
        await page.press('input[type="password"]', "Enter")
        await page.wait_for_url(lambda url: "ServiceLogin" not in url and "signin" not in url)
        assert request(p, "DELETE", f"/v1/sessions/{s['id']}")[0] == 200
    p.wait_states({"alice": "idle"}, 60.0)
    assert chat(p, "repaired") == answer_for("alice", "repaired")
