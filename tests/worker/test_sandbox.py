"""Browsers as an unprivileged user, with Chromium's sandbox, and a scrubbed environment."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import time
from pathlib import Path

import pytest

from bpool.worker import engines, procs, sandbox
from bpool.worker.engines import BrowserDirs, EngineError, EngineSettings

CHROMIUM = Path(engines.DEFAULT_CHROMIUM)
USER = "bpool-browser"


def _user_exists() -> bool:
    try:
        pwd.getpwnam(USER)
        return True
    except KeyError:
        return False


as_root_with_user = pytest.mark.skipif(
    not (CHROMIUM.exists() and os.geteuid() == 0 and _user_exists()),
    reason="needs root, Chromium and the bpool-browser user (scripts/bootstrap)")


def test_browser_env_keeps_only_what_a_browser_needs(tmp_path):
    env = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC", "DISPLAY": ":1",
           "BPOOL_API_KEYS": "sk-secret", "BPOOL_API_KEYS_FILE": "/k", "AWS_SECRET_ACCESS_KEY": "x",
           "BPOOL_CURVE_CLIENT_KEY": "/c", "HOME": "/root", "PYTHONPATH": "/x"}
    out = sandbox.browser_env(tmp_path / "home", "TAG", "t1", env)
    assert out == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
                   "DISPLAY": ":1", "HOME": str(tmp_path / "home"),
                   "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
                   "XDG_CACHE_HOME": str(tmp_path / "home" / ".cache"), "TAG": "t1"}
    assert sandbox.browser_env(tmp_path, "TAG", "t", {})["PATH"] == sandbox.DEFAULT_PATH


def test_who_the_browser_runs_as(monkeypatch):
    assert sandbox.resolve_user("") is None  # switched off
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert sandbox.resolve_user(USER) is None  # not root: cannot switch, already unprivileged
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert sandbox.resolve_user("root") is None
    with pytest.raises(sandbox.SandboxError, match="scripts/bootstrap"):
        sandbox.resolve_user("no-such-user-bpool")


def test_a_missing_browser_user_refuses_the_launch(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(EngineError, match="BPOOL_BROWSER_USER=no-such-user-bpool"):
        asyncio.run(engines.launch(engines.EngineChoice("chromium", CHROMIUM, "t"),
                                   EngineSettings(browser_user="no-such-user-bpool"),
                                   BrowserDirs.for_profile(tmp_path, "x")))
    assert not (tmp_path / "browsers" / "x" / "worker.lock").exists()


def test_the_wrapper_execs_the_browser_as_the_user(tmp_path):
    user = sandbox.BrowserUser("u", 4242, 4343, tmp_path)
    path = sandbox.write_wrapper(tmp_path / "launch", user, Path("/opt/my chromium"))
    text = path.read_text()
    assert text.startswith("#!/bin/sh\nexec ")
    assert "--reuid=4242 --regid=4343 --clear-groups -- '/opt/my chromium' \"$@\"" in text
    assert path.stat().st_mode & 0o777 == 0o700


def test_no_sandbox_is_said_once(monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "userns_works", lambda uid: False)
    monkeypatch.setattr(sandbox, "_warned", [])
    user = sandbox.BrowserUser("u", 4242, 4343, Path("/nonexistent"))
    with caplog.at_level(logging.WARNING, "bpool.sandbox"):
        assert sandbox.use_sandbox(user) is False
        assert sandbox.use_sandbox(user) is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "--no-sandbox" in lines[0] and "user namespaces" in lines[0]
    monkeypatch.setattr(sandbox, "userns_works", lambda uid: True)
    assert sandbox.use_sandbox(user) is True


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _browser_tree(browser: engines.LaunchedBrowser) -> list[int]:
    """Every process of the browser: the tagged ones but the driver (which is the worker's own
    child), and everything in the process groups they lead (renderers, zygotes)."""
    own = os.getpgrp()
    tagged = [p for p in procs.find_tagged(browser.dirs.tag) if procs.pgid_of(p) != own]
    groups = {procs.pgid_of(p) for p in tagged}
    members = [int(n) for n in os.listdir("/proc") if n.isdigit()
               and procs.alive(int(n)) and procs.pgid_of(int(n)) in groups]
    return sorted(set(tagged) | set(members))


async def _wait_gone(tag: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while [p for p in procs.find_tagged(tag) if procs.alive(p)]:
        assert time.monotonic() < deadline, "browser processes outlived close()"
        await asyncio.sleep(0.05)


@as_root_with_user
async def test_root_worker_runs_its_browser_unprivileged_sandboxed_and_without_secrets(
        tmp_path, monkeypatch):
    monkeypatch.setenv("BPOOL_API_KEYS", "sk-must-not-reach-the-browser")
    monkeypatch.setenv("BPOOL_CURVE_CLIENT_KEY", "/must/not/either")
    user = pwd.getpwnam(USER)
    dirs = BrowserDirs.for_profile(tmp_path / "run", "alice")
    browser = await engines.launch(engines.EngineChoice("chromium", CHROMIUM, "t"),
                                   EngineSettings(), dirs)
    try:
        page = await browser.context.new_page()
        await page.set_content("<p>up</p>")
        assert await page.evaluate("1 + 1") == 2
        tree = _browser_tree(browser)
        assert len(tree) >= 3  # the browser, its zygotes and a renderer at least
        for pid in tree:
            uids = _status(pid)["Uid"].split()
            assert set(uids) == {str(user.pw_uid)}, (pid, uids)
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
            assert b"BPOOL_API_KEYS" not in env and b"BPOOL_CURVE" not in env
        data = browser.dirs.data
        assert data is not None and data.is_relative_to(Path(user.pw_dir))
        assert browser.dirs.user_data.stat().st_uid == user.pw_uid
        main = min(tree)
        with open(f"/proc/{main}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert (b"--no-sandbox" in argv) == (not sandbox.userns_works(user.pw_uid))
        # the worker itself stays root: it still reads root's 0600 files
        assert os.geteuid() == 0
    finally:
        await browser.close()
    await _wait_gone(dirs.tag)
    assert not browser.dirs.data.exists()  # its copy of the session went with it


@as_root_with_user
async def test_without_user_namespaces_it_falls_back_to_no_sandbox(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "userns_works", lambda uid: False)
    dirs = BrowserDirs.for_profile(tmp_path / "run", "bob")
    browser = await engines.launch(engines.EngineChoice("chromium", CHROMIUM, "t"),
                                   EngineSettings(chromium_args="--lang=de-DE '--window-name=a b'"),
                                   dirs)
    try:
        page = await browser.context.new_page()
        await page.set_content("<p>up</p>")
        main = min(_browser_tree(browser))
        with open(f"/proc/{main}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"--no-sandbox" in argv
        assert b"--lang=de-DE" in argv and b"--window-name=a b" in argv  # BPOOL_CHROMIUM_ARGS
    finally:
        browser.kill()  # the hard path reaps across the uid change too
    await _wait_gone(dirs.tag)


@as_root_with_user
def test_removing_a_profile_removes_its_browser_data_in_the_users_home(tmp_path, monkeypatch):
    from bpool.ops import apply

    monkeypatch.delenv("BPOOL_BROWSER_USER", raising=False)
    user = sandbox.resolve_user(USER)
    run = tmp_path / "run"
    data = BrowserDirs.for_profile(run, "zed").for_user(user).data
    (data / "user-data").mkdir(parents=True)
    keep = BrowserDirs.for_profile(run, "amy").for_user(user).data
    keep.mkdir(parents=True)
    try:
        apply.remove_profile_data(run, "browser-zed")
        assert not data.exists() and keep.exists()
    finally:
        import shutil

        shutil.rmtree(user.data_root(run), ignore_errors=True)


@as_root_with_user
def test_folders_of_pools_that_are_gone_are_pruned(tmp_path):
    user = sandbox.resolve_user(USER)
    gone, alive = tmp_path / "gone-run", tmp_path / "live-run"
    gone.mkdir()
    alive.mkdir()
    try:
        stale = sandbox.claim_pool_folder(user, gone)
        (stale / "ghost" / "user-data").mkdir(parents=True)
        gone.rmdir()  # the pool's run directory is deleted while its worker is killed
        mine = sandbox.claim_pool_folder(user, alive)
        assert not stale.exists()
        assert (mine / sandbox.RUN_DIR_MARK).read_text() == str(alive.resolve())
        assert mine.stat().st_uid == user.uid and mine.stat().st_mode & 0o777 == 0o700
    finally:
        import shutil

        for run in (gone, alive):
            shutil.rmtree(user.data_root(run), ignore_errors=True)
