"""`python -m bpool.bench browser`: real Chromium workers against the studio simulator.

1. overhead   per request, from the workers' own phase times (BPOOL_TIMINGS_FILE):
              job received -> prompt submitted, and last token -> idle again (page reset)
2. ttft       time to first token seen by an HTTP client, minus the simulator's own time to first
              byte for the same request (its /__sim/stats): what bpool adds. Split per request
              (split_ttft): bpool's own share (client -> about to click Run, and the simulator's
              first byte -> the client), apart from the page's own work between the Run click and
              its GenerateContent request (the page's StreamGenerateContentPerUserQuota first)
3. memory     PSS of each browser worker: its Python process plus every process under it
4. scaling    the simulator answers in a fixed 2 s; N = 1, 2, 4 browsers under 2N concurrent
              clients; requests/s against the ideal N / 2, in steady state (each browser has
              served one warm-up request: the first request of a page selects the model, a
              one-time page reload)
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bpool.bench.core import percentile
from bpool.worker import procs
from bpool.testing.pool import Pool

PROMPT = "Tell me about queues."


@dataclass(frozen=True)
class Streamed:
    """One streamed request as the client saw it."""

    first_s: float  # request sent -> first content chunk
    total_s: float
    profile: str
    job_id: str  # from the chunks' "chatcmpl-<job id>"
    sent: float  # time.monotonic() when sent: the clock of the workers' phase times
    first_wall: float  # time.time() at the first content chunk: the clock of /__sim/stats


def _post_stream(port: int, prompt: str = PROMPT) -> Streamed:
    """One streamed chat request."""
    body = json.dumps({"model": "gemini-2.5-flash", "stream": True,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first = None
    first_wall = 0.0
    job_id = ""
    for line in resp:
        if line.startswith(b"data: [DONE]"):
            break
        if not job_id and line.startswith(b'data: {"id":"chatcmpl-'):
            job_id = line[len(b'data: {"id":"chatcmpl-'):].split(b'"', 1)[0].decode()
        if first is None and line.startswith(b"data: ") and b'"content":"' in line \
                and b'"content":""' not in line:
            first = time.monotonic() - t0
            first_wall = time.time()
    total = time.monotonic() - t0
    conn.close()
    return Streamed(first or total, total, resp.headers.get("x-bpool-profile", ""), job_id, t0,
                    first_wall)


def _sim_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/__sim/stats", timeout=5) as r:
        return json.loads(r.read())


def _pss_kb(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := procs.proc_stat(int(entry))) is not None:
            children.setdefault(st[1], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class SimPool:
    """Broker + front + simulator + N browser workers, each profile its own sim account."""

    def __init__(self, base: Path, n: int, sim_args: list[str], timings: Path | None = None):
        self.pool = Pool(base, env={"BPOOL_QUEUE_TIMEOUT_S": "300", "BPOOL_BROWSER": "chromium"})
        self.n = n
        sim_dir = self.pool.run_dir / "sim"
        env = {"BPOOL_SIM_DIR": str(sim_dir)}
        cookies = base / "cookies"
        names = ",".join(f"acct{i}" for i in range(n))
        self.pool.start_module("make-profiles", "bpool.sim", "make-profiles", "--out", str(cookies),
                               "--names", names, env=env)
        self.pool.wait_until(lambda: self.pool["make-profiles"].returncode == 0, 30,
                             "demo profiles")
        self.pool.start_module("sim", "bpool.sim", "serve", "--port", "0", *sim_args, env=env)
        url_file = sim_dir / "url"
        self.url = self.pool.wait_until(
            lambda: url_file.read_text().strip() if url_file.exists() else None, 30, "sim url")
        self.pool.start_broker()
        self.pool.start_front()
        wenv = {"BPOOL_STUDIO_URL": self.url, **({"BPOOL_TIMINGS_FILE": str(timings)} if timings else {})}
        for i in range(n):
            self.pool.start_module(f"browser-acct{i}", "bpool.browser_proc", "--profile",
                                   str(cookies / f"acct{i}.json"), env=wenv)
        self.pool.wait_idle(n, timeout_s=120)

    def memory_kb(self) -> list[int]:
        """Each worker process and its whole process tree (by parent pid: Chromium's zygote and
        renderers do not all keep the environment tag that bpool.worker.procs looks for)."""
        return [sum(_pss_kb(p) for p in _descendants(self.pool[f"browser-acct{i}"].pid))
                for i in range(self.n)]

    def close(self) -> None:
        for i in range(self.n):  # graceful: the worker closes its own browser
            try:
                self.pool.terminate(f"browser-acct{i}", timeout_s=30)
            except Exception:
                pass
        self.pool.close()


def measure_overhead(base: Path, requests: int) -> dict:
    timings = base / "timings.jsonl"
    sp = SimPool(base, 2, ["--tokens-per-s", "0", "--first-token-s", "0.2"], timings)
    try:
        for _ in range(2):  # warm-up, one per worker (LRU): first model selection, first render
            _post_stream(sp.pool.port)
        before = len(_sim_stats(sp.url)["requests"])
        streamed = [_post_stream(sp.pool.port) for _ in range(requests)]
        records = _sim_stats(sp.url)["requests"][before:]
        memory = sp.memory_kb()
    finally:
        sp.close()
    jobs = [json.loads(x) for x in timings.read_text().splitlines()][2:]
    submit = [j["started"] - j["received"] for j in jobs if j["started"]]
    idle = [j["idle"] - j["last_chunk"] for j in jobs if j["last_chunk"]]
    sim_ttft = [r["first_byte"] - r["start"] for r in records if r.get("first_byte")]
    return {
        "submit": submit, "idle": idle, "client_ttft": [s.first_s for s in streamed],
        "sim_ttft": sim_ttft, "memory_kb": memory, **split_ttft(streamed, jobs, records),
    }


def split_ttft(streamed: list[Streamed], jobs: list[dict], records: list[dict]) -> dict:
    """Each request's time to first token in four parts (lists of seconds, one per request):
    `before`: client -> front -> broker -> worker -> prompt set, about to click Run (bpool);
    `page`: the Run click -> the page's GenerateContent request read by the simulator (the click's
    delivery, then the page's own work: its StreamGenerateContentPerUserQuota round trip first);
    `sim`: the simulator's own wait until its first byte;
    `after`: that byte -> page -> tap -> worker -> broker -> front -> the client's first content
    token (bpool, and the browser's delivery of the response to the page).
    Requests go one at a time, so the n-th GenerateContent the simulator saw is the n-th request;
    a worker's phase times are matched by job id. Clocks: the workers' are time.monotonic(),
    the simulator's time.time(); the offset between them is read here, on the same host."""
    offset = time.time() - time.monotonic()
    by_job = {j["job_id"]: j for j in jobs}
    parts: dict[str, list[float]] = {"before": [], "page": [], "sim": [], "after": []}
    for s, rec in zip(streamed, records):
        job = by_job.get(s.job_id)
        if job is None or not job["started"] or not rec.get("first_byte") or not s.first_wall:
            continue
        parts["before"].append(job["started"] - s.sent)
        parts["page"].append(rec["start"] - (job["started"] + offset))
        parts["sim"].append(rec["first_byte"] - rec["start"])
        parts["after"].append(s.first_wall - rec["first_byte"])
    parts["own"] = [b + a for b, a in zip(parts["before"], parts["after"])]
    return parts


def measure_scaling(base: Path, n: int, answer_s: float, rounds: int) -> dict:
    sp = SimPool(base, n, ["--answer-s", str(answer_s), "--first-token-s", "0.2"])
    try:
        for _ in range(n):  # warm every browser (LRU gives each one request): steady state only
            _post_stream(sp.pool.port)
        total = rounds * n
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=2 * n) as ex:
            results = list(ex.map(lambda _: _post_stream(sp.pool.port), range(total)))
        elapsed = time.monotonic() - t0
    finally:
        sp.close()
    rps = total / elapsed
    ideal = n / answer_s
    return {"n": n, "requests": total, "elapsed_s": elapsed, "rps": rps, "ideal": ideal,
            "efficiency": rps / ideal, "profiles": sorted({r.profile for r in results})}


def main(requests: int = 30, ns: tuple[int, ...] = (1, 2, 4), answer_s: float = 2.0,
         rounds: int = 12) -> int:
    with tempfile.TemporaryDirectory(prefix="bpool-bench-browser-") as tmp:
        o = measure_overhead(Path(tmp) / "overhead", requests)
        ms = lambda xs, q: percentile(xs, q) * 1e3  # noqa: E731
        print(f"browser overhead per request ({len(o['submit'])} requests, 2 Chromium workers):")
        print(f"  job received -> prompt submitted   p50 {ms(o['submit'], 50):7.1f} ms  "
              f"p99 {ms(o['submit'], 99):7.1f} ms  (target <= 150 ms)")
        print(f"  last token -> idle again (reset)   p50 {ms(o['idle'], 50):7.1f} ms  "
              f"p99 {ms(o['idle'], 99):7.1f} ms  (target <= 300 ms)")
        added = percentile(o["client_ttft"], 50) - percentile(o["sim_ttft"], 50)
        print(f"time to first token: client p50 {ms(o['client_ttft'], 50):.1f} ms, simulator's own "
              f"p50 {ms(o['sim_ttft'], 50):.1f} ms -> added by bpool {added * 1e3:.1f} ms")
        if o["own"]:
            print(f"  bpool's own share per request: p50 {ms(o['own'], 50):.1f} ms (client -> about "
                  f"to click Run p50 {ms(o['before'], 50):.1f} ms, plus simulator's first byte -> "
                  f"client p50 {ms(o['after'], 50):.1f} ms)")
            print(f"  not in that share: Run click -> the page's GenerateContent read by the "
                  f"simulator p50 {ms(o['page'], 50):.1f} ms (the click's delivery, then the page's "
                  f"own quota request)")
        mem = o["memory_kb"]
        print("memory per browser worker (PSS, worker + its browser): "
              + ", ".join(f"{m / 1024:.0f} MiB" for m in mem))
        print(f"pool scaling, simulator answering in a fixed {answer_s:g} s:")
        for n in ns:
            r = measure_scaling(Path(tmp) / f"scale{n}", n, answer_s, rounds)
            print(f"  N={n}: {r['requests']} requests in {r['elapsed_s']:.1f} s = {r['rps']:.2f} "
                  f"req/s, ideal {r['ideal']:.2f} -> {r['efficiency'] * 100:.0f} % (target >= 90 %)")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
