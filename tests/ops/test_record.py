"""The pool's record (run/pool.json), the demo-mode rule, the front's mode file and the joined
profile states, without a running supervisord."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from bpool.config import REPO_ROOT
from bpool.ops import apply, lifeline, record, render, target, wait

STATE = {"cookies": [{"name": "SID", "value": "secret-value", "domain": "127.0.0.1"}],
         "origins": []}


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    here = tmp_path / "co"
    here.mkdir()
    shutil.copy(REPO_ROOT / "supervisord.conf", here / "supervisord.conf")
    (here / "cookies").mkdir()
    for k in record.RECORDED + ("BPOOL_API_KEYS", "BPOOL_SUPERVISORD_CONF"):
        monkeypatch.delenv(k, raising=False)
    return here


def test_the_record_keeps_settings_and_never_key_values(checkout: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPOOL_PORT", "2049")
    monkeypatch.setenv("BPOOL_DRAIN_TIMEOUT_S", "20")
    monkeypatch.setenv("BPOOL_API_KEYS", "sk-never-written")
    t = target.resolve(checkout / "supervisord.conf", starting=True)
    assert t.settings.drain_timeout_s == 20
    apply.sync(t.settings, render_only=True, say=lambda _: None, rec=t.rec)
    path = checkout / "run" / "pool.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "sk-never-written" not in path.read_text()
    assert json.loads(path.read_text())["api_keys"] == "env"

    # A later shell without those settings, or with others: the record wins, and says so.
    monkeypatch.delenv("BPOOL_PORT")
    monkeypatch.setenv("BPOOL_DRAIN_TIMEOUT_S", "30")
    said: list[str] = []
    later = target.resolve(checkout / "supervisord.conf", say=said.append)
    assert later.settings.drain_timeout_s == 20
    assert later.health_url().endswith(":2049/health")
    assert len(said) == 1 and "ignoring BPOOL_DRAIN_TIMEOUT_S=30" in said[0]
    assert "uses 20" in said[0]


def test_demo_mode_only_until_a_real_profile_was_seen(checkout: Path) -> None:
    s = render.SyncSettings(conf=checkout / "supervisord.conf")
    check = apply.check_profile
    assert render.discover(s, check).demo
    (checkout / "cookies" / "alice.json").write_text(json.dumps(STATE))
    found = render.discover(s, check)
    assert not found.demo and found.mode == "accounts"
    (checkout / "cookies" / "alice.json").unlink()
    seen = render.SyncSettings(conf=s.conf, real_profiles_seen=True)
    gone = render.discover(seen, check)
    assert not gone.demo and gone.profiles == [] and gone.mode == "none"
    chosen = render.SyncSettings(conf=s.conf, real_profiles_seen=True, simulator="on")
    assert render.discover(chosen, check).mode == "demo"


def test_sync_records_the_mode_and_tells_the_front(checkout: Path) -> None:
    t = target.resolve(checkout / "supervisord.conf", starting=True)
    (checkout / "cookies" / "alice.json").write_text(json.dumps(STATE))
    lines: list[str] = []
    apply.sync(t.settings, render_only=True, say=lines.append, rec=t.rec)
    front_env = (checkout / "run" / "front.env").read_text()
    assert front_env == "BPOOL_POOL_MODE=accounts\n"
    rec = record.load(checkout / "run")
    assert rec is not None and rec.real_profiles_seen and rec.mode == "accounts"
    assert lifeline.read_env_file(str(checkout / "run" / "front.env")) == {
        "BPOOL_POOL_MODE": "accounts"}
    assert lifeline.read_env_file(str(checkout / "missing")) == {}


def test_lifeline_env_file_cannot_add_secrets(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("BPOOL_POOL_MODE=demo\nBPOOL_API_KEYS=x\nPATH=/evil\n")
    assert lifeline.read_env_file(str(f)) == {"BPOOL_POOL_MODE": "demo"}
    keep, cmd, files = lifeline.parse(["--keep", "A", "--env-file", str(f), "--", "true"])
    assert keep == {"A"} and cmd == ["true"] and files == [str(f)]


def test_profile_states_join_supervisord_and_the_broker() -> None:
    running = {"statename": "RUNNING", "pid": 42, "start": 1000.0}
    cooling = {"profile_id": "a", "pid": 42, "state": "cooling", "account": "a@x",
               "cooldown_remaining_s": 120.4, "last_error": "rate_limited: slow down"}
    state, detail = wait.describe("a", running, [cooling], "run/log/browser-a.log", now=1100)
    assert state == "cooling" and "120 s left" in detail and "rate_limited" in detail
    state, detail = wait.describe("a", running, [], "run/log/browser-a.log", now=1100)
    assert state == "unregistered" and "run/log/browser-a.log" in detail
    state, _ = wait.describe("a", running, [], "L", now=1005)
    assert state == "starting"
    stale = dict(cooling, pid=41)  # the worker supervisord replaced
    assert wait.describe("a", running, [stale], "L", now=1100)[0] == "unregistered"
    state, detail = wait.describe("a", {"statename": "FATAL", "spawnerr": "Exited too quickly"},
                                  None, "L")
    assert state == "fatal" and "Exited too quickly" in detail


def test_a_timed_out_wait_names_the_log() -> None:
    t = [0.0]
    v = wait.wait("a", 1.0, fetch=lambda: [], info=lambda: {"statename": "RUNNING", "pid": 5},
                  clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s),
                  log="run/log/browser-a.log")
    assert not v.ok and "timed out" in v.message and "run/log/browser-a.log" in v.message
