"""python -m bpool.bench core [--n N] [--seconds S]   (see bpool/bench/core.py)"""

from __future__ import annotations

import argparse
import os
import platform
import sys


def _machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpool.bench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    core = sub.add_parser("core", help="floor vs broker vs full HTTP path vs streaming relay")
    core.add_argument("--n", type=int, default=2000, help="sequential requests per stage")
    core.add_argument("--seconds", type=int, default=10, help="duration of each load run")
    br = sub.add_parser("browser", help="real Chromium workers against the simulator")
    br.add_argument("--requests", type=int, default=30)
    br.add_argument("--rounds", type=int, default=12, help="scaling: requests per browser")
    br.add_argument("--workers", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    metavar="N[,N...]", help="only the capacity table for these pool sizes")
    br.add_argument("--chromium-args", default=None, help="extra Chromium flags for every worker")
    br.add_argument("--switches", action="store_true",
                    help="only the cost of a parameter change and of a model switch")
    br.add_argument("--answer-s", type=float, default=2.0,
                    help="scaling and capacity: the simulator's fixed answer time")
    pc = sub.add_parser("page-cpu", help="CPU per answer of one page: alone, and with the tap")
    pc.add_argument("--requests", type=int, default=10)
    pc.add_argument("--answer-s", type=float, default=2.0)
    ss = sub.add_parser("sessions", help="browser sessions: create, relay overhead, capacity")
    ss.add_argument("--creates", type=int, default=20)
    ss.add_argument("--rounds", type=int, default=500, help="CDP round trips each way")
    ss.add_argument("--capacity", type=int, default=8, help="sessions held at once (bound)")
    sub.add_parser("_echo").add_argument("endpoint")
    w = sub.add_parser("_worker")
    for name in ("endpoint", "profile", "chunks", "interval_s"):
        w.add_argument(name)
    r = sub.add_parser("_relay")
    r.add_argument("front")
    r.add_argument("back")
    sub.add_parser("_hello").add_argument("port", type=int)
    args = ap.parse_args(argv)

    from bpool.bench import core as c

    if args.cmd == "_echo":
        return c.echo_server(args.endpoint)
    if args.cmd == "_worker":
        return c.raw_worker(args.endpoint, args.profile, int(args.chunks), float(args.interval_s))
    if args.cmd == "_relay":
        return c.relay(args.front, args.back)
    if args.cmd == "_hello":
        return c.hello_server(args.port)
    print(f"machine: {_machine()}")
    if args.cmd == "sessions":
        from bpool.bench import sessions

        return sessions.main(args.creates, args.rounds, args.capacity)
    if args.cmd == "page-cpu":
        from bpool.bench import page_cpu

        return page_cpu.main(args.requests, args.answer_s)
    if args.cmd == "browser":
        from bpool.bench import browser

        return browser.main(args.requests, rounds=args.rounds, workers=args.workers,
                            chromium_args=args.chromium_args, switches_only=args.switches,
                            answer_s=args.answer_s)
    rows = c.run_core(args.n, args.seconds)
    c.print_table(rows)
    floor, relay, broker, _, full, stream = rows
    print()
    print(f"broker path p50 / floor p50: {broker['p50_ms'] / floor['p50_ms']:.2f}x (target <= 2x)")
    print(f"broker path p50 / relay floor p50: {broker['p50_ms'] / relay['p50_ms']:.2f}x")
    if "load_rps" in full:
        print(f"full path under load: {full['load_rps']:.0f} req/s (target >= 1000)")
    print(f"added per streamed chunk p50: {stream['p50_ms']:.3f} ms (target <= 2 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
