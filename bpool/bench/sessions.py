"""`python -m bpool.bench sessions`: browser sessions end to end (real Chromium).

1. create     POST /v1/sessions -> the first CDP answer through the relay (the client's view
              of "I asked for a browser and it answers"), sequential sessions, each deleted after
2. relay      one CDP round trip (Runtime.evaluate on a page) through the front's relay against
              the same round trip on a direct connection to the same browser, interleaved in
              the same run; the direct URL is the browser's own, read from the placement
3. capacity   sessions on one host, each with a page open, up to a bounded number: memory
              (PSS) per session browser and what the machine has left (MemAvailable)
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bpool.bench.core import percentile
from bpool.bench.browser import _pss_kb
from bpool.sessions import protocol as sp
from bpool.sessions.link import SessionLink
from bpool.testing.pool import Pool
from bpool.worker import procs

KEY = "bench-session-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HOST = "h1"


def _request(pool: Pool, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(pool.base_url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={**AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _start(base: Path, capacity: int) -> Pool:
    pool = Pool(base, env={"BPOOL_API_KEYS": KEY, "BPOOL_LOG_LEVEL": "WARNING",
                           "BPOOL_SESSION_START_TIMEOUT_S": "120"})
    pool.start_broker()
    pool.start_front()
    pool.start_module(HOST, "bpool.session_host", "--host-id", HOST, "--capacity", str(capacity))

    def registered() -> bool:
        req = urllib.request.Request(pool.base_url + "/metrics", headers=AUTH)
        try:
            return "bpool_session_hosts 1.0" in urllib.request.urlopen(req, timeout=5).read().decode()
        except OSError:
            return False

    pool.wait_until(registered, 90, "the session host registered")
    return pool


async def _first_answer(http: aiohttp.ClientSession, pool: Pool) -> float:
    t0 = time.perf_counter()
    status, s = await asyncio.to_thread(_request, pool, "POST", "/v1/sessions", {})
    assert status == 201, s
    async with http.ws_connect(s["ws_url"], headers=AUTH, max_msg_size=0) as ws:
        await ws.send_json({"id": 1, "method": "Browser.getVersion"})
        assert (await ws.receive_json())["id"] == 1
    took = time.perf_counter() - t0
    await asyncio.to_thread(_request, pool, "DELETE", f"/v1/sessions/{s['id']}")
    return took


async def _page_session(ws: aiohttp.ClientWebSocketResponse) -> str:
    """Attach to a fresh page target (flat mode): Runtime calls go to a real renderer."""
    async def call(i: int, method: str, params: dict) -> dict:
        await ws.send_json({"id": i, "method": method, "params": params})
        while True:
            msg = await ws.receive_json()
            if msg.get("id") == i:
                return msg["result"]

    target = (await call(1, "Target.createTarget", {"url": "about:blank"}))["targetId"]
    return (await call(2, "Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]


async def _round_trips(ws: aiohttp.ClientWebSocketResponse, session: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await ws.send_json({"id": 1000 + i, "sessionId": session, "method": "Runtime.evaluate",
                            "params": {"expression": "1 + 1", "returnByValue": True}})
        while (await ws.receive_json()).get("id") != 1000 + i:
            pass
        out.append(time.perf_counter() - t0)
    return out


async def _relay_vs_direct(http: aiohttp.ClientSession, pool: Pool, rounds: int
                           ) -> tuple[list[float], list[float]]:
    status, s = await asyncio.to_thread(_request, pool, "POST", "/v1/sessions", {})
    assert status == 201, s
    link = SessionLink(f"ipc://{pool.run_dir / 'sessions-front.sock'}", 1.0)
    await link.start()
    try:
        info = (await link.ask(lambda req: sp.GetSession(req, s["id"]), 10)).session
    finally:
        await link.close()
    relayed, direct = [], []
    async with http.ws_connect(s["ws_url"], headers=AUTH, max_msg_size=0) as rws, \
            http.ws_connect(info.ws_url, max_msg_size=0) as dws:
        rs, ds = await _page_session(rws), await _page_session(dws)
        await _round_trips(rws, rs, 20)  # warm-up
        await _round_trips(dws, ds, 20)
        for _ in range(rounds // 50):  # interleaved: both see the same machine load
            relayed += await _round_trips(rws, rs, 50)
            direct += await _round_trips(dws, ds, 50)
    await asyncio.to_thread(_request, pool, "DELETE", f"/v1/sessions/{s['id']}")
    return relayed, direct


async def _capacity(http: aiohttp.ClientSession, pool: Pool, n: int) -> list[dict]:
    rows, held = [], []
    tag = str(pool.run_dir / "sessions" / HOST)
    for i in range(1, n + 1):
        status, s = await asyncio.to_thread(_request, pool, "POST", "/v1/sessions", {})
        if status != 201:
            rows.append({"sessions": i, "error": s.get("error", {}).get("message")})
            break
        ws = await http.ws_connect(s["ws_url"], headers=AUTH, max_msg_size=0)
        await _page_session(ws)
        held.append((s, ws))
        pss = sum(_pss_kb(p) for p in procs.find_tagged(tag))
        rows.append({"sessions": i, "browsers_pss_mib": pss / 1024,
                     "per_session_mib": pss / 1024 / i, "mem_available_mib": _available_mib()})
    for s, ws in held:
        await ws.close()
        await asyncio.to_thread(_request, pool, "DELETE", f"/v1/sessions/{s['id']}")
    return rows


def _available_mib() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ms(v: list[float], q: float) -> float:
    return percentile(v, q) * 1000


async def _run(pool: Pool, creates: int, rounds: int, capacity: int) -> None:
    async with aiohttp.ClientSession() as http:
        firsts = [await _first_answer(http, pool) for _ in range(creates)]
        print(f"create -> first CDP answer ({creates} sessions): p50 {_ms(firsts, 50):.0f} ms, "
              f"p99 {_ms(firsts, 99):.0f} ms")
        relayed, direct = await _relay_vs_direct(http, pool, rounds)
        print(f"CDP round trip ({len(relayed)} each, Runtime.evaluate): relay p50 "
              f"{_ms(relayed, 50):.3f} ms p99 {_ms(relayed, 99):.3f} ms; direct p50 "
              f"{_ms(direct, 50):.3f} ms p99 {_ms(direct, 99):.3f} ms; added by the relay p50 "
              f"{_ms(relayed, 50) - _ms(direct, 50):.3f} ms")
        rows = await _capacity(http, pool, capacity)
        for r in rows:
            print("capacity", json.dumps({k: round(v, 1) if isinstance(v, float) else v
                                          for k, v in r.items()}))


def main(creates: int = 20, rounds: int = 500, capacity: int = 8) -> int:
    with tempfile.TemporaryDirectory(prefix="bpool-bench-sessions-") as tmp:
        pool = _start(Path(tmp), capacity)
        try:
            asyncio.run(_run(pool, creates, rounds, capacity))
        finally:
            pool.close()
            procs.kill_tagged(str(pool.run_dir / "sessions" / HOST))
    return 0
