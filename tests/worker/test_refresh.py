"""Saving a worker's refreshed login back to its cookie file (bpool.worker.refresh): the file
rules (atomic, 0600, a backup, the profile lock, a swapped-in file left alone, no save without a
session cookie) and, in real Chromium, a cookie the site rotates reaching the file."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path

from aiohttp import web
from playwright.async_api import async_playwright

from bpool.worker import refresh
from bpool.worker.profiles import load_profile
from bpool.worker.refresh import CookieFile, earliest_expiry, profile_lock

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
DAY = 86400.0


def cookie(name: str, value: str, expires: float, domain: str = "127.0.0.1") -> dict:
    return {"name": name, "value": value, "domain": domain, "path": "/", "expires": expires,
            "httpOnly": True, "secure": False, "sameSite": "Lax"}


def state(*cookies: dict) -> dict:
    return {"cookies": list(cookies), "origins": []}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write(path: Path, body: dict) -> None:
    path.write_text(json.dumps(body))
    path.chmod(0o600)


def test_earliest_expiry_is_the_first_dated_session_cookie() -> None:
    s = state(cookie("SID", "a", 5000.0), cookie("__Secure-1PSIDTS", "b", 3000.0),
              cookie("NID", "c", 1000.0),  # not a session cookie
              cookie("HSID", "d", -1))  # lives as long as the browser: no date
    assert earliest_expiry(s) == 3000.0
    assert earliest_expiry(state(cookie("NID", "c", 1000.0))) is None


def test_save_replaces_atomically_keeps_a_backup_and_both_are_private(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    old = state(cookie("SID", "old", 1000.0))
    write(path, old)
    f = CookieFile(path)
    new = state(cookie("SID", "new", 2000.0))
    assert f.save(new) == "saved"
    assert json.loads(path.read_text()) == new
    assert json.loads((tmp_path / "alice.json.bak").read_text()) == old
    assert mode(path) == mode(tmp_path / "alice.json.bak") == 0o600
    newer = state(cookie("SID", "newer", 3000.0))
    assert f.save(newer) == "saved"  # its own write does not count as a replacement
    assert json.loads((tmp_path / "alice.json.bak").read_text()) == new
    leftovers = {p.name for p in tmp_path.iterdir()} - {"alice.json", "alice.json.bak"}
    assert leftovers == set()  # no temporary or lock file left beside the profile


def test_no_save_while_the_lock_is_held_or_after_the_file_was_swapped(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    write(path, state(cookie("SID", "old", 1000.0)))
    f = CookieFile(path)
    with profile_lock(path, wait=True) as got:  # what scripts/swap-cookie holds
        assert got
        assert f.save(state(cookie("SID", "late", 2000.0))) == "busy"
    assert json.loads(path.read_text())["cookies"][0]["value"] == "old"
    swapped = tmp_path / "fresh.json"
    write(swapped, state(cookie("SID", "swapped-in", 9000.0)))
    os.replace(swapped, path)
    assert f.save(state(cookie("SID", "stale-login", 2000.0))) == "replaced"
    assert json.loads(path.read_text())["cookies"][0]["value"] == "swapped-in"
    assert not (tmp_path / "alice.json.bak").exists()


def test_a_file_swapped_or_removed_before_the_worker_got_going_is_never_written(
        tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    write(path, state(cookie("SID", "loaded", 1000.0)))
    loaded = load_profile(path).state
    write(path, state(cookie("SID", "swapped-in", 9000.0)))  # while the browser was starting
    assert CookieFile(path, loaded).save(state(cookie("SID", "old-login", 2000.0))) == "replaced"
    assert json.loads(path.read_text())["cookies"][0]["value"] == "swapped-in"
    path.unlink()  # the profile was removed: saving must not bring it back
    assert CookieFile(path).save(state(cookie("SID", "old-login", 2000.0))) == "replaced"
    assert not path.exists()


def test_a_state_without_session_cookies_never_overwrites_the_file(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    write(path, state(cookie("SID", "good", 1000.0)))
    assert CookieFile(path).save(state(cookie("NID", "x", 2000.0))) == "no_session"
    assert json.loads(path.read_text())["cookies"][0]["value"] == "good"


class Backend:
    unusable = None
    cookie_expires_at: float | None = None


async def poll(check, what: str, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def test_a_cookie_the_site_rotates_reaches_the_file_periodically_and_at_close(
        tmp_path: Path, monkeypatch) -> None:
    """The site sets a new SIDCC on each visit, as Google does; the keeper's saves carry it."""
    now = time.time()
    rotated: list[str] = []

    async def visit(request: web.Request) -> web.Response:
        resp = web.Response(text="<title>ok</title>", content_type="text/html")
        rotated.append(f"rotated-{len(rotated)}")
        resp.set_cookie("SIDCC", rotated[-1], max_age=int(30 * DAY), path="/")
        return resp

    app = web.Application()
    app.router.add_get("/", visit)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    path = tmp_path / "alice.json"
    first = state(cookie("SID", "sid", now + 400 * DAY), cookie("SIDCC", "old", now + 2 * DAY))
    write(path, first)
    monkeypatch.setenv("BPOOL_COOKIE_REFRESH_S", "0.3")
    home = tmp_path / "home"
    home.mkdir()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                               args=CHROMIUM_ARGS,
                                               env={**os.environ, "HOME": str(home)})
            try:
                ctx = await browser.new_context(storage_state=first)
                backend, profile = Backend(), load_profile(path)
                keeper = refresh.start(ctx, profile, backend)
                assert backend.cookie_expires_at == now + 2 * DAY  # from the loaded file
                page = await ctx.new_page()
                await page.goto(f"http://127.0.0.1:{port}/")

                def saved_value() -> str | None:
                    body = json.loads(path.read_text())
                    v = next(c["value"] for c in body["cookies"] if c["name"] == "SIDCC")
                    return v if v != "old" else None

                assert await poll(saved_value, "the periodic save") == rotated[-1]
                expiry = backend.cookie_expires_at
                assert expiry is not None and expiry > now + 29 * DAY  # the rotated cookie's date
                await page.goto(f"http://127.0.0.1:{port}/")  # rotates once more
                await keeper.close(save=True)
                assert saved_value() == rotated[-1] == "rotated-1"
                assert mode(path) == 0o600
                assert json.loads((tmp_path / "alice.json.bak").read_text())["cookies"]
            finally:
                await browser.close()
    finally:
        await runner.cleanup()


async def test_a_new_expiry_reaches_the_broker_without_registering_again(tmp_path: Path) -> None:
    """Ready carries the expiry the worker starts with; a later one (a saved refresh) follows
    as ProfileInfo on the same registration."""
    import zmq
    import zmq.asyncio

    from bpool import protocol as p
    from bpool.worker.link import LinkSettings, run_worker

    class Quiet:
        profile_id, engine, account, models, unusable = "alice", "test", "", (), None
        cookie_expires_at: float | None = 1000.0

        async def run(self, job):  # never given a job here
            raise AssertionError("no job expected")

        async def reset(self) -> None:
            return None

    endpoint = f"ipc://{tmp_path}/w.sock"
    sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    enc, dec = p.encoder(), p.decoder(p.WorkerToBroker)

    async def next_message(kind: type) -> tuple[bytes, object]:
        while True:
            ident, frame = await asyncio.wait_for(sock.recv_multipart(), 10)
            msg = dec.decode(frame)
            if isinstance(msg, kind):
                return ident, msg
            assert isinstance(msg, (p.Heartbeat, p.Ready)), msg

    backend, stop = Quiet(), asyncio.Event()
    settings = LinkSettings(endpoint=endpoint, heartbeat_interval_s=0.1, heartbeat_liveness=50,
                            drain_timeout_s=1.0)
    task = asyncio.create_task(run_worker(backend, settings, stop))
    try:
        ident, ready = await next_message(p.Ready)
        assert ready.cookie_expires_at == 1000.0
        await sock.send_multipart([ident, enc.encode(p.Heartbeat())])  # registered
        backend.cookie_expires_at = 2000.0
        same, info = await next_message(p.ProfileInfo)
        assert (same, info) == (ident, p.ProfileInfo(2000.0))
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        sock.close(linger=0)


async def test_a_browser_worker_saves_its_login_when_it_stops_cleanly(tmp_path: Path) -> None:
    """The whole worker (python -m bpool.browser_proc, real Chromium) against the simulator:
    Ready names the file's first session-cookie expiry, and SIGTERM leaves the browser's
    login in the file, the previous one in NAME.json.bak."""
    import signal
    import subprocess
    import sys

    import zmq
    import zmq.asyncio

    from bpool import config, protocol as p
    from bpool.config import REPO_ROOT
    from bpool.sim import cli as sim_cli
    from bpool.sim.knobs import Knobs
    from bpool.sim.server import ThreadedSim
    from bpool.sim.settings import SimSettings
    from bpool.worker import procs

    cookies, run_dir = tmp_path / "cookies", tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    assert sim_cli.main(["make-profiles", "--dir", str(tmp_path / "sim"), "--out", str(cookies),
                         "--names", "alice"]) == 0
    path = cookies / "alice.json"
    before = json.loads(path.read_text())
    quiet = Knobs().updated({"welcome_dialog": False, "cookie_bar": False, "got_it": False})
    sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(config.worker_endpoint(run_dir))
    dec = p.decoder(p.WorkerToBroker)
    with ThreadedSim(SimSettings(port=0, dir=tmp_path / "sim", knobs=quiet)) as sim:
        env = {**os.environ, "BPOOL_RUN_DIR": str(run_dir), "BPOOL_STUDIO_URL": sim.url,
               "BPOOL_BROWSER": "chromium", "BPOOL_HEARTBEAT_INTERVAL_S": "0.5",
               "BPOOL_HEARTBEAT_LIVENESS": "100", "HOME": str(tmp_path)}
        proc = subprocess.Popen([sys.executable, "-m", "bpool.browser_proc", "--profile", str(path)],
                                env=env, cwd=REPO_ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async def next_message(kind: type, timeout_s: float):
                deadline = time.monotonic() + timeout_s
                while True:
                    left = deadline - time.monotonic()
                    assert left > 0, f"no {kind.__name__} from the worker in time"
                    _, frame = await asyncio.wait_for(sock.recv_multipart(), left)
                    if isinstance(msg := dec.decode(frame), kind):
                        return msg

            ready = await next_message(p.Ready, 120)
            assert ready.cookie_expires_at == earliest_expiry(before)
            proc.send_signal(signal.SIGTERM)
            await next_message(p.Goodbye, 60)
            assert await asyncio.wait_for(asyncio.to_thread(proc.wait), 60) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            sock.close(linger=0)
            for tag_dir in (run_dir / "browsers").glob("*"):
                procs.kill_tagged(str(tag_dir))
    after = json.loads(path.read_text())
    assert json.loads((cookies / "alice.json.bak").read_text()) == before
    assert mode(path) == mode(cookies / "alice.json.bak") == 0o600
    sid = {c["name"]: c["value"] for c in after["cookies"]}["SID"]
    assert sid == {c["name"]: c["value"] for c in before["cookies"]}["SID"]
    # What only the running browser had: the page's own storage, saved with the login.
    assert any(o["localStorage"] for o in after["origins"])
