"""The worker side of the protocol, against a raw ROUTER playing the broker."""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq
import zmq.asyncio

from bpool import protocol as p
from bpool.worker.link import BackendDead, JobError, LinkSettings, run_worker


class ScriptedBackend:
    """Emits `chunks` pieces, waiting on `gate` before each, so tests control the pace."""

    def __init__(self, chunks: int = 3):
        self.profile_id = "alice"
        self.engine = "test"
        self.account = "alice@example.test"
        self.models = ("m1",)
        self.unusable = None
        self.chunks = chunks
        self.gate = asyncio.Event()
        self.gate.set()
        self.resets = 0
        self.cancelled = 0
        self.fail_with: Exception | None = None
        self.running = asyncio.Event()

    async def run(self, job):
        self.running.set()
        try:
            for i in range(self.chunks):
                await self.gate.wait()
                if self.fail_with is not None:
                    raise self.fail_with
                job.emit(f"piece{i} ")
            return "stop", p.Usage(1, self.chunks, 1 + self.chunks)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def reset(self):
        self.resets += 1


class FakeBroker:
    def __init__(self, endpoint: str):
        self.ctx = zmq.asyncio.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.enc = p.encoder()
        self.dec = p.decoder(p.WorkerToBroker)

    async def recv(self, timeout: float = 5.0, skip_heartbeats: bool = True):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "timed out waiting for a worker message"
            ident, frame = await asyncio.wait_for(self.sock.recv_multipart(), left)
            msg = self.dec.decode(frame)
            if skip_heartbeats and isinstance(msg, p.Heartbeat):
                continue
            return ident, msg

    async def send(self, ident: bytes, msg) -> None:
        await self.sock.send_multipart([ident, self.enc.encode(msg)])

    def close(self):
        self.sock.close(linger=0)


@pytest.fixture
def endpoint(tmp_path):
    return f"ipc://{tmp_path}/w.sock"


@pytest.fixture
async def broker(endpoint):
    b = FakeBroker(endpoint)
    yield b
    b.close()


def settings(endpoint: str, **kw) -> LinkSettings:
    kw.setdefault("heartbeat_interval_s", 0.1)
    kw.setdefault("heartbeat_liveness", 50)  # the fake broker does not heartbeat
    kw.setdefault("drain_timeout_s", 5.0)
    return LinkSettings(endpoint=endpoint, **kw)


SPEC = p.JobSpec("m1", (p.ChatMessage("user", "hi"),))


async def start(backend, endpoint, **kw):
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(backend, settings(endpoint, **kw), stop))
    return stop, task


async def test_registers_runs_a_job_and_goes_idle_only_after_reset(broker, endpoint):
    backend = ScriptedBackend(chunks=3)
    stop, task = await start(backend, endpoint)
    ident, ready = await broker.recv()
    assert isinstance(ready, p.Ready)
    assert (ready.version, ready.profile_id, ready.models) == (p.PROTOCOL_VERSION, "alice", ("m1",))
    await broker.send(ident, p.Assign("j1", SPEC))
    seen = [await broker.recv() for _ in range(6)]
    kinds = [type(m).__name__ for _, m in seen]
    assert kinds == ["Started", "Chunk", "Chunk", "Chunk", "Done", "Idle"]
    assert [m.seq for _, m in seen if isinstance(m, p.Chunk)] == [0, 1, 2]
    assert seen[4][1].usage == p.Usage(1, 3, 4)
    assert backend.resets == 1
    stop.set()
    _, bye = await broker.recv()
    assert isinstance(bye, p.Goodbye)
    assert await asyncio.wait_for(task, 5) == 0


async def test_heartbeats_continue_while_busy(broker, endpoint):
    backend = ScriptedBackend(chunks=2)
    backend.gate.clear()  # the job blocks before its first chunk
    stop, task = await start(backend, endpoint)
    ident, _ = await broker.recv()
    await broker.send(ident, p.Assign("j1", SPEC))
    beats = 0
    while beats < 3:
        _, msg = await broker.recv(skip_heartbeats=False)
        beats += isinstance(msg, p.Heartbeat)
        await broker.send(ident, p.Heartbeat())  # keep the worker's view of us alive
    backend.gate.set()
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0


async def test_cancel_answers_done_cancelled_then_idle(broker, endpoint):
    backend = ScriptedBackend(chunks=2)
    backend.gate.clear()
    stop, task = await start(backend, endpoint)
    ident, _ = await broker.recv()
    await broker.send(ident, p.Assign("j1", SPEC))
    await asyncio.wait_for(backend.running.wait(), 5)
    await broker.send(ident, p.Cancel("j1"))
    _, done = await broker.recv()
    assert done == p.Done("j1", "cancelled", None)
    _, idle = await broker.recv()
    assert isinstance(idle, p.Idle)
    assert (backend.cancelled, backend.resets) == (1, 1)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0


async def test_job_error_is_reported_with_output_flag(broker, endpoint):
    backend = ScriptedBackend(chunks=1)
    backend.fail_with = JobError(p.error("rate_limited", "quota", retry_after_s=60))
    stop, task = await start(backend, endpoint)
    ident, _ = await broker.recv()
    await broker.send(ident, p.Assign("j1", SPEC))
    _, failed = await broker.recv()
    assert isinstance(failed, p.JobFailed)
    assert (failed.error.kind, failed.error.status, failed.output_sent) == ("rate_limited", 429, False)
    _, idle = await broker.recv()
    assert isinstance(idle, p.Idle)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0


async def test_disconnect_makes_the_worker_register_again(broker, endpoint):
    stop, task = await start(ScriptedBackend(), endpoint)
    ident, ready1 = await broker.recv()
    # Acknowledged: Ready stops repeating (one may already be on its way), heartbeats follow.
    await broker.send(ident, p.Heartbeat())
    _, msg = await broker.recv(skip_heartbeats=False)
    while isinstance(msg, p.Ready):
        _, msg = await broker.recv(skip_heartbeats=False)
    for _ in range(3):
        assert isinstance(msg, p.Heartbeat), msg
        _, msg = await broker.recv(skip_heartbeats=False)
    # Only the Disconnect makes it register again.
    await broker.send(ident, p.Disconnect("who are you"))
    ident2, ready2 = await broker.recv(timeout=30)
    assert isinstance(ready2, p.Ready) and ready2.incarnation == ready1.incarnation
    assert ident2 == ident  # on the same socket: not the fresh one a silent broker would cause
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0


async def test_silent_broker_means_new_socket_new_identity(broker, endpoint):
    stop, task = await start(ScriptedBackend(), endpoint, heartbeat_liveness=3)
    ident1, _ = await broker.recv()
    # Say nothing: after interval x liveness the worker must reconnect under a new identity.
    ident2, ready = await broker.recv(timeout=3)
    while ident2 == ident1:
        ident2, ready = await broker.recv(timeout=3)
    assert isinstance(ready, p.Ready)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0


async def test_dead_backend_fails_job_says_goodbye_exits_nonzero(broker, endpoint):
    backend = ScriptedBackend(chunks=2)
    backend.fail_with = BackendDead("target closed")
    stop, task = await start(backend, endpoint)
    ident, _ = await broker.recv()
    await broker.send(ident, p.Assign("j1", SPEC))
    _, failed = await broker.recv()
    assert isinstance(failed, p.JobFailed) and failed.error.kind == "broken"
    _, bye = await broker.recv()
    assert isinstance(bye, p.Goodbye)
    assert await asyncio.wait_for(task, 5) == 1


async def test_stop_drains_the_running_job_before_goodbye_exit(broker, endpoint):
    backend = ScriptedBackend(chunks=2)
    backend.gate.clear()
    stop, task = await start(backend, endpoint)
    ident, _ = await broker.recv()
    await broker.send(ident, p.Assign("j1", SPEC))
    await asyncio.wait_for(backend.running.wait(), 5)
    stop.set()
    _, bye = await broker.recv()
    assert isinstance(bye, p.Goodbye)
    assert not task.done()
    backend.gate.set()
    kinds = []
    while not kinds or kinds[-1] != "Done":
        _, m = await broker.recv()
        kinds.append(type(m).__name__)
        await broker.send(ident, p.Heartbeat())
    assert kinds == ["Chunk", "Chunk", "Done"] or kinds == ["Started", "Chunk", "Chunk", "Done"]
    assert await asyncio.wait_for(task, 5) == 0


async def test_cancel_right_behind_assign_is_not_lost(broker, endpoint):
    backend = ScriptedBackend(chunks=2)
    backend.gate.clear()
    stop, task = await start(backend, endpoint)
    ident, _ = await broker.recv()
    await broker.send(ident, p.Assign("j1", SPEC))
    await broker.send(ident, p.Cancel("j1"))
    _, done = await broker.recv()
    assert done == p.Done("j1", "cancelled", None)
    _, idle = await broker.recv()
    assert isinstance(idle, p.Idle)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0


async def test_timings_file_records_phases_in_order(broker, endpoint, tmp_path):
    path = tmp_path / "timings.jsonl"
    backend = ScriptedBackend(chunks=2)
    stop, task = await start(backend, endpoint, timings_path=str(path))
    ident, _ = await broker.recv()
    await broker.send(ident, p.Assign("j1", SPEC))
    while not isinstance((await broker.recv())[1], p.Idle):
        pass
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    import json
    (line,) = [json.loads(x) for x in path.read_text().splitlines()]
    assert (line["job_id"], line["outcome"]) == ("j1", "Done")
    assert 0 < line["received"] <= line["started"] <= line["first_chunk"] <= line["last_chunk"] <= line["idle"]


async def test_a_draining_worker_keeps_heartbeating(broker, endpoint):
    backend = ScriptedBackend(chunks=1)
    backend.gate.clear()  # the job is silent: no chunk until the gate opens
    stop, task = await start(backend, endpoint)
    ident, _ = await broker.recv()
    await broker.send(ident, p.Assign("j1", SPEC))
    await asyncio.wait_for(backend.running.wait(), 5)
    stop.set()
    _, bye = await broker.recv()
    assert isinstance(bye, p.Goodbye)
    beats = 0
    while beats < 3:  # interval 0.1 s: three beats while the job is still silent
        _, msg = await broker.recv(skip_heartbeats=False)
        assert isinstance(msg, p.Heartbeat), msg
        beats += 1
    backend.gate.set()
    assert await asyncio.wait_for(task, 5) == 0
