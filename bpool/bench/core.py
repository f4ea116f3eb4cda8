"""`python -m bpool.bench core`: the core pipeline measured against its floor, in one run.

1. floor      raw pyzmq DEALER -> ROUTER echo between two processes (one round trip)
2. broker     raw DEALER "front" -> real broker -> raw instant DEALER workers -> back
3. http       HTTP client -> real front -> real broker -> real fake workers -> back
              (sequential latency, then throughput under load from a multi-process aiohttp client),
              beside an aiohttp hello-world on the same machine as the HTTP ceiling
4. stream     time from a worker emitting a chunk to the HTTP client reading it as SSE
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import multiprocess
import zmq

from bpool import protocol as p

from bpool.wire import sockets as _zmq
from bpool.testing.pool import Pool, free_port

PAYLOAD = b"x" * 200
CHAT_BODY = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "ping"}]}
).encode()


def _stats(name: str, lat_s: list[float], rps: float | None, note: str = "") -> dict:
    return {
        "name": name,
        "p50_ms": percentile(lat_s, 50) * 1e3,
        "p99_ms": percentile(lat_s, 99) * 1e3,
        "rps": rps,
        "note": note,
    }


# ------------------------------------------------------------------ child processes


def echo_server(endpoint: str) -> int:
    ctx = zmq.Context()
    sock = _zmq.router(ctx, endpoint)
    while True:
        sock.send_multipart(sock.recv_multipart())


def relay(front_ep: str, back_ep: str) -> int:
    """A Python ROUTER->DEALER relay with no logic: the floor for two hops through Python."""
    ctx = zmq.Context()
    front = _zmq.router(ctx, front_ep)
    back = ctx.socket(zmq.DEALER)
    back.connect(back_ep)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    while True:
        ready = dict(poller.poll())
        if front in ready:
            back.send_multipart(front.recv_multipart())
        if back in ready:
            front.send_multipart(back.recv_multipart())


def raw_worker(endpoint: str, profile: str, chunks: int, interval_s: float) -> int:
    """A worker speaking the protocol directly; chunk text = its emission time (monotonic)."""
    ctx = zmq.Context()
    sock = _zmq.dealer(ctx, endpoint, identity=_zmq.new_identity(profile))
    enc, dec = p.encoder(), p.decoder(p.BrokerToWorker)
    ready = enc.encode(p.Ready(p.PROTOCOL_VERSION, profile, os.getpid(), uuid.uuid4().hex,
                               "raw", "", ()))
    beat = enc.encode(p.Heartbeat())
    idle = enc.encode(p.Idle())
    registered, last_send = False, 0.0
    while True:
        now = time.monotonic()
        if now - last_send > 0.5:
            try:
                sock.send(beat if registered else ready, zmq.NOBLOCK)
                last_send = now
            except zmq.Again:
                pass
        if not sock.poll(200):
            continue
        msg = dec.decode(sock.recv())
        if isinstance(msg, p.Disconnect):
            registered, last_send = False, 0.0
            continue
        registered = True
        if isinstance(msg, p.Assign):
            sock.send(enc.encode(p.Started(msg.job_id)))
            for i in range(chunks):
                if interval_s and i:
                    time.sleep(interval_s)
                sock.send(enc.encode(p.Chunk(msg.job_id, i, f"{time.monotonic():.6f};")))
            sock.send(enc.encode(p.Done(msg.job_id, "stop", p.Usage(1, chunks, chunks + 1))))
            sock.send(idle)
            last_send = time.monotonic()


def hello_server(port: int) -> int:
    from aiohttp import web

    body = json.dumps({"object": "chat.completion", "choices": []}).encode()

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
    return 0


# ------------------------------------------------------------------ measurements


def measure_floor(pool: Pool, n: int, via_relay: bool = False) -> dict:
    run = pool.run_dir
    ep = f"ipc://{run}/echo.sock"
    pool.start_module("echo", "bpool.bench", "_echo", ep)
    if via_relay:
        pool.start_module("relay", "bpool.bench", "_relay", f"ipc://{run}/relay.sock", ep)
        ep = f"ipc://{run}/relay.sock"
    ctx = zmq.Context.instance()
    sock = _zmq.dealer(ctx, ep)
    pool.wait_until(lambda: _try_roundtrip(sock), 10, "echo server")
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        sock.send(PAYLOAD)
        sock.recv()
        lat.append(time.perf_counter() - t0)
    rps = _windowed(sock, lambda: sock.send(PAYLOAD), lambda: sock.recv() and True, n)
    sock.close()
    name = "floor: raw zmq round trip via a Python relay" if via_relay else "floor: raw zmq round trip"
    return _stats(name, lat, rps)


def _try_roundtrip(sock: zmq.Socket) -> bool:
    try:
        sock.send(PAYLOAD, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return bool(sock.poll(1000)) and bool(sock.recv())


def _windowed(sock, send, recv_one_done, n: int, window: int = 32) -> float:
    """Requests/s with `window` requests in flight; recv_one_done() is True when one finished."""
    t0 = time.perf_counter()
    sent = done = 0
    while done < n:
        while sent < n and sent - done < window:
            send()
            sent += 1
        if recv_one_done():
            done += 1
    return n / (time.perf_counter() - t0)


def measure_broker(pool: Pool, n: int, workers: int = 4) -> dict:
    run = pool.run_dir
    pool.start_broker()
    for i in range(workers):
        pool.start_module(f"raw{i}", "bpool.bench", "_worker", f"ipc://{run}/workers.sock",
                    f"raw{i}", "1", "0")
    ctx = zmq.Context.instance()
    sock = _zmq.dealer(ctx, f"ipc://{run}/front.sock")
    enc, dec = p.encoder(), p.decoder(p.BrokerToFront)
    spec = p.JobSpec("bench", (p.ChatMessage("user", "ping"),))

    def submit() -> None:
        sock.send(enc.encode(p.Submit(uuid.uuid4().hex, spec)))

    def finished() -> bool:
        msg = dec.decode(sock.recv())
        if isinstance(msg, p.Failed):
            raise RuntimeError(f"broker failed a job: {msg.error}")
        return isinstance(msg, p.Done)

    def status_workers() -> int:
        try:
            sock.send(enc.encode(p.StatusQuery(1)), zmq.NOBLOCK)
        except zmq.Again:  # broker not connected yet
            return 0
        if not sock.poll(1000):
            return 0
        reply = dec.decode(sock.recv())
        return sum(w.state == "idle" for w in reply.status.workers)

    pool.wait_until(lambda: status_workers() == workers, 15, f"{workers} raw workers")
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        submit()
        while not finished():
            pass
        lat.append(time.perf_counter() - t0)
    rps = _windowed(sock, submit, finished, n)
    sock.close()
    return _stats(f"broker: submit -> raw worker -> done ({workers} workers)", lat, rps)


def _answers(port: int) -> bool:
    try:
        return bool(_http_sequential(port, 1))
    except OSError:  # not listening yet
        return False


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _http_sequential(port: int, n: int, path: str = "/v1/chat/completions") -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", path, CHAT_BODY, {"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status} during the benchmark")
        lat.append(time.perf_counter() - t0)
    conn.close()
    return lat


def _load_proc(args: tuple[int, float, int]) -> tuple[int, int, list[float]]:
    """One load-generating process: `conns` keep-alive connections posting for `seconds`;
    (answered 2xx, other statuses, latencies)."""
    port, seconds, conns = args
    ok = bad = 0
    lat: list[float] = []

    async def one(session: aiohttp.ClientSession, end: float) -> None:
        nonlocal ok, bad
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            async with session.post(url, data=CHAT_BODY,
                                    headers={"content-type": "application/json"}) as resp:
                await resp.read()
            lat.append(time.perf_counter() - t0)
            if resp.status == 200:
                ok += 1
            else:
                bad += 1

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=conns)
        async with aiohttp.ClientSession(connector=connector) as session:
            end = time.perf_counter() + seconds
            await asyncio.gather(*(one(session, end) for _ in range(conns)))

    asyncio.run(run())
    return ok, bad, lat


def _load(port: int, seconds: int, conns: int, procs: int = 2) -> tuple[float, float, float, int]:
    """Requests/s, p50 and p99 ms, non-2xx count: `conns` connections over `procs` processes
    (the `multiprocess` pool; no load-generator binary needed)."""
    per = max(1, conns // procs)
    with multiprocess.Pool(procs) as workers:
        t0 = time.perf_counter()
        parts = workers.map(_load_proc, [(port, float(seconds), per)] * procs)
        elapsed = time.perf_counter() - t0
    ok = sum(p[0] for p in parts)
    bad = sum(p[1] for p in parts)
    lat = sorted(x for p in parts for x in p[2])
    return ((ok + bad) / elapsed, percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3, bad)


def measure_http(pool: Pool, n: int, seconds: int, workers: int = 3) -> list[dict]:
    results = []
    hello_port = free_port()
    pool.start_module("hello", "bpool.bench", "_hello", str(hello_port))
    pool.wait_until(lambda: _answers(hello_port), 15, "hello server")
    results.append(_http_row("ceiling: aiohttp hello-world", hello_port, n, seconds))

    port = pool.port
    pool.start_broker()
    pool.start_front()
    for i in range(workers):
        pool.start_fake_worker(f"fake{i}", "--latency-s", "0", "--chunks", "1",
                               "--chunk-interval-s", "0")
    pool.wait_idle(workers)
    results.append(
        _http_row(f"full path: HTTP -> front -> broker -> fake worker ({workers})", port, n,
                  seconds)
    )
    return results


def _http_row(name: str, port: int, n: int, seconds: int) -> dict:
    lat = _http_sequential(port, n)
    row = _stats(name + ", sequential", lat, len(lat) / sum(lat))
    rps, p50, p99, bad = _load(port, seconds, 32)
    return {**row, "load_rps": rps, "load_p50_ms": p50, "load_p99_ms": p99, "load_bad": bad}


def measure_stream(pool: Pool, chunks: int, interval_s: float, reqs: int) -> dict:
    port = pool.port
    pool.start_broker()
    pool.start_front()
    pool.start_module("raw-stream", "bpool.bench", "_worker", f"ipc://{pool.run_dir}/workers.sock",
                "stream", str(chunks), str(interval_s))
    pool.wait_idle(1)
    body = json.dumps({"model": "bench", "stream": True,
                       "messages": [{"role": "user", "content": "ping"}]}).encode()
    delays = []
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(reqs):
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status} during the streaming benchmark")
        while True:
            line = resp.readline()
            got = time.monotonic()
            if not line or line.startswith(b"data: [DONE]"):
                break
            if not line.startswith(b"data: "):
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                for stamp in (choice.get("delta", {}).get("content") or "").split(";"):
                    if stamp:
                        delays.append(got - float(stamp))
        resp.read()
    conn.close()
    return _stats(f"stream: worker chunk -> SSE client ({chunks} chunks x {reqs} requests)",
                  delays, None, "latency added per relayed chunk")


def run_core(n: int = 2000, seconds: int = 10) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bpool-bench-") as tmp:
        base = Path(tmp)
        for stage in ("floor", "relay", "broker", "http", "stream"):
            env = {"BPOOL_QUEUE_TIMEOUT_S": "30", "BPOOL_MAX_QUEUE": "10000"}
            with Pool(base / stage, env=env) as pool:
                if stage == "floor":
                    rows.append(measure_floor(pool, n))
                elif stage == "relay":
                    rows.append(measure_floor(pool, n, via_relay=True))
                elif stage == "broker":
                    rows.append(measure_broker(pool, n))
                elif stage == "http":
                    rows.extend(measure_http(pool, n // 2, seconds))
                else:
                    rows.append(measure_stream(pool, chunks=50, interval_s=0.005, reqs=20))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'measurement':<68} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for r in rows:
        rps = f"{r['rps']:.0f}" if r.get("rps") else "-"
        print(f"{r['name']:<68} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {rps:>8}")
        if "load_rps" in r:
            print(f"{'  under load (32 connections, 2 client processes)':<68} {r['load_p50_ms']:>8.3f} "
                  f"{r['load_p99_ms']:>8.3f} {r['load_rps']:>8.0f}"
                  + (f"  non-2xx: {r['load_bad']}" if r["load_bad"] else ""))
