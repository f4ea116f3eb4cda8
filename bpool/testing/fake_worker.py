"""A worker without a browser, for tests and benchmarks: a real process speaking the real worker
protocol (through bpool.worker.link) that answers with text naming its profile.

    python -m bpool.testing.fake_worker --profile-id ID [--latency-s S] [--chunks N]
        [--chunk-interval-s S] [--models a,b] [--reasoning] [--record FILE]
        [--die-after-chunks N] [--no-heartbeat] [--rate-limited-after N --cooldown-s S]
        [--rate-limited-model M --cooldown-s S]
        [--logged-out] [--cookie-expires-at UNIX_TIME]

The answer is `fake answer from <profile> to: <last user message>`, split into N chunks (at most
`max_tokens` of them, then finish_reason "length"). `--record FILE` appends one JSON line per
job (profile, pid, job id, start/end on the shared monotonic clock and wall clock, outcome):
tests use it to prove that one worker never ran two jobs at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

from bpool import config
from bpool.protocol import ErrorInfo, Usage, error
from bpool.worker.link import Job, JobError, LinkSettings, run_worker

log = logging.getLogger("bpool.fake_worker")


def split_text(text: str, n: int) -> list[str]:
    """`text` in `n` non-empty pieces (fewer if the text is shorter), joined back exactly."""
    n = max(1, min(n, len(text)))
    step, extra = divmod(len(text), n)
    pieces, pos = [], 0
    for i in range(n):
        size = step + (1 if i < extra else 0)
        pieces.append(text[pos:pos + size])
        pos += size
    return pieces


class FakeBackend:
    engine = "fake"

    def __init__(self, args: argparse.Namespace) -> None:
        self.profile_id: str = args.profile_id
        self.account = f"{args.profile_id}@fake.invalid"
        self.models: tuple[str, ...] = tuple(m for m in args.models.split(",") if m)
        self.unusable: ErrorInfo | None = (
            error("logged_out", "the fake account is logged out") if args.logged_out else None
        )
        self.args = args
        self.jobs_seen = 0
        self.cookie_expires_at: float | None = args.cookie_expires_at

    def _record(self, job: Job, start: tuple[float, float], outcome: str) -> None:
        if not self.args.record:
            return
        line = {
            "profile": self.profile_id, "pid": os.getpid(), "job_id": job.id,
            "start_mono": start[0], "end_mono": time.monotonic(),
            "start_wall": start[1], "end_wall": time.time(), "outcome": outcome,
            "model": job.spec.model, "temperature": job.spec.temperature,
            "top_p": job.spec.top_p, "max_tokens": job.spec.max_tokens,
            "stop": list(job.spec.stop), "reasoning_effort": job.spec.reasoning_effort,
            "roles": [m.role for m in job.spec.messages],
        }
        # One short write per line with O_APPEND: lines from several processes do not interleave.
        with Path(self.args.record).open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    async def run(self, job: Job) -> tuple[str, Usage | None]:
        start = (time.monotonic(), time.time())
        outcome = "error"
        try:
            finish, usage = await self._answer(job)
            outcome = finish
            return finish, usage
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except JobError as exc:
            outcome = exc.error.kind
            raise
        finally:
            self._record(job, start, outcome)

    async def _answer(self, job: Job) -> tuple[str, Usage | None]:
        a = self.args
        self.jobs_seen += 1
        if a.rate_limited_after is not None and self.jobs_seen > a.rate_limited_after:
            raise JobError(error("rate_limited", f"{self.profile_id}: fake quota exhausted",
                                 retry_after_s=a.cooldown_s))
        if job.spec.model in a.rate_limited_model:  # a quota per account and model
            raise JobError(error("rate_limited", f"{self.profile_id}: fake quota for "
                                 f"{job.spec.model} exhausted", retry_after_s=a.cooldown_s))
        await asyncio.sleep(a.latency_s)
        job.start()
        last_user = next((m.content for m in reversed(job.spec.messages) if m.role == "user"), "")
        if a.reasoning:
            job.emit(reasoning=f"thinking about: {last_user}")
        text = f"fake answer from {self.profile_id} to: {last_user}"
        pieces = split_text(text, a.chunks)
        finish = "stop"
        if job.spec.max_tokens is not None and len(pieces) > job.spec.max_tokens:
            pieces, finish = pieces[: job.spec.max_tokens], "length"
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(a.chunk_interval_s)
            job.emit(piece)
            if a.die_after_chunks is not None and i + 1 >= a.die_after_chunks:
                await asyncio.sleep(0.05)  # let the chunks leave the socket, then vanish
                os._exit(3)
        prompt = sum(len(m.content.split()) for m in job.spec.messages)
        return finish, Usage(prompt, len(pieces), prompt + len(pieces),
                             1 if a.reasoning else 0)

    async def reset(self) -> None:
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bpool.testing.fake_worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile-id", required=True)
    p.add_argument("--latency-s", type=float, default=0.0, help="delay before the first chunk")
    p.add_argument("--chunks", type=int, default=3)
    p.add_argument("--chunk-interval-s", type=float, default=0.0)
    p.add_argument("--models", default="", help="comma-separated; empty = any model")
    p.add_argument("--reasoning", action="store_true", help="emit a reasoning chunk first")
    p.add_argument("--record", help="append one JSON line per job to this file")
    p.add_argument("--die-after-chunks", type=int, help="os._exit mid-stream after N chunks")
    p.add_argument("--no-heartbeat", action="store_true", help="never send heartbeats")
    p.add_argument("--rate-limited-after", type=int,
                   help="jobs after the first N fail as rate-limited")
    p.add_argument("--rate-limited-model", action="append", default=[], metavar="MODEL",
                   help="jobs for MODEL fail as rate-limited (repeatable)")
    p.add_argument("--cooldown-s", type=float, default=5.0, help="Retry-After of those failures")
    p.add_argument("--logged-out", action="store_true", help="register as logged out")
    p.add_argument("--cookie-expires-at", type=float,
                   help="Unix time reported as the first session cookie's expiry")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    config.stop_on_signals(stop.set, loop)  # the first only records; run_worker drains
    settings = LinkSettings.from_env({"send_heartbeats": not args.no_heartbeat})
    return await run_worker(FakeBackend(args), settings, stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config.setup_logging("fake_worker", args.profile_id)
        return asyncio.run(amain(args))
    except config.ConfigError as exc:
        print(f"bpool fake worker: {exc}", file=sys.stderr)
        return config.EX_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
