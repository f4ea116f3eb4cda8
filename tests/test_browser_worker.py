"""The real driver in real Chromium against the studio simulator (bpool.sim), and browser_proc.

Driver level: streaming, unicode, a 100,000-character prompt, logged-out and region pages, quota,
parameters, thoughts, cancel, reset, a broken stream, a dead browser. Process level: browser_proc
registers with a broker (a bare ROUTER socket here), serves one job, drains on SIGTERM, and exits
78 on configuration errors. Full-pool tests (broker + front + workers) live elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bpool.config import REPO_ROOT
from bpool.protocol import ChatMessage, JobSpec
from bpool.studio import engines, procs
from bpool.studio.driver import DriverSettings, StudioDriver
from bpool.studio.outcomes import BrowserGone, StepError
from bpool.studio.profiles import load_profile

pytestmark = pytest.mark.skipif(not Path(engines.DEFAULT_CHROMIUM).exists(),
                                reason="no system Chromium")

PY = sys.executable


def wait_for(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Sim:
    def __init__(self, root: Path):
        self.dir = root / "sim"
        self.cookies = root / "cookies"
        env = dict(os.environ, BPOOL_SIM_DIR=str(self.dir))
        for extra in ([], ["--logged-out"]):
            names = "ghost" if extra else "alice,bob"
            subprocess.run([PY, "-m", "bpool.sim", "make-profiles", "--dir", str(self.dir),
                            "--out", str(self.cookies), "--names", names, *extra],
                           check=True, env=env, cwd=REPO_ROOT, capture_output=True, timeout=60)
        self.proc = subprocess.Popen(
            [PY, "-m", "bpool.sim", "serve", "--dir", str(self.dir), "--port", "0"],
            env=env, cwd=REPO_ROOT, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url_file = self.dir / "url"
        self.url = wait_for(lambda: url_file.exists() and url_file.read_text().strip(), 30,
                            "the simulator's url file")

    def admin(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/__sim/" + path, data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def requests(self) -> list[dict]:
        return self.admin("stats")["requests"]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


DEFAULT_KNOBS = {"tokens_per_s": 0, "first_token_s": 0, "answer_s": 0, "split": "chars",
                 "quota": 0, "region_blocked": False}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = Sim(tmp_path_factory.mktemp("studio"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(autouse=True)
def fresh_sim(sim):
    sim.admin("reset", {})
    sim.admin("config", DEFAULT_KNOBS)


class Open:
    """A launched Chromium with the profile's storage state and an installed driver."""

    def __init__(self, browser, driver, run_dir):
        self.browser, self.driver, self.run_dir = browser, driver, run_dir


@pytest.fixture
async def open_page(sim, tmp_path):
    launched = []

    async def make(name: str = "alice", **settings) -> Open:
        profile = load_profile(sim.cookies / f"{name}.json")
        s = engines.EngineSettings()
        dirs = engines.BrowserDirs.for_profile(tmp_path / "run", profile.id)
        browser = await engines.launch(engines.EngineChoice("chromium", s.chromium_path, "test"),
                                       s, dirs)
        launched.append(browser)
        await browser.context.set_storage_state(profile.storage_state())
        ds = DriverSettings(base_url=sim.url, step_timeout_s=20, navigation_timeout_s=30,
                            **settings)
        driver = StudioDriver(browser.context, ds, tmp_path / "run" / "snapshots" / profile.id)
        await driver.install()
        driver.watch(browser.gone)
        return Open(browser, driver, tmp_path / "run")

    try:
        yield make
    finally:
        for b in launched:
            await b.close()
            assert not procs.find_tagged(b.dirs.tag) or await _gone(b.dirs.tag)


async def _gone(tag: str) -> bool:
    for _ in range(100):
        if not procs.find_tagged(tag):
            return True
        await asyncio.sleep(0.05)
    return False


def spec(prompt: str, model: str = "gemini-2.5-flash", **kw) -> JobSpec:
    return JobSpec(model=model, messages=(ChatMessage("user", prompt),), **kw)


class Recorder:
    def __init__(self):
        self.chunks: list[tuple[float, str, str]] = []
        self.submitted_at: float | None = None

    def emit(self, content: str = "", reasoning: str = "") -> None:
        self.chunks.append((time.monotonic(), content, reasoning))

    def on_submit(self) -> None:
        self.submitted_at = time.monotonic()

    @property
    def content(self) -> str:
        return "".join(c for _, c, _ in self.chunks)

    @property
    def reasoning(self) -> str:
        return "".join(r for _, _, r in self.chunks)


async def test_open_reads_account_models_and_streams_an_answer(sim, open_page):
    sim.admin("config", {"tokens_per_s": 25, "first_token_s": 0.1, "split": "bytes"})
    page = await open_page("alice")
    d = page.driver
    await d.open()
    assert d.account == "alice@sim.test"
    assert "gemini-2.5-pro" in d.models and "gemini-2.5-flash" in d.models
    prompt = "Grüße, 世界! **bold** `code` [x](y) \"quotes\" \\ ]],\"model\"] 🚀\n- item"
    rec = Recorder()
    t0 = time.monotonic()
    finish, usage = await d.run(spec(prompt), rec.emit, rec.on_submit)
    t_end = time.monotonic()
    assert rec.content == f"Hello from alice@sim.test. You said: {prompt}"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0 and usage.total_tokens > usage.prompt_tokens
    # streamed: many chunks, the first well before the end
    assert len(rec.chunks) >= 5
    assert rec.chunks[0][0] < t_end - 0.3, "first chunk only arrived at the end"
    assert rec.submitted_at is not None and t0 < rec.submitted_at < rec.chunks[0][0]
    reqs = sim.requests()
    assert len(reqs) == 1 and reqs[0]["outcome"] == "ok" and reqs[0]["turns"] == 1


async def test_large_prompt_round_trips_and_is_submitted_fast(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    line = "Line {i}: ünïcödé ✓ [brackets] {{braces}} \"quotes\" \\backslash\\ <tag> &amp;\n"
    prompt = "".join(line.format(i=i) for i in range(2000))[:100_000]
    assert len(prompt) == 100_000
    t0 = time.monotonic()
    await d.submit(prompt, lambda: None)
    submit_s = time.monotonic() - t0
    assert submit_s < 1.0, f"setting 100k chars and clicking Run took {submit_s:.2f}s"
    stream = await d._await_request()
    rec = Recorder()
    from bpool.studio.answer import read_answer
    finish, _ = await read_answer(stream, rec.emit, d._limits())
    assert finish == "stop"
    assert rec.content == f"Hello from alice@sim.test. You said: {prompt}"
    assert sim.requests()[0]["prompt_chars"] == 100_000


async def test_logged_out_profile_is_detected(sim, open_page):
    page = await open_page("ghost")
    with pytest.raises(StepError) as ei:
        await page.driver.open()
    assert ei.value.kind == "logged_out"
    assert ei.value.step in ("open page", "wait ready")
    assert not list((page.run_dir / "snapshots").glob("**/*.png"))  # not the operator's problem


async def test_region_page_is_reported(sim, open_page):
    sim.admin("config", {"region_blocked": True})
    page = await open_page("alice")
    with pytest.raises(StepError) as ei:
        await page.driver.open()
    assert ei.value.kind == "site" and "region" in ei.value.message


async def test_quota_429_is_rate_limited_with_a_cooldown(sim, open_page):
    sim.admin("config", {"quota": 1, "quota_window_s": 600})
    page = await open_page("alice", cooldowns=__import__("bpool.studio.outcomes", fromlist=["x"])
                           .Cooldowns(rate_limit_s=120.0, quota_s=7200.0))
    d = page.driver
    await d.open()
    await d.run(spec("first"), Recorder().emit, lambda: None)
    await d.reset()
    rec = Recorder()
    with pytest.raises(StepError) as ei:
        await d.run(spec("second"), rec.emit, lambda: None)
    err = ei.value
    assert err.kind == "rate_limited" and err.step == "read answer"
    assert "429" in err.message
    assert err.retry_after_s == 120.0  # "Resource has been exhausted": minutes, not hours
    assert rec.chunks == []
    info = err.to_error()
    assert info.status == 429 and info.retry_after_s == 120.0


async def test_reset_between_jobs_starts_a_fresh_chat(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    for prompt in ("one", "two"):
        rec = Recorder()
        await d.run(spec(prompt), rec.emit, lambda: None)
        assert rec.content == f"Hello from alice@sim.test. You said: {prompt}"
        await d.reset()
        probe = await d._probe("test")
        assert probe["turns"] == 0 and probe["promptLength"] == 0 and not probe["dialog"]
    reqs = sim.requests()
    assert [r["turns"] for r in reqs] == [1, 1]  # the second prompt carried no history


async def test_model_and_parameters_reach_the_request_and_defaults_come_back(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    rec = Recorder()
    finish, _ = await d.run(
        spec("a b c d e f g h i j k l m n o p", model="gemini-2.5-pro", temperature=0.3,
             top_p=0.5, max_tokens=3, stop=("never-there", "zzz")),
        rec.emit, lambda: None)
    assert finish == "length"
    await d.reset()
    await d.run(spec("plain", model="models/gemini-2.5-pro"), Recorder().emit, lambda: None)
    first, second = sim.requests()
    assert first["model"] == second["model"] == "models/gemini-2.5-pro"
    p1, p2 = first["params"], second["params"]
    assert (p1["temperature"], p1["topP"], p1["maxOutputTokens"]) == (0.3, 0.5, 3)
    assert p1["stopSequences"] == ["never-there", "zzz"]
    assert (p2["temperature"], p2["topP"], p2["stopSequences"]) == (1, 0.95, [])
    assert p2["maxOutputTokens"] == 65536
    with pytest.raises(StepError) as ei:
        await d.run(spec("x", model="gpt-4o"), Recorder().emit, lambda: None)
    assert ei.value.kind == "bad_request" and ei.value.step == "select model"


async def test_system_and_turns_are_folded_into_one_prompt(sim, open_page):
    page = await open_page("bob")
    d = page.driver
    await d.open()
    rec = Recorder()
    msgs = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"),
            ChatMessage("assistant", "Hello!"), ChatMessage("user", "Again"))
    await d.run(JobSpec(model="gemini-2.5-flash", messages=msgs), rec.emit, lambda: None)
    expected = ("System Instructions:\nBe brief.\n\n---\n\nUser:\nHi\n\n---\n\n"
                "Assistant:\nHello!\n\n---\n\nUser:\nAgain")
    assert rec.content == f"Hello from bob@sim.test. You said: {expected}"


async def test_thoughts_stream_as_reasoning(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    rec = Recorder()
    await d.run(spec("think first", reasoning_effort="high"), rec.emit, lambda: None)
    assert "**Planning**" in rec.reasoning and "Planning" not in rec.content
    first_content = next(i for i, c in enumerate(rec.chunks) if c[1])
    assert all(r and not c for _, c, r in rec.chunks[:first_content])
    assert sim.requests()[0]["params"]["thinking"] is True


async def test_cancel_stops_generating_and_the_page_recovers(sim, open_page):
    sim.admin("config", {"tokens_per_s": 5, "first_token_s": 0})
    page = await open_page("alice")
    d = page.driver
    await d.open()
    rec = Recorder()
    task = asyncio.create_task(d.run(spec("a long answer " * 20), rec.emit, lambda: None))
    await asyncio.wait_for(_until(lambda: rec.chunks), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(_until(lambda: sim.requests()[0]["outcome"] == "aborted"), 10)
    await d.reset()
    sim.admin("config", {"tokens_per_s": 0})
    rec2 = Recorder()
    await d.run(spec("after cancel"), rec2.emit, lambda: None)
    assert rec2.content.endswith("You said: after cancel")


async def test_cut_stream_is_a_site_error_with_a_snapshot(sim, open_page):
    sim.admin("fail", {"mode": "cut", "count": 1})
    page = await open_page("alice")
    d = page.driver
    await d.open()
    with pytest.raises(StepError) as ei:
        await d.run(spec("will be cut " * 5), Recorder().emit, lambda: None)
    assert ei.value.kind == "site" and ei.value.step == "read answer"
    snaps = page.run_dir / "snapshots" / "alice"
    assert list(snaps.glob("*read-answer.png")) and list(snaps.glob("*read-answer.html"))
    await d.reset()
    rec = Recorder()
    await d.run(spec("fine again"), rec.emit, lambda: None)
    assert rec.content.endswith("fine again")


async def test_dead_browser_mid_answer_is_browser_gone(sim, open_page):
    sim.admin("config", {"tokens_per_s": 5})
    page = await open_page("alice")
    d = page.driver
    await d.open()
    rec = Recorder()
    task = asyncio.create_task(d.run(spec("slow " * 30), rec.emit, lambda: None))
    await asyncio.wait_for(_until(lambda: rec.chunks), 30)
    kill_browser_only(page.browser.dirs.tag)  # a crash: Playwright's driver lives on
    with pytest.raises(BrowserGone):
        await asyncio.wait_for(task, 30)
    await asyncio.wait_for(page.browser.gone.wait(), 10)


async def test_dead_driver_while_idle_is_noticed(sim, open_page):
    page = await open_page("alice")
    await page.driver.open()
    drivers = [p for p in procs.find_tagged(page.browser.dirs.tag) if os.getpgid(p) == os.getpgrp()]
    assert len(drivers) == 1
    os.kill(drivers[0], signal.SIGKILL)
    await asyncio.wait_for(page.browser.gone.wait(), 10)
    with pytest.raises(BrowserGone):
        await asyncio.wait_for(page.driver.run(spec("x"), Recorder().emit, lambda: None), 30)


def kill_browser_only(tag: str) -> None:
    for pid in procs.find_tagged(tag):
        if os.getpgid(pid) != os.getpgrp():
            os.killpg(os.getpgid(pid), signal.SIGKILL)


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.05)
