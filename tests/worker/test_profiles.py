"""Profile files: validation, clear errors without cookie values, permissions warning, CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpool.config import REPO_ROOT
from bpool.worker.profiles import ProfileError, load_profile, main

SECRET = "s3cr3t-cookie-value-7f1e"


def state(**over) -> dict:
    s = {
        "cookies": [
            {"name": "SID", "value": SECRET, "domain": ".google.com", "path": "/",
             "expires": 4102444800, "httpOnly": True, "secure": True, "sameSite": "Lax",
             "partitionKey": "ignored-extra-field"},
            {"name": "__Secure-1PSIDTS", "value": SECRET + "2", "domain": ".google.com",
             "path": "/", "expires": 1000, "httpOnly": True, "secure": True,
             "sameSite": "None"},
        ],
        "origins": [{"origin": "https://aistudio.google.com",
                     "localStorage": [{"name": "aiStudioUserPreference", "value": "{}"}]}],
    }
    s.update(over)
    return s


def write(tmp_path: Path, name: str, content: str | bytes, mode: int = 0o600) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    p.chmod(mode)
    return p


def test_valid_profile_loads_with_id_from_stem(tmp_path, caplog):
    p = write(tmp_path, "alice.json", json.dumps(state()))
    with caplog.at_level(logging.WARNING):
        prof = load_profile(p)
    assert prof.id == "alice" and prof.path == p
    assert prof.cookie_names == ("SID", "__Secure-1PSIDTS")
    assert prof.domains == ("google.com",)
    assert prof.expired(now=2000) == ("__Secure-1PSIDTS",)
    pw = prof.storage_state()
    assert pw["cookies"][0]["value"] == SECRET  # Playwright gets the real value...
    assert "partitionKey" not in pw["cookies"][0]  # ...and only fields it knows
    assert pw["origins"][0]["localStorage"][0]["name"] == "aiStudioUserPreference"
    assert caplog.records == []
    # ...but no representation of the profile shows it
    for text in (repr(prof), str(prof), repr(prof.state), repr(prof.state.cookies),
                 prof.describe(now=2000)):
        assert SECRET not in text
    assert "1 expired" in prof.describe(now=2000)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[]", "not a Playwright storage state"),
        (b'{"origins": []}', "not a Playwright storage state"),
        (json.dumps({"cookies": [{"name": "SID", "value": 5, "domain": "x"}]}).encode(),
         "not a Playwright storage state"),
        (json.dumps({"cookies": [{"name": "SID", "value": SECRET}]}).encode(),
         "not a Playwright storage state"),
        (json.dumps(state(cookies=[])).encode(), "has no cookies"),
        (json.dumps({"cookies": [{"name": "", "value": SECRET, "domain": "x"}]}).encode(),
         "empty name or domain"),
        (json.dumps({"cookies": [{"name": "SID", "value": SECRET, "domain": ""}]}).encode(),
         "empty name or domain"),
    ],
)
def test_bad_files_give_a_clear_reason_without_values(tmp_path, content, reason):
    p = write(tmp_path, "bob.json", content)
    with pytest.raises(ProfileError) as ei:
        load_profile(p)
    msg = str(ei.value)
    assert str(p) in msg and reason in msg
    assert SECRET not in msg


def test_unreadable_missing_and_directory(tmp_path):
    with pytest.raises(ProfileError, match="cannot read it"):
        load_profile(tmp_path / "missing.json")
    d = tmp_path / "adir.json"
    d.mkdir()
    with pytest.raises(ProfileError, match="not a regular file"):
        load_profile(d)
    if os.geteuid() != 0:  # root reads everything
        p = write(tmp_path, "locked.json", json.dumps(state()), mode=0o000)
        with pytest.raises(ProfileError, match="cannot read it"):
            load_profile(p)


def test_bad_profile_id(tmp_path):
    p = write(tmp_path, "bad name!.json", json.dumps(state()))
    with pytest.raises(ProfileError, match="not a usable profile id"):
        load_profile(p)
    assert load_profile(write(tmp_path, "me@example.com.json", json.dumps(state()))).id \
        == "me@example.com"


def test_wide_permissions_warn_without_values(tmp_path, caplog):
    p = write(tmp_path, "carol.json", json.dumps(state()), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="bpool.profiles"):
        load_profile(p)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "readable by group/others" in msgs[0] and "644" in msgs[0]
    assert SECRET not in msgs[0]


def test_check_cli_in_process(tmp_path, capsys):
    good = write(tmp_path, "good.json", json.dumps(state()))
    bad = write(tmp_path, "bad.json", "{}")
    assert main(["check", str(good)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("ok: good:") and SECRET not in out.out
    assert main(["check", str(good), str(bad)]) == 1
    out = capsys.readouterr()
    assert "ok: good:" in out.out
    assert "bad.json" in out.err and "not a Playwright storage state" in out.err


def test_check_cli_as_a_module(tmp_path):
    bad = write(tmp_path, "nocookies.json", json.dumps(state(cookies=[])))
    r = subprocess.run([sys.executable, "-m", "bpool.worker.profiles", "check", str(bad)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "nocookies.json" in r.stderr and "has no cookies" in r.stderr


def test_a_newline_is_not_part_of_a_usable_id(tmp_path):
    for name in ("evil\n.json", ".hidden.json", "a\nb.json"):
        with pytest.raises(ProfileError, match="not a usable profile id"):
            load_profile(write(tmp_path, name, json.dumps(state())))
