"""Every process logs through the one setup: with BPOOL_LOG_FORMAT=json each line of every log is
one JSON object with the agreed fields, and a known API key never appears in any log."""

from __future__ import annotations

import json

import aiohttp

from support import PoolFactory, chat_body

SECRET_KEY = "sk-known-secret-0123456789abcdef"
WRONG_KEY = "sk-wrong-0123456789abcdef-wrong"


async def test_json_logs_from_every_process_and_no_key_in_any(
        make_pool: PoolFactory, http: aiohttp.ClientSession) -> None:
    pool = make_pool(["a", "b"], env={"BPOOL_LOG_FORMAT": "json", "BPOOL_LOG_LEVEL": "DEBUG",
                                      "BPOOL_API_KEYS": SECRET_KEY})
    good = {"Authorization": f"Bearer {SECRET_KEY}"}
    for i in range(3):
        async with http.post(pool.api_url + "/chat/completions", headers=good,
                             json=chat_body(f"hello {i}", stream=i == 1)) as resp:
            assert resp.status == 200
            await resp.read()
    async with http.post(pool.api_url + "/chat/completions", json=chat_body("no"),
                         headers={"Authorization": f"Bearer {WRONG_KEY}"}) as resp:
        assert resp.status == 401
    for name in ("worker-a", "worker-b", "front", "broker"):
        assert pool.terminate(name) == 0, pool.log_tails()
    seen_processes: set[str] = set()
    with_request_id = 0
    for name in ("broker", "front", "worker-a", "worker-b"):
        text = pool.logs(name)
        assert SECRET_KEY not in text, f"{name} logged the API key"
        assert WRONG_KEY not in text, f"{name} logged a presented key"
        lines = [ln for ln in text.splitlines() if ln and not ln.startswith("--- start ")]
        assert lines, f"{name} logged nothing"
        for line in lines:
            entry = json.loads(line)  # a line that is not JSON fails here, naming itself
            assert {"ts", "level", "process", "profile", "event"} <= set(entry), line
            seen_processes.add(entry["process"])
            with_request_id += bool(entry.get("request_id"))
            if name.startswith("worker-"):
                assert entry["profile"] == name.removeprefix("worker-"), line
    assert {"broker", "front", "fake_worker"} <= seen_processes
    assert with_request_id >= 3  # the front's one line per served request names it
