"""`bpool status` against a running pool (broker, front and fake workers as real processes), run
as the operator runs it: the `bpool` command in its own process."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys

import aiohttp

from bpool.ops import status
from bpool.testing.pool import Pool, free_port
from support import PoolFactory

KEY = "sk-status-test"


def bpool_status(pool: Pool, *args: str) -> subprocess.CompletedProcess[str]:
    # The pool's environment: its port and its key, as the operator's shell would have them.
    return subprocess.run([sys.executable, "-m", "bpool.ops.cli", "status", *args],
                          env=pool.env, capture_output=True, text=True, timeout=30)


def rows(table: str) -> dict[str, list[str]]:
    """Table rows by profile: [state, jobs, cool-down, last error, models, login expiry]."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("PROFILE"))
    out = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break  # the usage rows follow
        cells = line.split(None, 5)
        if cells and not line.startswith("("):
            profile, state, models, jobs, expiry, rest = cells
            left, _, error = rest.partition("  ")
            out[profile] = [state, jobs, left.strip(), error.strip(), models, expiry]
    return out


async def test_table_and_json_of_a_serving_pool(make_pool: PoolFactory,
                                                http: aiohttp.ClientSession) -> None:
    pool = make_pool(["a", "b"], env={"BPOOL_API_KEYS": KEY})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{pool.api_url}/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status == 200
        served_by = resp.headers["x-bpool-profile"]
    await pool.await_idle(2)

    done = bpool_status(pool)
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    assert set(table) == {"a", "b"}
    assert [table[p][0] for p in ("a", "b")] == ["idle", "idle"]
    assert {p: table[p][1] for p in table} == {p: "1" if p == served_by else "0" for p in "ab"}
    assert table["a"][2] == "-" and table["a"][3] == "-"
    models = next(w["models"] for w in pool.health()[1]["workers"] if w["profile_id"] == "a")
    assert table["a"][4] == (",".join(models) or "-")  # a fake worker lists none: any model
    assert done.stdout.startswith("pool: ok, idle 2, busy 0, queue 0")

    done = bpool_status(pool, "--json")
    assert done.returncode == 0, done.stderr
    health = json.loads(done.stdout)
    assert health["status"] == "ok"
    assert {w["profile_id"]: w["jobs_served"] for w in health["workers"]} == \
        {p: 1 if p == served_by else 0 for p in "ab"}


async def test_cooling_per_model_and_exit_1_when_no_worker_can_serve(
        make_pool: PoolFactory, http: aiohttp.ClientSession) -> None:
    pool = make_pool({"limited": ["--rate-limited-after", "0", "--cooldown-s", "600"],
                      "out": ["--logged-out"]},
                     env={"BPOOL_API_KEYS": KEY, "BPOOL_QUEUE_TIMEOUT_S": "2"}, idle=1)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{pool.api_url}/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status == 429  # the only account for "m" is rate-limited for it
    await pool.await_health(lambda b: any(w["cooling"] for w in b["workers"]))

    done = bpool_status(pool)
    assert done.returncode == 0, done.stdout + done.stderr  # idle for every other model
    table = rows(done.stdout)
    assert table["limited"][0] == "idle"
    model, left, unit = table["limited"][2].split()
    assert (model, unit) == ("m", "min") and 0 < int(left) <= 10
    assert table["limited"][3].startswith("rate_limited")
    assert table["out"][0] == "logged_out" and table["out"][3].startswith("logged_out")
    usage = [line.split() for line in done.stdout.splitlines()[-2:]]
    assert usage == [["PROFILE", "MODEL", "REQUESTS", "PROMPT", "COMPLETION", "ERRORS"],
                     ["limited", "m", "1", "0", "0", "rate_limited", "1"]]

    pool.kill("worker-limited")
    await pool.await_health(lambda b: "limited" not in pool.worker_states(b), timeout_s=15)
    done = bpool_status(pool)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("pool: unavailable")

    done = bpool_status(pool, "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "unavailable"


def test_a_front_that_does_not_answer_is_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    out = io.StringIO()
    args = argparse.Namespace(json=False, watch=None, url=url)
    assert status.run(args, out=out) == 1
    assert "does not answer" in out.getvalue()


def test_watch_redraws_until_ctrl_c_and_reports_the_last_state() -> None:
    answers = [{"status": "ok", "workers": [{"profile_id": "a", "state": "idle"}]},
               {"status": "unavailable", "workers": [{"profile_id": "a", "state": "cooling",
                                                      "cooldown_remaining_s": 42.0}]}]
    seen: list[float] = []

    def sleep(s: float) -> None:
        seen.append(s)
        if len(seen) == len(answers):
            raise KeyboardInterrupt

    out = io.StringIO()
    args = argparse.Namespace(json=False, watch=0.5, url="http://unused/health")
    code = status.run(args, out=out, fetch=lambda url: answers[len(seen)], sleep=sleep)
    assert code == 1  # the last state seen could not serve
    assert seen == [0.5, 0.5]
    text = out.getvalue()
    assert text.count("PROFILE") == 2 and "42 s" in text


def test_the_login_column_says_when_the_first_session_cookie_expires() -> None:
    now = 1_800_000_000.0
    workers = [{"profile_id": p, "state": "idle", "models": ["m1", "m2"],
                "cookie_expires_at": at}
               for p, at in (("days", now + 9.4 * 86400), ("hours", now + 5 * 3600 + 60),
                             ("minutes", now + 40 * 60), ("gone", now - 1), ("unknown", None))]
    table = rows(status.render({"status": "ok", "workers": workers}, "u", now=now))
    assert {p: table[p][5] for p in table} == {
        "days": "9d", "hours": "5h", "minutes": "40m", "gone": "expired", "unknown": "-"}
    assert {table[p][4] for p in table} == {"m1,m2"}
