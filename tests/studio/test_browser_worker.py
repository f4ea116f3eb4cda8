"""The real driver in real Chromium against the studio simulator (bpool.sim), and browser_proc.

Driver level: streaming, unicode, a 100,000-character prompt, logged-out and region pages, quota,
parameters, thoughts, cancel, reset, a broken stream, a dead browser. Process level: browser_proc
registers with a broker (a bare ROUTER socket here), serves one job, drains on SIGTERM, and exits
78 on configuration errors. Full-pool tests (broker + front + workers) live elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from bpool.worker import engines
from bpool.worker import procs
from bpool.studio.driver import DriverSettings, StudioDriver
from bpool.studio.outcomes import BrowserGone, Cooldowns, StepError
from bpool.sim.knobs import Knobs
from bpool.worker.profiles import load_profile

HAVE_CHROMIUM = Path(engines.DEFAULT_CHROMIUM).exists()

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
        for names, extra in (("alice,bob", []), ("ghost", ["--logged-out"]),
                             ("carol", ["--needs-tos"])):
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


# Every knob at its real-page default (bpool/sim/README.md), with answers as fast as possible.
DEFAULT_KNOBS = {**dataclasses.asdict(Knobs()), "tokens_per_s": 0, "first_token_s": 0}


@pytest.fixture(scope="module")
def sim_server(tmp_path_factory):
    if not HAVE_CHROMIUM:
        pytest.skip("no system Chromium")
    s = Sim(tmp_path_factory.mktemp("studio"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sim(sim_server):
    """The module's simulator with fresh stats, no quota, no failures and fast answers."""
    sim_server.admin("reset", {})
    sim_server.admin("config", DEFAULT_KNOBS)
    return sim_server


class Open:
    """A launched Chromium with the profile's storage state and an installed driver."""

    def __init__(self, browser, driver, run_dir):
        self.browser, self.driver, self.run_dir = browser, driver, run_dir


@pytest.fixture
async def open_page(sim, tmp_path):
    launched = []

    async def make(name: str = "alice", table=None, **settings) -> Open:
        profile = load_profile(sim.cookies / f"{name}.json")
        s = engines.EngineSettings()
        dirs = engines.BrowserDirs.for_profile(tmp_path / "run", profile.id)
        browser = await engines.launch(engines.EngineChoice("chromium", s.chromium_path, "test"),
                                       s, dirs)
        launched.append(browser)
        await browser.context.set_storage_state(profile.storage_state())
        ds = DriverSettings(base_url=sim.url, step_timeout_s=20, navigation_timeout_s=30,
                            **settings)
        extra = {} if table is None else {"table": table}
        driver = StudioDriver(browser.context, ds, tmp_path / "run" / "snapshots" / profile.id,
                              profile=profile.id, **extra)
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


@pytest.mark.timeout(300)  # 100k characters each way through a real page: slow on a busy machine
async def test_large_prompt_round_trips(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    line = "Line {i}: ünïcödé ✓ [brackets] {{braces}} \"quotes\" \\backslash\\ <tag> &amp;\n"
    prompt = "".join(line.format(i=i) for i in range(2000))[:100_000]
    assert len(prompt) == 100_000
    from bpool.studio.answer import read_answer

    # Whole and unchanged (how fast it is submitted is `bench browser`'s job-to-submitted number).
    await d.submit(prompt, lambda: None)
    stream = await d._await_request(d.model)
    rec = Recorder()
    finish, _ = await read_answer(stream, rec.emit, d._limits())
    assert finish == "stop"
    assert rec.content == f"Hello from alice@sim.test. You said: {prompt}"
    assert sim.requests()[0]["prompt_chars"] == 100_000


# ---------------------------------------------------------------------------- answer timeouts
# Each limit is tested with the other two far out of reach, so the one that fired is known
# (the message names the wait that ran out).

LONG_S = 600.0


async def test_a_page_that_never_answers_hits_the_first_chunk_timeout(sim, open_page):
    page = await open_page("alice", first_chunk_timeout_s=3.0, idle_timeout_s=LONG_S,
                           answer_timeout_s=LONG_S)
    d = page.driver
    await d.open()
    sim.admin("fail", {"mode": "hang"})
    rec = Recorder()
    with pytest.raises(StepError) as ei:
        await d.run(spec("anyone there?"), rec.emit, rec.on_submit)
    assert (ei.value.kind, ei.value.step) == ("timeout", "read answer")
    assert "no answer data for 3s" in str(ei.value)
    assert rec.submitted_at is not None and rec.content == ""
    assert sim.requests()[-1]["outcome"] == "hang"


async def test_an_answer_that_stalls_hits_the_idle_timeout(sim, open_page):
    sim.admin("config", {"first_token_s": 0, "tokens_per_s": 0.1})  # 10 s between chunks
    page = await open_page("alice", first_chunk_timeout_s=LONG_S, idle_timeout_s=2.0,
                           answer_timeout_s=LONG_S)
    d = page.driver
    await d.open()
    rec = Recorder()
    with pytest.raises(StepError) as ei:
        await d.run(spec("take your time"), rec.emit, rec.on_submit)
    assert (ei.value.kind, ei.value.step) == ("timeout", "read answer")
    # "2s", not the first chunk's 600: the body had begun (its first chunk holds no text yet).
    assert "no answer data for 2s" in str(ei.value)
    assert not rec.content.endswith("take your time")


async def test_an_answer_that_trickles_on_hits_the_total_timeout(sim, open_page):
    sim.admin("config", {"first_token_s": 0, "tokens_per_s": 4})  # never idle for long
    page = await open_page("alice", first_chunk_timeout_s=LONG_S, idle_timeout_s=LONG_S,
                           answer_timeout_s=4.0)
    d = page.driver
    await d.open()
    prompt = " ".join(f"word{i}" for i in range(400))  # an answer of many chunks
    rec = Recorder()
    with pytest.raises(StepError) as ei:
        await d.run(spec(prompt), rec.emit, rec.on_submit)
    assert (ei.value.kind, ei.value.step) == ("timeout", "read answer")
    assert "no answer data for" in str(ei.value)
    assert "600s" not in str(ei.value)  # the total's remainder, not a whole idle wait
    assert len(rec.chunks) >= 2 and not rec.content.endswith(prompt)


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


@pytest.mark.parametrize("errors", ["frame", "http"])
async def test_quota_is_rate_limited_with_a_cooldown(sim, open_page, errors):
    """The live page gets the quota as an error frame in a 200 body; older pages as HTTP 429."""
    sim.admin("config", {"quota": 1, "quota_window_s": 600, "errors": errors})
    page = await open_page("alice", cooldowns=Cooldowns(rate_limit_s=120.0, quota_s=7200.0))
    d = page.driver
    await d.open()
    await d.run(spec("first"), Recorder().emit, lambda: None)
    await d.reset()
    rec = Recorder()
    with pytest.raises(StepError) as ei:
        await d.run(spec("second"), rec.emit, lambda: None)
    err = ei.value
    assert err.kind == "rate_limited" and err.step == "read answer"
    assert ("RESOURCE_EXHAUSTED" if errors == "frame" else "HTTP 429") in err.message
    assert err.retry_after_s == 120.0  # a per-window limit: minutes, not hours
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


# ---------------------------------------------------------------------------- browser_proc


class FakeBroker:
    """A bare ROUTER that speaks just enough of the broker side for one worker."""

    def __init__(self, run_dir: Path):
        import zmq.asyncio

        from bpool import config

        from bpool.wire import sockets as _zmq
        from bpool.protocol import WorkerToBroker, decoder, encoder

        self.ctx = zmq.asyncio.Context()
        self.sock = _zmq.router(self.ctx, config.worker_endpoint(run_dir))
        self.enc, self.dec = encoder(), decoder(WorkerToBroker)
        self.ident: bytes | None = None

    async def recv(self, timeout_s: float = 60.0, skip_heartbeats: bool = True):
        from bpool.protocol import Heartbeat

        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no message from the worker in time")
            if not await self.sock.poll(int(min(left, 0.3) * 1000)):
                if self.ident is not None:
                    await self.send(Heartbeat())  # keep the worker's liveness check happy
                continue
            ident, frame = await self.sock.recv_multipart()
            self.ident = ident
            msg = self.dec.decode(frame)
            if skip_heartbeats and isinstance(msg, Heartbeat):
                continue
            return msg

    async def send(self, msg) -> None:
        await self.sock.send_multipart([self.ident, self.enc.encode(msg)])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def start_worker(profile: Path, sim: Sim, run_dir: Path, **env) -> subprocess.Popen:
    full_env = dict(os.environ, BPOOL_RUN_DIR=str(run_dir), BPOOL_STUDIO_URL=sim.url,
                    BPOOL_BROWSER="chromium", BPOOL_HEARTBEAT_INTERVAL_S="0.5", **env)
    return subprocess.Popen([PY, "-m", "bpool.browser_proc", "--profile", str(profile)],
                            env=full_env, cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def worker_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    started: list[subprocess.Popen] = []
    broker = FakeBroker(run_dir)
    yield run_dir, broker, started
    broker.close()
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stderr.close()
    for tag_dir in (run_dir / "browsers").glob("*"):
        procs.kill_tagged(str(tag_dir))


async def wait_exit(proc: subprocess.Popen, timeout_s: float) -> int:
    return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout_s)


async def test_browser_proc_registers_serves_a_job_and_drains_on_sigterm(sim, worker_run):
    from bpool.protocol import Assign, Chunk, Done, Goodbye, Idle, Ready, Started

    run_dir, broker, started = worker_run
    proc = start_worker(sim.cookies / "alice.json", sim, run_dir)
    started.append(proc)
    ready = await broker.recv(90)
    assert isinstance(ready, Ready)
    assert (ready.profile_id, ready.engine, ready.account) == ("alice", "chromium", "alice@sim.test")
    assert "gemini-2.5-flash" in ready.models and ready.unusable is None
    assert ready.pid == proc.pid
    await broker.send(Assign("job-1", spec("héllo wörld")))
    got = [await broker.recv(60)]
    while not isinstance(got[-1], Done):
        got.append(await broker.recv(60))
    assert isinstance(got[0], Started) and got[0].job_id == "job-1"
    chunks = [m for m in got if isinstance(m, Chunk)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert "".join(c.content for c in chunks) == "Hello from alice@sim.test. You said: héllo wörld"
    assert got[-1].finish_reason == "stop" and got[-1].usage is not None
    assert isinstance(await broker.recv(30), Idle)  # only after the page was reset
    tag = str(run_dir / "browsers" / "alice")
    assert procs.find_tagged(tag)
    proc.send_signal(signal.SIGTERM)
    assert isinstance(await broker.recv(30), Goodbye)
    assert await wait_exit(proc, 30) == 0
    assert await _gone(tag), "a browser outlived its worker"


@pytest.mark.parametrize("profile, kind", [("ghost", "logged_out"), ("carol", "needs_consent")])
async def test_browser_proc_unusable_account_registers_out_of_rotation(sim, worker_run, profile,
                                                                         kind):
    from bpool.protocol import Ready

    run_dir, broker, started = worker_run
    proc = start_worker(sim.cookies / f"{profile}.json", sim, run_dir)
    started.append(proc)
    ready = await broker.recv(90)
    assert isinstance(ready, Ready) and ready.profile_id == profile
    assert ready.unusable is not None and ready.unusable.kind == kind
    assert profile in ready.unusable.message or kind == "logged_out"
    # Still there after registering: it keeps talking (heartbeats) instead of exiting.
    await broker.recv(60, skip_heartbeats=False)
    await broker.recv(60, skip_heartbeats=False)
    assert proc.poll() is None  # stays up so the operator sees why
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, 30) == 0


async def test_browser_proc_exits_non_zero_when_its_browser_dies(sim, worker_run):
    from bpool.protocol import Goodbye, Ready

    run_dir, broker, started = worker_run
    proc = start_worker(sim.cookies / "bob.json", sim, run_dir)
    started.append(proc)
    assert isinstance(await broker.recv(90), Ready)
    tag = str(run_dir / "browsers" / "bob")
    for pid in procs.find_tagged(tag):
        if os.getpgid(pid) != proc.pid:  # the browser's own group, not the worker's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert isinstance(await broker.recv(30), Goodbye)
    assert await wait_exit(proc, 30) == 1
    assert await _gone(tag)


@pytest.mark.parametrize("case", ["bad profile", "no chromium", "bad browser setting"])
def test_browser_proc_config_errors_exit_78_with_one_line(sim, tmp_path, case):
    profile = sim.cookies / "alice.json"
    env = dict(os.environ, BPOOL_RUN_DIR=str(tmp_path / "run"), BPOOL_STUDIO_URL=sim.url)
    if case == "bad profile":
        profile = tmp_path / "broken.json"
        profile.write_text('{"cookies": []}')
    elif case == "no chromium":
        env.update(BPOOL_BROWSER="chromium", BPOOL_CHROMIUM_PATH=str(tmp_path / "nope"))
    else:
        env.update(BPOOL_BROWSER="netscape")
    r = subprocess.run([PY, "-m", "bpool.browser_proc", "--profile", str(profile)], env=env,
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 78
    errors = [line for line in r.stderr.splitlines() if "bpool.browser_proc:" in line]
    assert len(errors) == 1, r.stderr
    expect = {"bad profile": ["broken.json", "has no cookies"],
              "no chromium": [str(tmp_path / "nope"), "BPOOL_CHROMIUM_PATH"],
              "bad browser setting": ["netscape", "BPOOL_BROWSER"]}[case]
    assert all(e in errors[0] for e in expect)
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- sans-IO pieces


def test_prompt_rendering():
    from bpool.studio.prompt import render_prompt

    assert render_prompt([ChatMessage("user", "  just this\n")]) == "  just this\n"
    assert render_prompt([ChatMessage("system", "S1"), ChatMessage("system", "S2"),
                          ChatMessage("user", "U")]) == \
        "System Instructions:\nS1\n\nS2\n\n---\n\nUser:\nU"
    assert render_prompt([ChatMessage("user", "a"), ChatMessage("assistant", "b"),
                          ChatMessage("tool", "c"), ChatMessage("user", "d")]) == \
        "User:\na\n\n---\n\nAssistant:\nb\n\n---\n\nTool:\nc\n\n---\n\nUser:\nd"


def test_location_and_error_classification():
    from bpool.studio.driver import STUDIO
    from bpool.studio.outcomes import Cooldowns, http_problem, location_problem, notice_problem

    def loc(url, title=""):
        return location_problem(url, title, signin_hosts=STUDIO.signin_hosts,
                                signin_path_markers=STUDIO.signin_path_markers,
                                signin_title=STUDIO.signin_title, region_title=STUDIO.region_title)

    assert loc("https://accounts.google.com/v3/signin/identifier?x=1")[0] == "logged_out"
    assert loc("http://127.0.0.1:1/accounts.google.com/ServiceLogin?continue=x")[0] == "logged_out"
    assert loc("https://aistudio.google.com/prompts/new_chat", "Sign in - Google Accounts")[0] \
        == "logged_out"
    assert loc("https://aistudio.google.com/", "Available regions | Google AI Studio") == \
        ("site", "AI Studio is not available in this region (page title says so)")
    assert loc("https://aistudio.google.com/prompts/new_chat", "New chat | Google AI Studio") is None

    cd = Cooldowns(rate_limit_s=60, quota_s=3600)
    q = STUDIO.quota_phrases
    assert http_problem(429, "You exceeded quota for today", q, cd) == \
        ("rate_limited", "HTTP 429: You exceeded quota for today", 3600)
    assert http_problem(429, "Resource has been exhausted", q, cd)[2] == 60
    assert http_problem(401, "", q, cd)[0] == "logged_out"
    assert http_problem(403, "The caller does not have permission", q, cd)[0] == "site"
    assert http_problem(400, "bad", q, cd)[0] == "bad_request"
    assert http_problem(503, "", q, cd) == ("site", "HTTP 503", None)

    r = STUDIO.rate_phrases
    assert notice_problem(["Failed: user has exceeded quota."], q, r, cd)[::2] == ("rate_limited", 3600)
    assert notice_problem(["Too many requests, slow down"], q, r, cd)[::2] == ("rate_limited", 60)
    assert notice_problem(["", "Something broke"], q, r, cd) == ("site", "the page says: Something broke", None)
    assert notice_problem(["", "  "], q, r, cd) is None


async def test_tap_bookkeeping_reorders_and_survives_garbage():
    from bpool.studio.tap import Tap, tap_script

    tap = Tap("GenerateContent", "ListModels")
    for junk in (None, 5, {"id": 1}, {"id": "x", "seq": "0"}, {"id": "late", "seq": 3, "event": "data"}):
        tap.on_message(None, junk)
    tap.on_message(None, {"id": "a", "seq": 0, "kind": "GenerateContent", "event": "open", "url": "u"})
    stream = await tap.next_generate(1)
    tap.on_message(None, {"id": "a", "seq": 2, "kind": "GenerateContent", "event": "data", "data": "2"})
    tap.on_message(None, {"id": "a", "seq": 1, "kind": "GenerateContent", "event": "start", "status": 200})
    tap.on_message(None, {"id": "a", "seq": 3, "kind": "GenerateContent", "event": "end"})
    got = [await stream.next(1) for _ in range(3)]
    assert [(p.event, p.status, p.data) for p in got] == \
        [("start", 200, ""), ("data", None, "2"), ("end", None, "")]
    for i, m in enumerate([{"event": "open"}, {"event": "start", "status": 200},
                           {"event": "data", "data": ")]}'\n[[[\"models/m1\",0,0,\"M One\"]]]"},
                           {"event": "end"}]):
        tap.on_message(None, dict(m, id="m", seq=i, kind="ListModels", url="u"))
    assert tap.models_changed.is_set() and "models/m1" in tap.models_body
    tap.on_message(None, {"id": "b", "seq": 0, "kind": "GenerateContent", "event": "open"})
    assert tap.discard_pending() == 1
    tap.on_message(None, {"id": "c", "seq": 0, "kind": "GenerateContent", "event": "open"})
    c = await tap.next_generate(1)
    tap.close()
    assert (await c.next(1)).event == "gone"
    from bpool.studio.tap import TapClosed

    with pytest.raises(TapClosed):
        await tap.next_generate(1)
    script = tap_script("__b", ("GC", "LM"))
    assert script.rstrip().endswith('({"binding": "__b", "methods": ["GC", "LM"], "relay": "", "pollMs": 10});')


def test_browser_proc_unreachable_studio_exits_1_and_leaves_no_browser(sim, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    run_dir = tmp_path / "run"
    env = dict(os.environ, BPOOL_RUN_DIR=str(run_dir), BPOOL_STUDIO_URL=dead_url,
               BPOOL_BROWSER="chromium", BPOOL_NAVIGATION_TIMEOUT_S="10")
    r = subprocess.run([PY, "-m", "bpool.browser_proc", "--profile", str(sim.cookies / "alice.json")],
                       env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=90)
    assert r.returncode == 1, r.stderr
    assert "could not open the studio" in r.stderr and "open page" in r.stderr
    assert "Traceback" not in r.stderr
    assert list((run_dir / "snapshots" / "alice").glob("*open-page.png")), r.stderr
    assert procs.find_tagged(str(run_dir / "browsers" / "alice")) == []
