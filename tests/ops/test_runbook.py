"""docs/operations.md's commands, walked against a real supervisord from an operator's shell.

The pool is started the way `scripts/run` starts it, with settings that are not the defaults
(another port, another drain, API keys in the environment); every command afterwards runs from
a plain shell that has none of them, or other values, as an operator's second terminal would.
Workers are bpool.testing.fake_worker (BPOOL_WORKER_CMD): no browser is needed to check the
operations. The demo pool's simulator is the real one.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from bpool.ops.wait import fetch_health
from bpool.testing.pool import free_port
from bpool.testing.supervised import SupervisedPool

pytestmark = [pytest.mark.timeout(240), pytest.mark.supervisord]

KEY = "sk-runbook-0123456789"
WORKER_SH = """#!/bin/sh
# $1 = python, $2 = profile id. "tired" is rate-limited from its first job for 300 s.
py=$1; id=$2; extra=
case $id in tired) extra="--rate-limited-after 0 --cooldown-s 300" ;; esac
exec "$py" -m bpool.testing.fake_worker --profile-id "$id" --chunks 3 $extra
"""


def worker_cmd(base: Path) -> str:
    sh = base / "worker.sh"
    sh.write_text(WORKER_SH)
    sh.chmod(0o755)
    return f"{sh} {{python}} {{profile_id}}"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisedPool]:
    base = tmp_path_factory.mktemp("runbook")
    p = SupervisedPool(base, simulator="auto", env={
        "BPOOL_WORKER_CMD": worker_cmd(base), "BPOOL_DRAIN_TIMEOUT_S": "20",
        "BPOOL_API_KEYS": KEY, "BPOOL_QUEUE_TIMEOUT_S": "5"})
    try:
        p.start()
        p.wait_until(lambda: {"alice", "bob"} <= set(workers(p)), 30, "demo workers registered")
        yield p
    finally:
        assert p.close() == [], "processes outlived supervisord's shutdown"


def plain_env(pool: SupervisedPool, **extra: str) -> dict[str, str]:
    """An operator's shell: only which pool (BPOOL_SUPERVISORD_CONF), none of its settings."""
    env = {k: v for k, v in pool.env.items()
           if not k.startswith("BPOOL_") and k != "BROWSER_PROFILE_DIR"}
    env["BPOOL_SUPERVISORD_CONF"] = str(pool.conf)
    env.update(extra)
    return env


def plain(pool: SupervisedPool, *argv: str, script: bool = False, **extra: str) -> Any:
    import subprocess

    from bpool.config import REPO_ROOT

    cmd = [str(REPO_ROOT / "scripts" / argv[0]), *argv[1:]] if script \
        else [str(pool.bin / "bpool"), *argv]
    return subprocess.run(cmd, env=plain_env(pool, **extra), cwd=pool.base, capture_output=True,
                          text=True, timeout=120)


def workers(pool: SupervisedPool) -> dict[str, dict[str, Any]]:
    h = fetch_health(pool.base_url + "/health", KEY) or {}
    return {w["profile_id"]: w for w in h.get("workers", [])}


def chat(pool: SupervisedPool) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = json.dumps({"model": "gemini-2.5-flash",
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(pool.base_url + "/v1/chat/completions", body, {
        "content-type": "application/json", "authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def stop_wait(pool: SupervisedPool, program: str) -> int:
    text = (pool.run_dir / "supervisor" / f"{program}.conf").read_text()
    return int(next(ln for ln in text.splitlines() if ln.startswith("stopwaitsecs="))
               .split("=")[1])


def test_the_pool_records_its_settings_without_key_values(pool: SupervisedPool) -> None:
    rec = pool.run_dir / "pool.json"
    assert stat.S_IMODE(rec.stat().st_mode) == 0o600
    text = rec.read_text()
    assert KEY not in text
    data = json.loads(text)
    assert data["settings"]["BPOOL_PORT"] == str(pool.port)
    assert data["settings"]["BPOOL_DRAIN_TIMEOUT_S"] == "20"
    assert data["api_keys"] == "env" and data["mode"] == "demo"


def test_a_plain_shell_operates_the_demo_pool(pool: SupervisedPool) -> None:
    done = plain(pool, "wait-profile", "alice", "--timeout", "30")
    assert done.returncode == 0 and "back in rotation" in done.stdout, done.stderr
    assert done.stderr == ""  # nothing differs: nothing to report

    status, headers, body = chat(pool)
    assert status == 200 and headers.get("x-bpool-demo") == "1", (status, body)
    health = fetch_health(pool.base_url + "/health", KEY)
    assert health["mode"] == "demo"

    listed = plain(pool, "profiles", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {ln.split("\t")[0]: ln.split("\t") for ln in listed.stdout.splitlines()
            if not ln.startswith("#")}
    assert set(rows) == {"browser-alice", "browser-bob"}
    assert rows["browser-alice"][1] in ("idle", "busy"), listed.stdout

    unknown = plain(pool, "wait-profile", "nobody", "--timeout", "60")
    assert unknown.returncode == 1 and "no profile 'nobody'" in unknown.stderr

    before = pool.infos()
    synced = plain(pool, "sync-profiles", script=True)
    assert synced.returncode == 0 and "no program changed" in synced.stdout, synced.stdout
    assert stop_wait(pool, "browser-alice") == 35  # the pool's drain (20 s) + 15, not 30 + 15
    assert pool.infos()["browser-alice"]["pid"] == before["browser-alice"]["pid"]


def test_a_differing_value_in_the_shell_is_reported_not_applied(pool: SupervisedPool) -> None:
    done = plain(pool, "wait-profile", "bob", "--timeout", "30",
                 BPOOL_PORT=str(free_port()), BPOOL_DRAIN_TIMEOUT_S="30")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len([ln for ln in lines if "ignoring BPOOL_PORT=" in ln]) == 1, lines
    assert len([ln for ln in lines if "ignoring BPOOL_DRAIN_TIMEOUT_S=30" in ln]) == 1, lines
    synced = plain(pool, "sync-profiles", script=True, BPOOL_DRAIN_TIMEOUT_S="30")
    assert "no program changed" in synced.stdout and "restarted" not in synced.stdout
    assert stop_wait(pool, "browser-bob") == 35


def test_first_account_ends_demo_mode_and_removal_leaves_no_accounts(
        pool: SupervisedPool, tmp_path: Path) -> None:
    pool.make_profiles("carol")
    added = plain(pool, "sync-profiles", script=True)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "demo mode ended" in added.stdout and "--simulator on" in added.stdout
    assert "started browser-carol" in added.stdout
    assert "stopped browser-alice" in added.stdout and "stopped sim" in added.stdout
    assert "restarted front" in added.stdout
    assert plain(pool, "wait-profile", "carol", "--timeout", "30").returncode == 0
    status, headers, _ = chat(pool)
    assert status == 200 and "x-bpool-demo" not in headers
    assert fetch_health(pool.base_url + "/health", KEY)["mode"] == "accounts"

    pool.make_profiles("carol2", out=tmp_path)
    swapped = plain(pool, "swap-cookie", "carol", str(tmp_path / "carol2.json"), script=True)
    assert swapped.returncode == 0 and "back in rotation" in swapped.stdout, swapped.stderr

    for sub in ("browsers", "snapshots"):  # what a browser worker leaves for its profile
        (pool.run_dir / sub / "carol").mkdir(parents=True, exist_ok=True)
        (pool.run_dir / sub / "carol" / "data").write_text("x")
    (pool.cookies / "carol.json").unlink()
    removed = plain(pool, "sync-profiles", script=True)
    assert "stopped browser-carol" in removed.stdout and "no_accounts" in removed.stdout
    assert not (pool.run_dir / "browsers" / "carol").exists()
    assert not (pool.run_dir / "snapshots" / "carol").exists()
    assert "sim" not in pool.infos() and "browser-alice" not in pool.infos()
    pool.wait_until(lambda: fetch_health(pool.base_url + "/health", KEY), 10, "front back")
    status, _, body = chat(pool)
    assert status == 503 and body["error"]["code"] == "no_accounts", body
    health = fetch_health(pool.base_url + "/health", KEY)
    assert health["mode"] == "none" and health["error"]["code"] == "no_accounts"


def test_every_account_cooling_gives_the_cool_down_as_retry_after(pool: SupervisedPool) -> None:
    """A rate-limited account rests for the time its worker gives (here 300 s); a request
    while every account rests is told when the first one is back, not a second or two."""
    pool.make_profiles("tired")
    assert "started browser-tired" in plain(pool, "sync-profiles", script=True).stdout
    assert plain(pool, "wait-profile", "tired", "--timeout", "30").returncode == 0
    pool.wait_until(lambda: fetch_health(pool.base_url + "/health", KEY), 10, "front back")
    # The account hits its limit for the model and no other account serves it: a 429 at once
    # (not a queue wait), the account cooling for that model only.
    status, headers, body = chat(pool)
    assert status == 429 and body["error"]["code"] == "rate_limited", body
    ws = workers(pool)
    assert ws["tired"]["state"] == "idle", ws
    left = ws["tired"]["cooling"]["gemini-2.5-flash"]
    assert 250 < left <= 300
    assert abs(int(headers["Retry-After"]) - left) <= 10, (headers, left)
    # The next request for the model fails at once too, without trying the account.
    status, headers, body = chat(pool)
    assert status == 429 and body["error"]["code"] == "rate_limited", body
    assert abs(int(headers["Retry-After"]) - left) <= 10, (headers, left)
    listed = plain(pool, "profiles", "list").stdout
    row = next(ln for ln in listed.splitlines() if ln.startswith("browser-tired\t"))
    assert "gemini-2.5-flash cooling" in row and "s left" in row and "fake quota" in row, row


def test_shutdown_of_a_pool_not_in_the_foreground_and_waiting_for_it(
        pool: SupervisedPool) -> None:
    """The runbook's `sctl shutdown`, then its wait for supervisord's pid to go."""
    import subprocess
    import time

    from bpool.testing.supervised import marked_pids

    pid = int((pool.run_dir / "supervisord.pid").read_text())
    done = subprocess.run([str(pool.bin / "supervisorctl"), "-c", str(pool.conf), "shutdown"],
                          env=plain_env(pool), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    waited = subprocess.run(
        ["sh", "-c", "while [ -e run/supervisord.pid ]; do sleep 0.5; done"],
        cwd=pool.base, timeout=120)
    assert waited.returncode == 0
    assert pool.proc is not None and pool.proc.wait(5) == 0
    assert not Path(f"/proc/{pid}").exists()
    end = time.monotonic() + 30  # programs exit before supervisord does; allow the reaping
    while marked_pids(pool.marker) and time.monotonic() < end:
        time.sleep(0.1)
    assert marked_pids(pool.marker) == []
