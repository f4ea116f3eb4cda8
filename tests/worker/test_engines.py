"""Browser choice (without downloads), real Chromium launch, and that no browser outlives us."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpool.config import REPO_ROOT
from bpool.worker import engines
from bpool.worker import procs
from bpool.worker.engines import BrowserDirs, EngineError, EngineSettings, choose_engine

CHROMIUM = Path(engines.DEFAULT_CHROMIUM)
needs_chromium = pytest.mark.chromium


def fake_camoufox(root: Path, layout: str = "versioned") -> Path:
    """An install dir shaped like camoufox's, with a stand-in executable."""
    folder = root / "browsers" / "official" / "156.0.1-beta.36" if layout == "versioned" else root
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "version.json").write_text(json.dumps({"version": "156.0.1", "build": "beta.36"}))
    exe = folder / "camoufox-bin"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def no_network(monkeypatch):
    """Detection must not fetch anything: make every camoufox download path explode."""
    import camoufox.pkgman as pkgman
    import requests

    def boom(*a, **k):
        raise AssertionError("engine detection tried to download")

    monkeypatch.setattr(pkgman, "webdl", boom)
    monkeypatch.setattr(pkgman.CamoufoxFetcher, "install", boom)
    monkeypatch.setattr(requests, "get", boom)


def test_settings_from_env(monkeypatch):
    for k in ("BPOOL_BROWSER", "BPOOL_CHROMIUM_PATH", "BPOOL_HEADLESS"):
        monkeypatch.delenv(k, raising=False)
    s = EngineSettings.from_env()
    assert (s.browser, s.chromium_path, s.headless) == ("auto", CHROMIUM, True)
    monkeypatch.setenv("BPOOL_BROWSER", " Chromium ")
    monkeypatch.setenv("BPOOL_HEADLESS", "0")
    monkeypatch.setenv("BPOOL_CHROMIUM_PATH", "/opt/chrome")
    s = EngineSettings.from_env()
    assert (s.browser, s.chromium_path, s.headless) == ("chromium", Path("/opt/chrome"), False)


@needs_chromium
def test_auto_picks_chromium_when_camoufox_has_no_browser(no_network, monkeypatch, tmp_path):
    monkeypatch.setattr(engines, "camoufox_install_dir", lambda: tmp_path / "empty")
    choice = choose_engine(EngineSettings())
    assert choice.engine == "chromium" and choice.executable == CHROMIUM
    assert "auto" in choice.reason and "no Camoufox" in choice.reason


@needs_chromium
def test_auto_with_the_real_camoufox_install_dir_does_not_download(no_network):
    # This machine has the camoufox package but never fetched its browser.
    assert engines.find_camoufox(engines.camoufox_install_dir()) is None
    assert choose_engine(EngineSettings()).engine == "chromium"


@pytest.mark.parametrize("layout", ["versioned", "flat"])
def test_fake_camoufox_install_makes_auto_pick_camoufox(no_network, monkeypatch, tmp_path, layout):
    exe = fake_camoufox(tmp_path, layout)
    monkeypatch.setattr(engines, "camoufox_install_dir", lambda: tmp_path)
    choice = choose_engine(EngineSettings(chromium_path=tmp_path / "no-chromium"))
    assert (choice.engine, choice.executable) == ("camoufox", exe)
    assert choose_engine(EngineSettings(browser="camoufox")).executable == exe
    # an explicit chromium choice wins over an installed Camoufox
    with pytest.raises(EngineError, match="Chromium not found"):
        choose_engine(EngineSettings(browser="chromium", chromium_path=tmp_path / "nope"))


def test_active_version_is_preferred_and_incomplete_installs_ignored(monkeypatch, tmp_path):
    exe = fake_camoufox(tmp_path)
    other = tmp_path / "browsers" / "official" / "999.0-alpha.1"
    other.mkdir(parents=True)
    (other / "camoufox-bin").write_text("")  # no version.json, not executable: incomplete
    assert engines.find_camoufox(tmp_path) == exe
    newer = tmp_path / "browsers" / "official" / "200.0-beta.1"
    newer.mkdir(parents=True)
    (newer / "version.json").write_text("{}")
    (newer / "camoufox-bin").write_text("#!/bin/sh\n")
    (newer / "camoufox-bin").chmod(0o755)
    assert engines.find_camoufox(tmp_path) == newer / "camoufox-bin"
    (tmp_path / "config.json").write_text(
        json.dumps({"active_version": "browsers/official/156.0.1-beta.36"}))
    assert engines.find_camoufox(tmp_path) == exe
    assert engines.find_camoufox(tmp_path / "missing") is None
    assert engines.find_camoufox(None) is None


def test_camoufox_requested_but_missing(no_network, monkeypatch, tmp_path):
    monkeypatch.setattr(engines, "camoufox_install_dir", lambda: tmp_path)
    with pytest.raises(EngineError, match="camoufox fetch") as ei:
        choose_engine(EngineSettings(browser="camoufox"))
    assert str(tmp_path) in str(ei.value)


def test_missing_chromium_is_a_clear_error(no_network, monkeypatch, tmp_path):
    monkeypatch.setattr(engines, "camoufox_install_dir", lambda: tmp_path)
    missing = tmp_path / "bin" / "chromium"
    with pytest.raises(EngineError) as ei:
        choose_engine(EngineSettings(chromium_path=missing))
    assert str(missing) in str(ei.value) and "BPOOL_CHROMIUM_PATH" in str(ei.value)
    not_exec = tmp_path / "chromium"
    not_exec.write_text("")
    with pytest.raises(EngineError, match="Chromium not found"):
        choose_engine(EngineSettings(chromium_path=not_exec))
    with pytest.raises(EngineError, match="not one of"):
        choose_engine(EngineSettings(browser="firefox"))


# ---------------------------------------------------------------------------- real processes


async def wait_until(cond, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def spawn_tagged_sleeper(tag: str) -> subprocess.Popen:
    env = dict(os.environ, **{procs.OWNER_ENV: tag})
    return subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)


@needs_chromium
async def test_launch_close_leaves_nothing_and_records_groups(tmp_path):
    dirs = BrowserDirs.for_profile(tmp_path, "alice")
    choice = engines.EngineChoice("chromium", CHROMIUM, "test")
    browser = await engines.launch(choice, EngineSettings(), dirs)
    try:
        pids = procs.find_tagged(dirs.tag)
        assert len(pids) >= 2  # the driver and at least the browser
        record = json.loads((dirs.root / "browser.pid").read_text())
        assert record["worker_pid"] == os.getpid() and record["pgids"]
        assert os.getpgrp() not in record["pgids"]
        assert browser.dirs.user_data.is_dir() and (dirs.root.stat().st_mode & 0o077) == 0
        assert (browser.dirs.user_data.stat().st_mode & 0o077) == 0
        page = await browser.context.new_page()
        await page.set_content("<title>t</title><p>x</p>")
        assert "HeadlessChrome" not in await page.evaluate("navigator.userAgent")
        assert await page.evaluate("1 + 1") == 2
    finally:
        await browser.close()
    await wait_until(lambda: not procs.find_tagged(dirs.tag))
    assert browser.gone.is_set()
    assert not (dirs.root / "browser.pid").exists()
    # the lock was released: a new worker can take the profile
    lock = procs.ProfileLock(dirs.root)
    assert lock.acquire()
    lock.release()


@needs_chromium
async def test_second_worker_for_the_same_profile_is_refused(tmp_path):
    dirs = BrowserDirs.for_profile(tmp_path, "bob")
    holder = procs.ProfileLock(dirs.root)
    assert holder.acquire()
    try:
        with pytest.raises(EngineError, match=f"pid {os.getpid()}"):
            await engines.launch(engines.EngineChoice("chromium", CHROMIUM, "t"),
                                 EngineSettings(), dirs)
    finally:
        holder.release()


@needs_chromium
async def test_launch_reaps_stale_processes_of_the_same_profile_only(tmp_path):
    dirs = BrowserDirs.for_profile(tmp_path, "carol")
    other = BrowserDirs.for_profile(tmp_path, "dave")
    stale = spawn_tagged_sleeper(dirs.tag)
    bystander = spawn_tagged_sleeper(other.tag)
    try:
        await wait_until(lambda: stale.pid in procs.find_tagged(dirs.tag))
        browser = await engines.launch(engines.EngineChoice("chromium", CHROMIUM, "t"),
                                       EngineSettings(), dirs)
        try:
            await wait_until(lambda: stale.poll() is not None)
            assert stale.returncode == -signal.SIGKILL
            assert bystander.poll() is None
        finally:
            await browser.close()
    finally:
        for p in (stale, bystander):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


async def test_a_cancelled_driver_start_leaves_no_driver(tmp_path):
    """Cancelled between spawning its driver and the driver's hello, async_playwright().start()
    would leave the driver running on this loop; _start_playwright stops it."""
    tag = f"cancelled-start-{tmp_path.name}"
    start = asyncio.create_task(engines._start_playwright(tag))
    try:
        await wait_until(lambda: procs.find_tagged(tag) or start.done(), timeout_s=60)
        assert not start.done(), "the driver answered before the test could cancel its start"
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        await wait_until(lambda: not procs.find_tagged(tag))  # it exited: nothing killed it
    finally:
        if start.done() and not start.cancelled() and start.exception() is None:
            await start.result().stop()
        procs.kill_tagged(tag)


def test_failed_launch_cleans_up_and_releases_the_lock(tmp_path):
    async def go():
        dirs = BrowserDirs.for_profile(tmp_path, "erin")
        bogus = tmp_path / "not-a-browser"
        bogus.write_text("#!/bin/sh\nexit 3\n")
        bogus.chmod(0o755)
        with pytest.raises(Exception):
            await engines.launch(engines.EngineChoice("chromium", bogus, "t"),
                                 EngineSettings(launch_timeout_s=20), dirs)
        assert procs.find_tagged(dirs.tag) == []
        lock = procs.ProfileLock(dirs.root)
        assert lock.acquire()
        lock.release()

    asyncio.run(go())


CHILD = """
import asyncio, sys
from pathlib import Path
from bpool.worker import engines
async def main():
    dirs = engines.BrowserDirs.for_profile(Path(sys.argv[1]), "frank")
    b = await engines.launch(engines.EngineChoice("chromium", engines.Path(engines.DEFAULT_CHROMIUM), "t"),
                             engines.EngineSettings(), dirs)
    page = await b.context.new_page()
    await page.set_content("<p>up</p>")
    print("ready", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


@needs_chromium
async def test_browser_of_a_killed_worker_is_gone_after_the_next_start(tmp_path):
    dirs = BrowserDirs.for_profile(tmp_path, "frank")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 90)
        assert line.strip() == "ready"
        browser_pids = procs.find_tagged(dirs.tag)
        assert browser_pids
        os.kill(child.pid, signal.SIGKILL)  # no cleanup code of the worker runs
        child.wait()
        # whatever the orphaned driver did, the next worker for the profile reaps the rest
        browser = await engines.launch(engines.EngineChoice("chromium", CHROMIUM, "t"),
                                       EngineSettings(), dirs)
        try:
            alive = set(procs.find_tagged(dirs.tag))
            assert not alive & set(browser_pids)
        finally:
            await browser.close()
        await wait_until(lambda: not procs.find_tagged(dirs.tag))
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        child.stdout.close()
        procs.kill_tagged(dirs.tag)


# ---------------------------------------------------------------------------- Camoufox, as units
# Camoufox cannot run here: what is checked is what bpool hands it (launch options, scripts).


def test_camoufox_is_launched_with_main_world_eval(no_network, monkeypatch, tmp_path):
    """launch() passes camoufox_options to AsyncNewBrowser; the fake stops it right there."""
    import inspect

    import camoufox.async_api
    from camoufox.utils import launch_options

    captured: dict = {}

    class Stop(Exception):
        pass

    async def fake_new_browser(pw, **kwargs):
        captured.update(kwargs)
        raise Stop()

    monkeypatch.setattr(camoufox.async_api, "AsyncNewBrowser", fake_new_browser)
    exe = fake_camoufox(tmp_path / "cf")
    dirs = BrowserDirs.for_profile(tmp_path / "run", "dora")
    with pytest.raises(Stop):  # as the worker's own user: the executable is camoufox's own
        asyncio.run(engines.launch(engines.EngineChoice("camoufox", exe, "t"),
                                   EngineSettings(headless=True, browser_user=""), dirs))
    assert captured["main_world_eval"] is True
    assert captured["persistent_context"] is True
    assert captured["user_data_dir"] == str(dirs.user_data)
    assert captured["executable_path"] == str(exe)
    assert captured["exclude_addons"]  # every default add-on: they would be downloaded
    assert captured["headless"] is True and captured["env"][procs.OWNER_ENV] == dirs.tag
    # every key is one camoufox's launch_options (or Playwright's launch) accepts by name
    named = set(inspect.signature(launch_options).parameters)
    playwright_launch = {"headless", "env", "handle_sigint", "handle_sigterm", "handle_sighup",
                         "timeout", "persistent_context", "user_data_dir"}
    assert set(captured) <= named | playwright_launch
    assert not procs.find_tagged(dirs.tag)  # the half-launch left nothing behind
    lock = procs.ProfileLock(dirs.root)
    assert lock.acquire()
    lock.release()


def test_main_world_scripts_are_marked_for_camoufox_only():
    from bpool.studio.tap import TAP_JS, tap_scripts

    assert engines.main_world_prefix("camoufox") == "mw:"
    assert engines.main_world_prefix("chromium") == ""
    methods = ("GenerateContent", "ListModels")
    chromium = tap_scripts("__b", methods, engines.main_world_prefix("chromium"))
    assert len(chromium) == 1 and not chromium[0].startswith("mw:")
    assert '"relay": ""' in chromium[0]  # it calls the binding itself
    relay, tap = tap_scripts("__b", methods, engines.main_world_prefix("camoufox"))
    # The tap goes to the page's world, prefix first (Playwright wraps the whole body; Camoufox
    # recognises the prefix wrapped or bare); the relay stays in the automation's world.
    assert tap.startswith("mw:") and tap[3:].startswith(TAP_JS.read_text()[:200])
    assert not relay.startswith("mw:")
    event = json.loads(tap[tap.rindex("({") + 1:tap.rindex(");")])["relay"]
    assert event.startswith("bpool-") and f'"event": "{event}"' in relay
    assert '"binding": "__b"' in relay
    # a fresh event name per process: a page cannot know it in advance
    assert tap_scripts("__b", methods, "mw:")[1] != tap
