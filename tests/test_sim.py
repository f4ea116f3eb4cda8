"""The studio simulator: page contract, wire format, accounts, quota, failure knobs, CLI, and one
run of the page in real Chromium with a fetch-teeing init script like the driver's."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bpool.sim import GENERATE_PATH, LIST_MODELS_PATH, NEW_CHAT_PATH, SIGNIN_PATH, cli, wire
from bpool.sim.app import create_app
from bpool.sim.settings import SimSettings
from bpool.sim.state import Knobs, SimState

REPO = Path(__file__).resolve().parent.parent
TRICKY = 'héllo 日本語 🙂 **bold** `code` [x]]","model"] {"a": [1, 2]} back\\slash \'q\' "dq"\nline2\t'
FAST = Knobs(tokens_per_s=0, first_token_s=0, answer_s=0)


def profile_sid(path: Path) -> str:
    return next(c["value"] for c in json.loads(path.read_text())["cookies"] if c["name"] == "SID")


def make_profiles(sim_dir: Path, out: Path, *extra: str) -> None:
    assert cli.main(["make-profiles", "--dir", str(sim_dir), "--out", str(out), *extra]) == 0


@pytest.fixture
def sim_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sim"
    make_profiles(d, tmp_path / "cookies", "--names", "alice,bob")
    return d


async def start(aiohttp_client, sim_dir: Path, knobs: Knobs = FAST):
    return await aiohttp_client(create_app(SimSettings(dir=sim_dir, knobs=knobs)))


def login(client, sim_dir: Path, name: str = "alice") -> None:
    client.session.cookie_jar.update_cookies(
        {"SID": profile_sid(sim_dir.parent / "cookies" / f"{name}.json")})


async def page_token(client) -> str:
    resp = await client.get(NEW_CHAT_PATH, allow_redirects=False)
    assert resp.status == 200
    return re.search(r'name="sim-page-token" content="([^"]+)"', await resp.text()).group(1)


class Asker:
    """Posts GenerateContent the way the page does, with a fresh token counter per request."""

    def __init__(self, client, token: str) -> None:
        self.client, self.token, self.n = client, token, 0

    async def post(self, prompt: str, **fields):
        self.n += 1
        body = {"model": "models/gemini-2.5-pro", "contents": [{"role": "user", "text": prompt}],
                "token": f"{self.token}.{self.n}", **fields}
        return await self.client.post(GENERATE_PATH, json=body)


async def asker(client, sim_dir: Path, name: str = "alice") -> Asker:
    login(client, sim_dir, name)
    return Asker(client, await page_token(client))


def texts(chunks: list, thought: bool) -> str:
    return "".join(p[1] for c in chunks for p in c[0][0][0][0] if (len(p) == 13 and p[12] == 1) == thought)


# ------------------------------------------------------------------------------ pages and auth

async def test_unknown_or_expired_session_redirects_to_sign_in(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir)
    for sid in (None, "not-a-session"):
        if sid:
            client.session.cookie_jar.update_cookies({"SID": sid})
        resp = await client.get(NEW_CHAT_PATH, allow_redirects=False)
        assert resp.status == 302 and "accounts.google.com" in resp.headers["Location"]
    resp = await client.get(NEW_CHAT_PATH)  # follow to the sign-in page
    assert resp.url.path == SIGNIN_PATH and "<title>Sign in - Google Accounts</title>" in await resp.text()

    login(client, sim_dir)
    resp = await client.get(NEW_CHAT_PATH, allow_redirects=False)
    assert resp.status == 200 and "alice@sim.test" in await resp.text()
    await client.post("/__sim/config", json={"region_blocked": True})
    assert "<title>Available regions" in await (await client.get(NEW_CHAT_PATH)).text()
    await client.post("/__sim/config", json={"region_blocked": False})
    assert (await client.post("/__sim/expire", json={"account": "alice"})).status == 200
    resp = await client.get(NEW_CHAT_PATH, allow_redirects=False)
    assert resp.status == 302
    resp = await client.post(LIST_MODELS_PATH)
    assert resp.status == 401


async def test_make_profiles_writes_private_storage_states_the_sim_accepts(aiohttp_client, tmp_path):
    sim_dir, out = tmp_path / "sim", tmp_path / "cookies"
    make_profiles(sim_dir, out, "--count", "2")
    make_profiles(sim_dir, out, "--names", "ghost", "--logged-out")
    assert sorted(p.name for p in out.iterdir()) == ["ghost.json", "user1.json", "user2.json"]
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        state = json.loads(p.read_text())
        assert state["origins"] == []
        names = {c["name"] for c in state["cookies"]}
        assert {"SID", "HSID", "SSID", "APISID", "SAPISID", "__Secure-1PSID"} <= names
        sid = next(c for c in state["cookies"] if c["name"] == "SID")
        assert (sid["domain"], sid["path"], sid["httpOnly"], sid["secure"], sid["sameSite"]) == \
            ("127.0.0.1", "/", True, False, "Lax")
        assert sid["expires"] > time.time()
    assert stat.S_IMODE((sim_dir / "accounts.json").stat().st_mode) == 0o600

    client = await start(aiohttp_client, sim_dir)
    for name, expected in (("user1", 200), ("user2", 200), ("ghost", 302)):
        client.session.cookie_jar.clear()
        client.session.cookie_jar.update_cookies({"SID": profile_sid(out / f"{name}.json")})
        resp = await client.get(NEW_CHAT_PATH, allow_redirects=False)
        assert resp.status == expected, name
        if expected == 200:
            assert f"{name}@sim.test" in await resp.text()

    # A live account keeps its session; an expired one gets a fresh login from make-profiles.
    old = profile_sid(out / "user1.json")
    make_profiles(sim_dir, out, "--names", "user1")
    assert profile_sid(out / "user1.json") == old
    assert cli.main(["expire", "--dir", str(sim_dir), "user1@sim.test"]) == 0
    make_profiles(sim_dir, out, "--names", "user1")
    assert profile_sid(out / "user1.json") != old


async def test_list_models_has_the_prefix_and_entry_shape(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir)
    login(client, sim_dir)
    for method in ("GET", "POST"):
        resp = await client.request(method, LIST_MODELS_PATH)
        raw = await resp.read()
        assert resp.status == 200 and raw.startswith(b")]}'\n")
        entries = json.loads(raw[5:])[0]
        assert [e[0] for e in entries][:2] == ["models/gemini-2.5-pro", "models/gemini-2.5-flash"]
        for e in entries:
            assert e[0].startswith("models/") and isinstance(e[3], str) and isinstance(e[4], str)
            assert isinstance(e[6], int) and e[6] > 0


# ------------------------------------------------------------------------------ the answer stream

async def test_stream_is_a_growing_json_array_echoing_the_prompt_exactly(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir)
    ask = await asker(client, sim_dir)
    resp = await ask.post(TRICKY)
    assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
    pieces = [p async for p in resp.content.iter_any()]
    body = b"".join(pieces)
    chunks = json.loads(body)
    assert body.startswith(b"[[") and body.endswith(b"]")
    assert len(chunks) > 10
    assert texts(chunks, thought=False) == f"Hello from alice@sim.test. You said: {TRICKY}"
    assert texts(chunks, thought=False) == wire.answer_text("alice@sim.test", TRICKY)
    assert texts(chunks, thought=True) == ""
    for c in chunks[:-1]:
        assert len(c) == 1 and len(c[0][0]) == 1 and c[0][0][0][1] == "model"
    last = chunks[-1]
    assert last[0][0][1] == wire.STOP  # finish marker after the content
    prompt_tok, cand_tok, total, _, details = last[2]
    assert cand_tok == len(chunks) and total == prompt_tok + cand_tok and details == [[1, prompt_tok]]


async def test_thinking_streams_thought_parts_before_the_text(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir)
    ask = await asker(client, sim_dir, "bob")
    chunks = json.loads(await (await ask.post("why?", thinking=True)).read())
    kinds = [len(c[0][0][0][0][0]) == 13 and c[0][0][0][0][0][12] == 1 for c in chunks]
    first_text = kinds.index(False)
    assert first_text > 0 and not any(kinds[first_text:])
    assert "bob@sim.test" in texts(chunks, thought=True)
    assert texts(chunks, thought=False) == "Hello from bob@sim.test. You said: why?"


async def test_max_tokens_and_stop_sequences_shape_the_answer(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir)
    ask = await asker(client, sim_dir)
    chunks = json.loads(await (await ask.post("one two three", maxOutputTokens=3)).read())
    assert len(chunks) == 3 and chunks[-1][0][0][1] == wire.MAX_TOKENS
    chunks = json.loads(await (await ask.post("one two three", stopSequences=["two"])).read())
    assert texts(chunks, False) == "Hello from alice@sim.test. You said: one " and chunks[-1][0][0][1] == 1
    rec = (await (await client.get("/__sim/stats")).json())["requests"][-1]
    assert rec["params"]["stopSequences"] == ["two"] and rec["model"] == "models/gemini-2.5-pro"


async def test_a_100k_character_prompt_is_echoed_whole(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir)
    ask = await asker(client, sim_dir)
    prompt = ("Ünïcode [brackets] \"quotes\" " * 4000)[:100_000]
    chunks = json.loads(await (await ask.post(prompt)).read())
    assert texts(chunks, False) == f"Hello from alice@sim.test. You said: {prompt}"


def test_every_split_mode_yields_the_same_body_cut_inside_the_json():
    answer = wire.build_answer("a@sim.test", "日本 \"x\"", thinking=True, max_tokens=None, stops=[])
    whole = None
    for mode in wire.SPLIT_MODES:
        writes = wire.plan_writes(answer.chunks, wire.Pace(tokens_per_s=10, first_token_s=1, split=mode))
        body = b"".join(w for _, w in writes)
        whole = whole or body
        assert body == whole and json.loads(body) == answer.chunks
        times = [t for t, _ in writes]
        assert times == sorted(times) and times[0] == 1
        if mode == "none":
            assert len(writes) == len(answer.chunks)
            continue
        assert len(writes) == 2 * len(answer.chunks)
        firsts = [w for i, (_, w) in enumerate(writes) if i % 2 == 0]
        inside_a_string = sum(w.count(b'"') % 2 == 1 for w in firsts)
        assert inside_a_string >= len(firsts) // 2
        if mode == "bytes":
            with pytest.raises(UnicodeDecodeError):  # some cut falls inside a UTF-8 character
                for w in firsts:
                    w.decode()


def test_pace_first_token_and_fixed_answer_time():
    assert wire.chunk_times(3, wire.Pace(tokens_per_s=10, first_token_s=0.5)) == [0.5, 0.6, 0.7]
    assert wire.chunk_times(5, wire.Pace(first_token_s=0.2, answer_s=1.0)) == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0])
    assert wire.chunk_times(2, wire.Pace(tokens_per_s=0, first_token_s=0)) == [0, 0]


async def test_paced_stream_is_recorded_with_first_byte_and_end(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir, Knobs(first_token_s=0.3, answer_s=0.8))
    ask = await asker(client, sim_dir)
    t0 = time.time()
    resp = await ask.post("pace me")
    first = await resp.content.readany()
    t_first = time.time()
    rest = await resp.read()
    t_end = time.time()
    json.loads(first + rest)
    assert 0.25 <= t_first - t0 and 0.75 <= t_end - t0 < 5
    rec = (await (await client.get("/__sim/stats")).json())["requests"][-1]
    assert rec["outcome"] == "ok" and rec["status"] == 200
    assert rec["start"] + 0.25 <= rec["first_byte"] <= rec["end"] and rec["end"] - rec["start"] >= 0.75


# ------------------------------------------------------------------------------ errors, quota, knobs

async def test_requests_need_a_fresh_page_token_and_valid_input(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir)
    ask = await asker(client, sim_dir)
    assert (await ask.post("ok")).status == 200
    ask.n -= 1  # replay the same token
    resp = await ask.post("replayed")
    assert resp.status == 403 and (await resp.read()).startswith(b"[,[7,")
    bob = await asker(client, sim_dir, "bob")
    login(client, sim_dir, "alice")  # alice presenting bob's page token
    assert (await bob.post("stolen")).status == 403
    resp = await client.post(GENERATE_PATH, data=b"{not json")
    assert resp.status == 400 and (await resp.read()).startswith(b"[,[3,")
    ask = await asker(client, sim_dir)
    assert (await ask.post("x", model="models/nope")).status == 404


async def test_quota_answers_429_after_n_requests_per_account(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir, Knobs(tokens_per_s=0, first_token_s=0, quota=2))
    alice = await asker(client, sim_dir)
    assert [(await alice.post("hi")).status for _ in range(2)] == [200, 200]
    resp = await alice.post("hi")
    assert resp.status == 429
    assert await resp.read() == b'[,[8,"Resource has been exhausted (e.g. check quota)."]]'
    bob = await asker(client, sim_dir, "bob")
    assert (await bob.post("hi")).status == 200
    stats = await (await client.get("/__sim/stats")).json()
    assert stats["accounts"]["alice@sim.test"]["errors"] == 1


def test_quota_window_slides_with_time():
    state = SimState(Knobs(quota=2, quota_window_s=10))
    assert [state.take_quota("a", t) for t in (0, 1, 2, 9.9)] == [True, True, False, False]
    assert state.take_quota("a", 10.5) and not state.take_quota("a", 10.6)
    assert state.take_quota("b", 10.6)


async def test_failure_knobs_error_cut_and_hang(aiohttp_client, sim_dir):
    client = await start(aiohttp_client, sim_dir)
    ask = await asker(client, sim_dir)
    bad = await client.post("/__sim/fail", json={"mode": "explode"})
    assert bad.status == 400
    assert (await client.post("/__sim/fail", json={"mode": "error", "count": 2, "account": "alice"})).ok
    assert [(await ask.post("x")).status for _ in range(3)] == [500, 500, 200]

    await client.post("/__sim/config", json={"tokens_per_s": 200})
    await client.post("/__sim/fail", json={"mode": "cut"})
    resp = await ask.post("a longer prompt so that the answer has many chunks to cut")
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()

    await client.post("/__sim/fail", json={"mode": "hang"})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(ask.post("hang"), 0.5)
    deadline = time.monotonic() + 10
    while True:  # the handler notices the client gave up and ends the record
        recs = (await (await client.get("/__sim/stats")).json())["requests"]
        if recs[-1]["end"] is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert [r["outcome"] for r in recs[-3:]] == ["ok", "cut", "hang"]
    cfg = await (await client.get("/__sim/config")).json()
    assert cfg["tokens_per_s"] == 200
    assert (await client.post("/__sim/config", json={"split": "weird"})).status == 400


# ------------------------------------------------------------------------------ the CLI process

def test_serve_writes_its_url_and_exits_cleanly_on_sigterm(tmp_path):
    sim_dir = tmp_path / "sim"
    env = {**os.environ, "BPOOL_SIM_DIR": str(sim_dir), "BPOOL_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen([sys.executable, "-m", "bpool.sim", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (sim_dir / "url").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = (sim_dir / "url").read_text().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        import urllib.request
        with urllib.request.urlopen(url + "/__sim/health", timeout=10) as r:
            assert json.load(r)["ok"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not (sim_dir / "url").exists()
        assert url.encode() in proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


# ------------------------------------------------------------------------------ a real browser

TEE_SCRIPT = """
(() => {
  const orig = window.fetch;
  window.fetch = async (...args) => {
    const resp = await orig(...args);
    const url = String(args[0] && args[0].url || args[0]);
    if (!url.includes('GenerateContent') || !resp.body) return resp;
    const [mine, theirs] = resp.body.tee();
    (async () => {
      const reader = mine.getReader();
      const dec = new TextDecoder();
      for (;;) {
        const {done, value} = await reader.read();
        if (done) { await window.__tee(null, resp.status); break; }
        await window.__tee(dec.decode(value, {stream: true}), resp.status);
      }
    })();
    return new Response(theirs, {status: resp.status, statusText: resp.statusText, headers: resp.headers});
  };
})();
"""

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def test_the_page_runs_in_real_chromium(aiohttp_server, tmp_path, sim_dir):
    from playwright.async_api import async_playwright

    server = await aiohttp_server(create_app(SimSettings(dir=sim_dir, knobs=Knobs(
        tokens_per_s=100, first_token_s=0.05, split="bytes"))))
    base = str(server.make_url("")).rstrip("/")
    pieces: list[str | None] = []
    ended = asyncio.Event()

    def on_tee(source, text, status):
        pieces.append(text)
        if text is None:
            ended.set()

    async def prompt(page, text: str) -> None:
        await page.evaluate("""t => { const el = document.querySelector(
            'ms-prompt-box textarea[aria-label="Enter a prompt"]');
            el.value = t; el.dispatchEvent(new Event('input', {bubbles: true}));
            el.dispatchEvent(new Event('change', {bubbles: true})); }""", text)

    async def new_chat(page) -> None:
        await page.click('button[aria-label="New chat"]')
        discard = page.locator(".mat-mdc-dialog-inner-container").get_by_role(
            "button", name="Discard and continue")
        if await discard.count():
            await discard.click()
        assert await page.locator("ms-chat-turn").count() == 0

    home = tmp_path / "home"
    home.mkdir()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
                                           env={**os.environ, "HOME": str(home)})
        try:
            ctx = await browser.new_context(storage_state=str(sim_dir.parent / "cookies/alice.json"))
            await ctx.expose_binding("__tee", on_tee)
            await ctx.add_init_script(TEE_SCRIPT)
            page = await ctx.new_page()
            await page.goto(base + NEW_CHAT_PATH)
            assert await page.locator('[data-test-id="account-email"]').inner_text() == "alice@sim.test"
            model = page.locator('[data-test-id="model-name"]')
            await model.wait_for(state="visible", timeout=15_000)
            assert await model.inner_text() == "gemini-2.5-pro"
            run = page.locator('ms-run-button button[type="submit"]')
            assert await run.is_disabled()

            await prompt(page, TRICKY)
            await run.click()
            await page.locator('button[aria-label="Stop generating"]').wait_for(timeout=15_000)
            await asyncio.wait_for(ended.wait(), 30)
            await page.locator('ms-run-button button[aria-label="Run"]').wait_for(timeout=15_000)
            expected = f"Hello from alice@sim.test. You said: {TRICKY}"
            rendered = await page.locator(".chat-turn-container.model ms-text-chunk").text_content()
            assert rendered == expected
            body = "".join(p for p in pieces if p is not None)
            assert len(pieces) > 5 and texts(json.loads(body), thought=False) == expected

            # New chat asks before discarding; then the model preference and Ctrl+Enter.
            await page.click('button[aria-label="New chat"]')
            await page.locator(".mat-mdc-dialog-inner-container").get_by_role(
                "button", name="Discard and continue").click()
            assert await page.locator("ms-chat-turn").count() == 0
            await page.click('button[aria-label="New chat"]')  # empty chat: no dialog
            assert await page.locator(".mat-mdc-dialog-inner-container").count() == 0
            await page.evaluate("""() => localStorage.setItem('aiStudioUserPreference',
                JSON.stringify({promptModel: 'models/gemini-2.5-flash'}))""")
            await page.goto(base + NEW_CHAT_PATH)
            await page.locator('[data-test-id="model-name"]', has_text="gemini-2.5-flash").wait_for()
            await page.click('button[role="switch"][aria-label="Toggle thinking mode"]')
            await prompt(page, "second")
            await page.press('textarea[aria-label="Enter a prompt"]', "Control+Enter")
            await page.locator("ms-thought-chunk").wait_for(state="visible", timeout=15_000)
            await page.locator(".chat-turn-container.model ms-text-chunk",
                               has_text="You said: second").wait_for(timeout=15_000)

            # Stop aborts the request; then a 500 shows an error toast and a 429 the quota callout.
            async with aiohttp.ClientSession() as http:
                await http.post(base + "/__sim/config", json={"tokens_per_s": 5, "quota": 2})
                await new_chat(page)
                await page.click('button[role="switch"][aria-label="Toggle thinking mode"]')
                await prompt(page, "stop me please, this answer is slow")
                await run.click()
                await page.locator(".chat-turn-container.model ms-text-chunk",
                                   has_text="Hello").wait_for(timeout=15_000)
                await page.click('button[aria-label="Stop generating"]')
                await page.locator('ms-run-button button[aria-label="Run"]').wait_for(timeout=15_000)

                await http.post(base + "/__sim/fail", json={"mode": "error", "status": 500})
                await new_chat(page)
                await prompt(page, "fail")
                await run.click()
                await page.locator("div.toast.error span.content-text").wait_for(timeout=15_000)

                await new_chat(page)
                assert await page.locator("div.toast").count() == 0
                await prompt(page, "over quota")
                await run.click()
                await page.locator("ms-callout.error-callout .message",
                                   has_text="exceeded quota").wait_for(timeout=15_000)
                deadline = time.monotonic() + 15
                while True:  # the server sees the stopped request end
                    recs = (await (await http.get(base + "/__sim/stats")).json())["requests"]
                    if recs[2]["end"] is not None or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await browser.close()
    assert [(r["model"], r["params"]["thinking"], r["turns"], r["outcome"], r["status"])
            for r in recs] == [("models/gemini-2.5-pro", False, 1, "ok", 200),
                               ("models/gemini-2.5-flash", True, 1, "ok", 200),
                               ("models/gemini-2.5-flash", False, 1, "aborted", 499),
                               ("models/gemini-2.5-flash", False, 1, "error", 500),
                               ("models/gemini-2.5-flash", False, 1, "error", 429)]
