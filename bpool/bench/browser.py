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

`--workers 1,4,8,16` runs only the capacity table (docs/capacity.md): for each N, the scaling
run above, then each worker's PSS (its Python process, its Playwright driver and every process of
its browser) measured at the end of it with all N still up. `--chromium-args` adds Chromium
flags to every worker (BPOOL_CHROMIUM_ARGS), to measure one flag's effect.
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

from bpool.bench import cpu
from bpool.bench.core import percentile
from bpool.worker import procs
from bpool.testing.browser_pool import start_sim
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


def _post_stream(port: int, prompt: str = PROMPT, model: str = "gemini-2.5-flash",
                 **params: float) -> Streamed:
    """One streamed chat request (`params`: temperature, max_tokens, ...)."""
    body = json.dumps({"model": model, "stream": True, **params,
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


def _pss_kb(pid: int, fields: tuple[str, ...] = ("Pss:",)) -> int:
    """PSS by default; ("Private_Clean:", "Private_Dirty:") gives USS, the memory only this
    process holds (PSS also charges a share of pages that other processes map too)."""
    total = 0
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith(fields):
                total += int(line.split()[1])
    except OSError:
        pass
    return total


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

    def __init__(self, base: Path, n: int, sim_args: list[str], timings: Path | None = None,
                 chromium_args: str | None = None):
        env = {"BPOOL_QUEUE_TIMEOUT_S": "300", "BPOOL_BROWSER": "chromium"}
        if chromium_args is not None:
            env["BPOOL_CHROMIUM_ARGS"] = chromium_args
        self.pool = Pool(base, env=env)
        self.n = n
        names = ",".join(f"acct{i}" for i in range(n))
        self.url = start_sim(self.pool, [("--names", names)], *sim_args).url
        cookies = base / "cookies"
        self.pool.start_broker()
        self.pool.start_front()
        wenv = {"BPOOL_STUDIO_URL": self.url, **({"BPOOL_TIMINGS_FILE": str(timings)} if timings else {})}
        for i in range(n):
            self.pool.start_module(f"browser-acct{i}", "bpool.browser_proc", "--profile",
                                   str(cookies / f"acct{i}.json"), env=wenv)
        self.pool.wait_idle(n, timeout_s=120 + 15 * n)  # launches share two cores

    def memory_kb(self, fields: tuple[str, ...] = ("Pss:",)) -> list[int]:
        """Each worker process and its whole process tree (by parent pid: Chromium's zygote and
        renderers do not all keep the environment tag that bpool.worker.procs looks for), plus
        the tagged processes that left the tree (crashpad handlers are re-parented to init)."""
        out = []
        for i in range(self.n):
            tag = str(self.pool.run_dir / "browsers" / f"acct{i}")
            pids = set(_descendants(self.pool[f"browser-acct{i}"].pid)) | set(procs.find_tagged(tag))
            out.append(sum(_pss_kb(p, fields) for p in pids))
        return out

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


def _post_or_fail(port: int, tolerate: bool) -> Streamed | None:
    """A request of the load; with `tolerate`, a failed one counts as None (not served)."""
    try:
        return _post_stream(port)
    except (RuntimeError, OSError):
        if not tolerate:
            raise
        return None


def measure_scaling(base: Path, n: int, answer_s: float, rounds: int,
                    chromium_args: str | None = None, memory: bool = False) -> dict:
    sp = SimPool(base, n, ["--answer-s", str(answer_s), "--first-token-s", "0.2"],
                 chromium_args=chromium_args)
    mem: list[int] = []
    uss: list[int] = []
    try:
        for _ in range(n):  # warm every browser (LRU gives each one request): steady state only
            _post_stream(sp.pool.port)
        total = rounds * n
        cpu0 = cpu.snapshot()
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=2 * n) as ex:
            results = list(ex.map(lambda _: _post_or_fail(sp.pool.port, memory), range(total)))
        elapsed = time.monotonic() - t0
        cpu1 = cpu.snapshot()
        if memory:
            mem = sp.memory_kb()
            uss = sp.memory_kb(("Private_Clean:", "Private_Dirty:"))
    finally:
        sp.close()
    failed = sum(1 for r in results if r is None)
    rps = (total - failed) / elapsed
    ideal = n / answer_s
    return {"n": n, "requests": total, "elapsed_s": elapsed, "rps": rps, "ideal": ideal,
            "efficiency": rps / ideal, "failed": failed,
            "profiles": sorted({r.profile for r in results if r is not None}),
            "memory_kb": mem, "uss_kb": uss,
            "cpu": cpu.per_request(cpu0, cpu1, total - failed)}


def capacity(ns: list[int], answer_s: float, rounds: int, chromium_args: str | None) -> int:
    """The capacity table: per N, throughput against N x one worker and PSS per worker."""
    cores = os.cpu_count() or 1
    print(f"capacity, simulator answering in a fixed {answer_s:g} s, {rounds} requests per "
          f"browser, 2N clients; extra Chromium flags: {chromium_args or '(none)'}")
    print(f"  {'N':>3}  {'PSS/worker':>10}  {'min-max':>11}  {'USS':>7}  {'req/s':>6}  {'ideal':>6}  "
          f"{'throughput':>10}  {'accounts/GiB':>12}  {'accounts/core':>13}")
    with tempfile.TemporaryDirectory(prefix="bpool-bench-capacity-") as tmp:
        for n in ns:
            r = measure_scaling(Path(tmp) / f"n{n}", n, answer_s, rounds, chromium_args, True)
            mem = [m / 1024 for m in r["memory_kb"]] or [0.0]
            avg = sum(mem) / len(mem)
            uss = sum(r["uss_kb"]) / 1024 / max(1, len(r["uss_kb"]))
            print(f"  {n:>3}  {avg:>6.0f} MiB  {min(mem):>4.0f}-{max(mem):<4.0f}  {uss:>3.0f} MiB  "
                  f"{r['rps']:>6.2f}  {r['ideal']:>6.2f}  {r['efficiency'] * 100:>9.0f} %  "
                  f"{1024 / avg if avg else 0:>12.1f}  {n / cores:>13.1f}"
                  + (f"  ({r['failed']} of {r['requests']} failed)" if r["failed"] else ""),
                  flush=True)
            print("         " + cpu.describe(r["cpu"], cores, answer_s, n), flush=True)
    return 0


SWITCH_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro")
PARAMS = ({"temperature": 0.3, "max_tokens": 600}, {"temperature": 0.9, "max_tokens": 900})


def measure_switches(base: Path, rounds: int) -> dict:
    """One worker, requests one at a time. Parameters: a request with other settings than the
    one before it (`change`), then the same request again (`repeat`), `rounds` times, settings
    alternating, each round also with a request with no settings (the page's defaults). Models: the first request on the other model (`change`), then a repeat.
    Each request's client time to first token and the worker's job received -> Run clicked."""
    timings = base / "timings.jsonl"
    sp = SimPool(base, 1, ["--tokens-per-s", "0", "--first-token-s", "0.2"], timings)
    kinds: list[tuple[str, str]] = []  # (what, change|repeat) per request, in order
    streamed: list[Streamed] = []
    try:
        for _ in range(2):  # warm-up: first model selection, first settings
            _post_stream(sp.pool.port, **PARAMS[1])
        for i in range(rounds):  # interleaved, so that load from elsewhere hits all three alike
            for kind in ("change", "repeat"):
                streamed.append(_post_stream(sp.pool.port, **PARAMS[i % 2]))
                kinds.append(("params", kind))
            streamed.append(_post_stream(sp.pool.port))  # no settings: the page's defaults
            kinds.append(("defaults", "repeat"))
        for i in range(rounds):
            model = SWITCH_MODELS[(i + 1) % 2]
            for kind in ("change", "repeat"):
                streamed.append(_post_stream(sp.pool.port, model=model, **PARAMS[0]))
                kinds.append(("model", kind))
    finally:
        sp.close()
    by_job = {j["job_id"]: j for j in map(json.loads, timings.read_text().splitlines())}
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for (what, kind), s in zip(kinds, streamed):
        d = out.setdefault((what, kind), {"ttft": [], "submit": []})
        d["ttft"].append(s.first_s)
        job = by_job.get(s.job_id)
        if job and job.get("started"):
            d["submit"].append(job["started"] - job["received"])
    return out


def print_switches(r: dict) -> None:
    ms = lambda xs: percentile(xs, 50) * 1e3 if xs else float("nan")  # noqa: E731
    print("cost of changing settings (1 worker, one request at a time, p50):")
    base = r[("defaults", "repeat")]
    print(f"  no temperature/max_tokens in the request: job received -> Run clicked "
          f"{ms(base['submit']):.1f} ms; client time to first token {ms(base['ttft']):.1f} ms; "
          f"{len(base['ttft'])} requests")
    for what, label in (("params", "parameter change (temperature, max_tokens)"),
                        ("model", "model switch (gemini-2.5-flash <-> gemini-2.5-pro)")):
        ch, rep = r[(what, "change")], r[(what, "repeat")]
        print(f"  {label}: job received -> Run clicked {ms(ch['submit']):.1f} ms vs "
              f"{ms(rep['submit']):.1f} ms repeated (+{ms(ch['submit']) - ms(rep['submit']):.1f} "
              f"ms); client time to first token {ms(ch['ttft']):.1f} ms vs {ms(rep['ttft']):.1f} "
              f"ms (+{ms(ch['ttft']) - ms(rep['ttft']):.1f} ms); {len(ch['ttft'])} each")


def main(requests: int = 30, ns: tuple[int, ...] = (1, 2, 4), answer_s: float = 2.0,
         rounds: int = 12, workers: list[int] | None = None, chromium_args: str | None = None,
         switches_only: bool = False) -> int:
    if workers:
        return capacity(workers, answer_s, rounds, chromium_args)
    if switches_only:
        with tempfile.TemporaryDirectory(prefix="bpool-bench-switches-") as tmp:
            print_switches(measure_switches(Path(tmp), rounds))
        return 0
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
        print_switches(measure_switches(Path(tmp) / "switches", rounds))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
