"""A scripted broker that answers every Submit like a worker would: `reply(spec)` gives the
reasoning and the answer text, sent as Assigned, a few Chunks and Done with usage. With a real
front (front_server.start_front) this lets the official SDKs run whole conversations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bpool.protocol import Assigned, Chunk, Done, JobSpec, NativeCall, Submit, Usage
from bpool.sim.instructed import instructed_answer
from bpool.studio.prompt import render_prompt
from support import ScriptedBroker
from front_server import start_front

Reply = Callable[[JobSpec], tuple[str, str]]


def follower(spec: JobSpec) -> tuple[str, str]:
    """A model that follows the front's instructions (the simulator's), else echoes."""
    prompt = render_prompt(spec.messages)
    said = instructed_answer(prompt)
    last = next((m.content for m in reversed(spec.messages) if m.role == "user"), "")
    return f"thinking about {len(prompt)} characters", said if said is not None else f"echo: {last}"


class ModelBroker:
    def __init__(self, broker: ScriptedBroker) -> None:
        self.broker = broker
        self.reply: Reply = follower
        self.specs: list[JobSpec] = []
        self.native: tuple[NativeCall, ...] = ()  # function calls the page made itself
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            msg = await self.broker.inbox.get()
            if not isinstance(msg, Submit):
                continue
            self.specs.append(msg.spec)
            reasoning, text = self.reply(msg.spec)
            b, job = self.broker, msg.job_id
            b.send(Assigned(job, "alice"))
            seq = 0
            if reasoning:
                b.send(Chunk(job, seq, reasoning=reasoning))
                seq += 1
            step = max(1, len(text) // 3)
            for i in range(0, len(text), step):
                b.send(Chunk(job, seq, content=text[i:i + step]))
                seq += 1
            if self.native:
                b.send(Chunk(job, seq, tool_calls=self.native))
                seq += 1
            thought = len(reasoning) // 4
            b.send(Done(job, "stop", Usage(10, seq + thought, 10 + seq + thought, thought)))


@pytest.fixture
async def model(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    broker = ScriptedBroker(f"ipc://{tmp_path}/front.sock")
    # Generous liveness: these tests are about formats, not about a slow loaded machine.
    kw = {"heartbeat_interval_s": 0.5, "heartbeat_liveness": 20, **getattr(request, "param", {})}
    front = await start_front(tmp_path, broker, **kw)
    mb = ModelBroker(broker)
    mb.front = front  # type: ignore[attr-defined]
    try:
        yield mb
    finally:
        mb.task.cancel()
        await front.runner.cleanup()
        await broker.close()
