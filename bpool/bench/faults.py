"""Fault benchmark under a real supervisord: how fast the pool notices, recovers and swaps.

    python -m bpool.bench.faults [--rounds N] [--fake]      (scripts/bench-faults)

A scratch pool (bpool.testing.supervised: the real supervisord.conf, the simulator, two profiles
with real Chromium; `--fake` uses fake workers instead) and, per round:

* kill -9 of a busy worker → its client's error; → the restarted worker back in rotation
  (/health); → the first answer served by it;
* scripts/swap-cookie of an idle profile: the whole command, validation to back in rotation.

Prints one line per measure (median, min, max over the rounds) and exits non-zero if a round
did not behave (no error for the killed client, a failed swap).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bpool.testing.supervised import SupervisedPool, one_stream_each, stream_chat

LONG_PROMPT = " ".join(["stream"] * 400)  # ~8 s of answer at the sim's 50 tokens/s
FAKE_CMD = ("{python} -m bpool.testing.fake_worker --profile-id {profile_id} --chunks 200 "
            "--chunk-interval-s 0.04")


async def kill_busy_worker(pool: SupervisedPool, victim: str) -> dict[str, float]:
    streams = await one_stream_each(pool, {"alice", "bob"}, LONG_PROMPT)
    w = pool.workers()[victim]
    t_kill = time.monotonic()
    os.kill(w["pid"], signal.SIGKILL)
    mine = await streams[victim]
    if mine.ok or mine.error is None:
        raise RuntimeError(f"the killed worker's client got no error: {mine}")
    back = await asyncio.to_thread(pool.wait_until, lambda: (
        (x := pool.workers().get(victim)) and x["pid"] != w["pid"]
        and x["state"] in ("idle", "busy") and time.monotonic()), 90, f"{victim} back")
    served = None
    while served is None:  # two at once: the least recently idle worker gets one of them
        pair = await asyncio.gather(*(stream_chat(pool.base_url, "again") for _ in range(2)))
        served = next((r for r in pair if r.ok and r.profile == victim), None)
    await asyncio.gather(*streams.values())  # the other client's stream ends normally
    return {"kill -9 busy worker -> client error": mine.ended_at - t_kill,
            "kill -9 busy worker -> back in rotation": back - t_kill,
            "kill -9 busy worker -> serving again": served.ended_at - t_kill}


def swap(pool: SupervisedPool, profile: str, new_file: Path) -> dict[str, float]:
    t0 = time.monotonic()
    done = pool.script("swap-cookie", profile, str(new_file))
    if done.returncode != 0:
        raise RuntimeError(f"swap-cookie failed: {done.stdout}{done.stderr}")
    return {"swap-cookie of an idle profile (whole command)": time.monotonic() - t0}


def report(samples: dict[str, list[float]]) -> None:
    width = max(map(len, samples))
    for name, xs in samples.items():
        print(f"{name:<{width}}  median {statistics.median(xs):6.2f} s   "
              f"min {min(xs):6.2f}   max {max(xs):6.2f}   (n={len(xs)})")


def run(rounds: int, fake: bool) -> int:
    base = Path(tempfile.mkdtemp(prefix="bpool-bench-"))
    env = {"BPOOL_SIM_TOKENS_PER_S": "50"}
    if fake:
        env["BPOOL_WORKER_CMD"] = FAKE_CMD
    pool = SupervisedPool(base, simulator="off" if fake else "on", env=env)
    samples: dict[str, list[float]] = {}
    try:
        pool.make_profiles("alice", "bob")
        pool.make_profiles("carol", "dave", out=base / "spare")
        t0 = time.monotonic()
        pool.start()
        pool.wait_in_rotation({"alice", "bob"}, timeout_s=120)
        print(f"pool up: {time.monotonic() - t0:.1f} s from supervisord start to both profiles "
              "in rotation", flush=True)
        spares = [base / "spare" / "carol.json", base / "spare" / "dave.json"]
        for i in range(rounds):
            for k, v in asyncio.run(kill_busy_worker(pool, "alice")).items():
                samples.setdefault(k, []).append(v)
            pool.wait_in_rotation({"alice", "bob"}, timeout_s=60)
            for k, v in swap(pool, "bob", spares[i % 2]).items():
                samples.setdefault(k, []).append(v)
    except Exception as exc:  # report what was measured so far, and why it stopped
        print(f"bench-faults: {exc}", file=sys.stderr)
        if samples:
            report(samples)
        return 1
    finally:
        left = pool.close()
        if left:
            print(f"bench-faults: had to kill {len(left)} leftover processes", file=sys.stderr)
    report(samples)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpool.bench.faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fake", action="store_true", help="fake workers instead of Chromium")
    args = ap.parse_args(argv)
    print(f"bench-faults: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{'fake workers' if args.fake else 'Chromium + simulator'}, {args.rounds} rounds")
    return run(args.rounds, args.fake)


if __name__ == "__main__":
    sys.exit(main())
