"""Seeded fuzzing of POST /v1/chat/completions on a real front (TCP on 127.0.0.1, scripted broker
that answers every job at once). Every reply is either a served answer (and the broker got
exactly that one job) or an OpenAI-shaped 4xx (and the broker got no job); clients that vanish
mid-stream get their job cancelled; afterwards nothing is left in flight."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, Callable

from bpool.protocol import Assigned, Cancel, Chunk, Done, Submit
from support import ScriptedBroker
from front_server import assert_openai_4xx, post_bytes, raw_request, start_front, wait_for

SEED = 20261130
CASES = 240
MAX_BODY = 64 * 1024
VANISH = "vanish-now"


class AnsweringBroker:
    """Answers each Submit with Assigned, one Chunk and Done, except jobs whose prompt asks the
    client to vanish: those get a Chunk and then stay open until cancelled."""

    def __init__(self, broker: ScriptedBroker) -> None:
        self.broker = broker
        self.submits: list[Submit] = []
        self.cancels: list[str] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            msg = await self.broker.inbox.get()
            if isinstance(msg, Submit):
                self.submits.append(msg)
                self.broker.send(Assigned(msg.job_id, "alice"))
                self.broker.send(Chunk(msg.job_id, 0, "answer " * 50))
                if VANISH not in msg.spec.messages[-1].content:
                    self.broker.send(Done(msg.job_id, "stop", None))
            elif isinstance(msg, Cancel):
                self.cancels.append(msg.job_id)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def valid(rng: random.Random) -> dict[str, Any]:
    return {"model": rng.choice(["m", "gemini-x"]),
            "messages": [{"role": "user", "content": f"case {rng.random()}"}],
            "stream": rng.random() < 0.3}


def junk_value(rng: random.Random) -> Any:
    return rng.choice([None, True, -1, 0, 2**64, -(2**70), 10**400, 1e308, "x", "", [], {},
                       [1, "a"], {"role": "user"}, "é", 3.5])


def mutate_field(rng: random.Random) -> bytes:
    body = valid(rng)
    path = rng.choice(["model", "messages", "stream", "temperature", "top_p", "max_tokens",
                       "max_completion_tokens", "stop", "n", "stream_options", "msg.role",
                       "msg.content", "reasoning_effort"])
    if path.startswith("msg."):
        body["messages"][0][path[4:]] = junk_value(rng)
    else:
        body[path] = junk_value(rng)
    return json.dumps(body).encode()


def truncated(rng: random.Random) -> bytes:
    data = json.dumps(valid(rng)).encode()
    return data[: rng.randrange(0, len(data) - 1)]


def flipped(rng: random.Random) -> bytes:
    data = bytearray(json.dumps(valid(rng)).encode())
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def bad_utf8(rng: random.Random) -> bytes:
    data = json.dumps(valid(rng)).encode()
    cut = data.index(b"case ") + 5
    bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80"])
    return data[:cut] + bad + data[cut:]


def deep(rng: random.Random) -> bytes:
    depth = rng.choice([200, 5_000, 60_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    data = json.dumps(valid(rng)).encode()
    return data[:-1] + b', "metadata": ' + opener * depth + b"1" + closer * depth + b"}"


def huge_number(rng: random.Random) -> bytes:
    body = valid(rng)
    body[rng.choice(["max_tokens", "max_completion_tokens", "temperature", "n"])] = rng.choice(
        [2**63, 2**64 - 1, 2**64, 10**rng.randint(20, 4000), -(2**64)])
    return json.dumps(body).encode()


def huge_body(rng: random.Random) -> bytes:
    return json.dumps(dict(valid(rng), filler="z" * (MAX_BODY + rng.randint(1, 5000)))).encode()


BODIES: list[Callable[[random.Random], bytes]] = [
    mutate_field, truncated, flipped, bad_utf8, deep, huge_number, huge_body]


def headers_for(rng: random.Random) -> dict[str, str]:
    roll = rng.random()
    if roll < 0.1:
        return {"X-Filler": "h" * rng.choice([9_000, 30_000])}
    if roll < 0.2:
        return {"Content-Type": rng.choice(["text/plain", "application/x-www-form-urlencoded",
                                            "multipart/form-data; boundary=x", "text/json"])}
    if roll < 0.25:
        return {"Origin": rng.choice(["https://evil.example", "null"])}
    return {}


async def test_fuzz_the_chat_endpoint(tmp_path: Path, scripted_broker: ScriptedBroker) -> None:
    rng = random.Random(SEED)
    front = await start_front(tmp_path, scripted_broker, max_body_bytes=MAX_BODY,
                              write_timeout_s=2.0, body_timeout_s=2.0)
    answering = AnsweringBroker(scripted_broker)
    served = 0
    statuses: set[int] = set()
    try:
        for case in range(CASES):
            body = rng.choice(BODIES)(rng)
            headers = headers_for(rng)
            before = len(answering.submits)
            reply = await raw_request(front.port, post_bytes(body, headers), timeout_s=10)
            where = f"case {case}: {body[:120]!r} {list(headers)}"
            statuses.add(reply.status)
            if reply.status == 200:
                served += 1
                assert len(answering.submits) == before + 1, where
            else:
                assert_openai_4xx(reply.status, json.loads(reply.body), None)
                assert len(answering.submits) == before, where
        # Streaming clients that vanish after the first bytes: each job is cancelled.
        for _ in range(5):
            data = json.dumps(dict(valid(rng), stream=True, messages=[
                {"role": "user", "content": VANISH}])).encode()
            reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
            writer.write(post_bytes(data))
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
            writer.close()
            job = answering.submits[-1].job_id
            await wait_for(lambda: job in answering.cancels, 5, "the vanished client's Cancel")
        await wait_for(lambda: not front.link.jobs, 5, "no job left in flight")
        # The generator reaches both outcomes and every kind of refusal.
        assert 0 < served < CASES
        assert {400, 403, 413, 415} <= statuses, statuses
    finally:
        await answering.close()
        await front.runner.cleanup()
