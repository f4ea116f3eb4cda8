"""Sync with a pool cap (MAX_BROWSER_POOL_SIZE) and with browsers to attach (BPOOL_BROWSER_ENDPOINTS)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest

from bpool.config import REPO_ROOT
from bpool.ops import apply, status
from bpool.ops.members import read_waiting
from bpool.ops.render import SyncSettings

STATE = {"cookies": [{"name": "SID", "value": "secret-value", "domain": "127.0.0.1"}],
         "origins": []}
WS = "ws://127.0.0.1:9222/devtools/browser/aaaa"


def write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(STATE))
    path.chmod(0o600)
    return path


@pytest.fixture
def here(tmp_path: Path) -> Path:
    shutil.copy(REPO_ROOT / "supervisord.conf", tmp_path / "supervisord.conf")
    for name in ("carol", "alice", "bob"):
        write(tmp_path / "cookies" / f"{name}.json")
    return tmp_path


def sync(s: SyncSettings) -> tuple[int, list[str], set[str]]:
    lines: list[str] = []
    code = apply.sync(s, render_only=True, say=lines.append)
    return code, lines, set(apply.read_generated(s.include_dir))


def test_the_cap_starts_that_many_and_lists_the_rest_as_waiting(here: Path, monkeypatch) -> None:
    s = SyncSettings(conf=here / "supervisord.conf", max_pool_size=2)
    code, lines, programs = sync(s)
    assert code == 0
    assert programs == {"browser-alice.conf", "browser-bob.conf"}
    assert "waiting (MAX_BROWSER_POOL_SIZE=2): carol" in lines
    assert read_waiting(s.run_dir) == ["carol"]
    monkeypatch.setenv("BPOOL_RUN_DIR", str(s.run_dir))
    out = io.StringIO()
    status.show(None, "http://127.0.0.1:1/health", False, out)
    assert "waiting for a place (MAX_BROWSER_POOL_SIZE): carol" in out.getvalue()
    # a new account that sorts first does not push out one that already runs
    write(here / "cookies" / "aaron.json")
    code, lines, programs = sync(s)
    assert programs == {"browser-alice.conf", "browser-bob.conf"}
    assert "waiting (MAX_BROWSER_POOL_SIZE=2): aaron, carol" in lines
    # raising the cap starts the waiting ones; 0 means no cap
    code, lines, programs = sync(dataclasses.replace(s, max_pool_size=0))
    assert len(programs) == 4 and not any(line.startswith("waiting") for line in lines)
    assert read_waiting(s.run_dir) == []


def test_the_cap_is_read_from_its_own_name(here: Path) -> None:
    env = {"MAX_BROWSER_POOL_SIZE": "1", "BPOOL_BROWSER_ENDPOINTS": "[]", "BPOOL_SESSION_HOSTS": "0"}
    s = SyncSettings.from_env(here / "supervisord.conf", env)
    assert (s.max_pool_size, s.endpoints) == (1, "[]")
    assert len(sync(s)[2]) == 1


def test_manifest_entries_become_attached_programs(here: Path) -> None:
    outside = write(here / "elsewhere" / "dora.json")
    manifest = [{"cookie_path": str(outside), "ws": WS},
                {"id": "bob", "cookie_path": "cookies/bob.json", "ws": WS + "b"}]
    s = SyncSettings(conf=here / "supervisord.conf", endpoints=json.dumps(manifest))
    code, lines, programs = sync(s)
    assert code == 0
    assert programs == {f"browser-{n}.conf" for n in ("alice", "bob", "carol", "dora")}
    assert "dora attaches to a browser already running (BPOOL_BROWSER_ENDPOINTS)" in lines
    sections = apply.read_generated(s.include_dir)
    endpoints_file = s.run_dir / "endpoints.json"
    for name in ("dora", "bob"):
        assert f'BPOOL_BROWSER_ENDPOINTS="{endpoints_file}"' in sections[f"browser-{name}.conf"]
    assert "BPOOL_BROWSER_ENDPOINTS" not in sections["browser-alice.conf"]
    assert str(outside) in sections["browser-dora.conf"]
    assert WS not in "".join(sections.values())  # the URL controls a browser: only in the 0600 file
    written = json.loads(endpoints_file.read_text())
    assert endpoints_file.stat().st_mode & 0o777 == 0o600
    assert {e["id"]: e["cookie_path"] for e in written} == {
        "dora": str(outside), "bob": str(here / "cookies" / "bob.json")}
    # a new URL restarts that worker only (its section changes); others stay byte for byte
    manifest[0]["ws"] = WS + "-new"
    sync(dataclasses.replace(s, endpoints=json.dumps(manifest)))
    after = apply.read_generated(s.include_dir)
    assert after["browser-dora.conf"] != sections["browser-dora.conf"]
    assert {n: t for n, t in after.items() if n != "browser-dora.conf"} == \
        {n: t for n, t in sections.items() if n != "browser-dora.conf"}
    # without the manifest: dora is gone, bob launches its own browser again
    code, lines, programs = sync(dataclasses.replace(s, endpoints=""))
    assert "browser-dora.conf" not in programs and not endpoints_file.exists()
    assert "BPOOL_BROWSER_ENDPOINTS" not in apply.read_generated(s.include_dir)["browser-bob.conf"]


def test_attached_profiles_count_against_the_cap_and_bad_manifests_are_refused(here: Path) -> None:
    outside = write(here / "elsewhere" / "dora.json")
    s = SyncSettings(conf=here / "supervisord.conf", max_pool_size=3,
                     endpoints=json.dumps([{"cookie_path": str(outside), "ws": WS}]))
    code, lines, programs = sync(s)
    assert programs == {"browser-alice.conf", "browser-bob.conf", "browser-carol.conf"}
    assert "waiting (MAX_BROWSER_POOL_SIZE=3): dora" in lines
    code, lines, _ = sync(dataclasses.replace(s, endpoints="[{"))
    assert code == 1
    assert any(line.startswith("refused BPOOL_BROWSER_ENDPOINTS") and "not valid JSON" in line
               for line in lines)
