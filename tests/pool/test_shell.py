"""The real broker process over real ipc sockets, with raw DEALERs playing a worker and a front."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from bpool import protocol as p

from bpool.wire import sockets as _zmq
from bpool.config import REPO_ROOT

HEARTBEAT_S = 0.2
ENC = p.encoder()
SPEC = p.JobSpec("gemini-test", (p.ChatMessage("user", "hello"),), temperature=0.5)


def _str8(text: str) -> bytes:
    data = text.encode()
    return b"\xd9" + bytes([len(data)]) + data


def loose_chunk(job_id: str, seq: int, content: str, reasoning: str = "") -> bytes:
    """A valid Chunk frame in a non-canonical msgpack spelling (str8 strings, uint32 seq), so only
    a true byte-for-byte forward arrives unchanged: re-encoding would shorten it."""
    raw = b"\x95" + _str8("Chunk") + _str8(job_id) + b"\xce" + seq.to_bytes(4, "big")
    raw += _str8(content) + _str8(reasoning)
    assert p.decoder(p.WorkerToBroker).decode(raw) == p.Chunk(job_id, seq, content, reasoning)
    assert ENC.encode(p.Chunk(job_id, seq, content, reasoning)) != raw
    return raw


class Peer:
    """A DEALER speaking one direction of the protocol."""

    def __init__(self, ctx: zmq.Context, endpoint: str, incoming: object, name: str) -> None:
        self.sock = _zmq.dealer(ctx, endpoint, _zmq.new_identity(name))
        self.dec = p.decoder(incoming)

    def send_raw(self, frame: bytes, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:  # IMMEDIATE: refused until the connection is up
            try:
                self.sock.send(frame, zmq.NOBLOCK)
                return
            except zmq.Again:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def send(self, msg: object) -> bytes:
        raw = ENC.encode(msg)
        self.send_raw(raw)
        return raw

    def recv_raw(self, timeout_s: float = 5.0) -> bytes | None:
        if self.sock.poll(int(timeout_s * 1000)):
            return self.sock.recv()
        return None

    def expect(self, kind: type, timeout_s: float = 5.0) -> tuple[object, bytes]:
        """The next message of `kind`, skipping heartbeats; fails on anything else or on timeout."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            raw = self.recv_raw(left)
            if raw is None:
                break
            msg = self.dec.decode(raw)
            if isinstance(msg, p.Heartbeat) and kind is not p.Heartbeat:
                continue
            assert isinstance(msg, kind), f"expected {kind.__name__}, got {msg!r}"
            return msg, raw
        raise AssertionError(f"no {kind.__name__} within {timeout_s} s")


class Pool:
    def __init__(self, ctx: zmq.Context, run_dir: Path) -> None:
        self.ctx = ctx
        self.run_dir = run_dir
        self.peers: list[Peer] = []  # closed explicitly: a socket left to the GC hangs ctx.term
        self.front = self._peer(self.front_ep, p.BrokerToFront, "front")
        self._query = 0

    @property
    def front_ep(self) -> str:
        return f"ipc://{self.run_dir / 'front.sock'}"

    @property
    def worker_ep(self) -> str:
        return f"ipc://{self.run_dir / 'workers.sock'}"

    def _peer(self, endpoint: str, incoming: object, name: str) -> Peer:
        peer = Peer(self.ctx, endpoint, incoming, name)
        self.peers.append(peer)
        return peer

    def worker(self, name: str) -> Peer:
        return self._peer(self.worker_ep, p.BrokerToWorker, name)

    def close(self) -> None:
        for peer in self.peers:
            peer.sock.close(0)
        self.ctx.term()

    def register(self, name: str, models: tuple[str, ...] = ()) -> Peer:
        w = self.worker(name)
        w.send(p.Ready(p.PROTOCOL_VERSION, name, os.getpid(), "inc-" + name, "test", "", models))
        self.wait_status(lambda st: any(s.profile_id == name for s in st.workers))
        return w

    def status(self) -> p.PoolStatus:
        self._query += 1
        self.front.send(p.StatusQuery(self._query))
        while True:
            reply, _ = self.front.expect(p.StatusReply)
            if reply.query_id == self._query:
                return reply.status

    def wait_status(self, cond, timeout_s: float = 10.0) -> p.PoolStatus:
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status()
            if cond(st):
                return st
            assert time.monotonic() < deadline, f"status never matched: {st}"
            time.sleep(0.02)


def start_broker(tmp_path: Path, started: list[subprocess.Popen]) -> subprocess.Popen:
    env = dict(os.environ, BPOOL_RUN_DIR=str(tmp_path / "run"), PYTHONPATH=str(REPO_ROOT))
    for name in ("BPOOL_BROKER_FRONT", "BPOOL_BROKER_WORKERS"):
        env.pop(name, None)
    with open(tmp_path / "broker.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bpool.broker", "--heartbeat-interval-s", str(HEARTBEAT_S)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
        )
    started.append(proc)
    return proc


def ping(pool: Pool, nonce: int) -> str:
    """The broker id from a Pong (waiting for the broker to be up)."""
    pool.front.send(p.Ping(nonce))
    while True:
        pong, _ = pool.front.expect(p.Pong, timeout_s=20)
        if pong.nonce == nonce:
            return pong.broker_id


@pytest.fixture
def started(tmp_path):
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def broker(tmp_path, started):
    proc = start_broker(tmp_path, started)
    pool = Pool(zmq.Context(), tmp_path / "run")
    try:
        assert ping(pool, 1)
        yield proc, pool
    finally:
        pool.close()


def test_full_job_round_trip(broker):
    proc, pool = broker
    assert (pool.run_dir.stat().st_mode & 0o777) == 0o700
    w = pool.register("alice", models=("gemini-test",))
    pool.front.send(p.Submit("job-1", SPEC))
    assigned, _ = pool.front.expect(p.Assigned)
    assert assigned == p.Assigned("job-1", "alice")
    assign, _ = w.expect(p.Assign)
    assert assign == p.Assign("job-1", SPEC)
    w.send(p.Started("job-1"))
    sent = [loose_chunk("job-1", i, f"part {i} ✓", "why" * i) for i in range(3)]
    for raw in sent:
        w.send_raw(raw)
    sent.append(w.send(p.Done("job-1", "stop", p.Usage(3, 5, 8))))
    got = [pool.front.expect(p.Chunk)[1] for _ in range(3)] + [pool.front.expect(p.Done)[1]]
    assert got == sent  # forwarded byte for byte
    st = pool.status()
    assert st.workers[0].state == "busy"  # held until it says Idle
    w.send(p.Idle())
    st = pool.wait_status(lambda st: st.workers[0].state == "idle")
    assert st.workers[0].jobs_served == 1
    assert st.counters["jobs_done"] == 1 and st.counters["jobs_submitted"] == 1
    # The broker keeps a quiet worker alive with heartbeats.
    w.expect(p.Heartbeat, timeout_s=5 * HEARTBEAT_S + 2)


def test_unknown_identity_is_told_to_disconnect_then_registers(broker):
    _, pool = broker
    stranger = pool.worker("stranger")
    stranger.send(p.Heartbeat())
    msg, _ = stranger.expect(p.Disconnect)
    assert msg.reason
    stranger.send(p.Ready(p.PROTOCOL_VERSION, "stranger", 1, "inc"))
    pool.wait_status(lambda st: [s.profile_id for s in st.workers] == ["stranger"])
    pool.front.send(p.Submit("job-2", SPEC))
    assert stranger.expect(p.Assign)[0].job_id == "job-2"


def test_version_mismatch_is_refused(broker):
    _, pool = broker
    w = pool.worker("future")
    w.send(p.Ready(p.PROTOCOL_VERSION + 1, "future", 1, "inc"))
    msg, _ = w.expect(p.Disconnect)
    assert "version" in msg.reason
    assert pool.status().workers == ()


def test_garbage_does_not_crash_the_broker(broker):
    proc, pool = broker
    w = pool.register("bob")
    w.send_raw(b"\xc1 definitely not msgpack")
    w.expect(p.Disconnect)
    w.sock.send_multipart([b"two", b"frames"])
    w.expect(p.Disconnect)
    pool.front.send_raw(b"\x93\xa5Nope!\x01\x02")
    pool.front.sock.send_multipart([b"", b""])
    pool.front.send(p.Ping(42))
    assert pool.front.expect(p.Pong)[0].nonce == 42
    assert proc.poll() is None
    st = pool.status()
    assert st.counters["decode_errors"] == 4
    # Still registered and still served.
    pool.front.send(p.Submit("job-3", SPEC))
    assert w.expect(p.Assign)[0].job_id == "job-3"
    pool.front.expect(p.Assigned)
    w.send(p.Done("job-3"))
    assert pool.front.expect(p.Done)[0].job_id == "job-3"


def test_dead_busy_worker_fails_the_job_within_liveness(broker):
    _, pool = broker
    w = pool.register("carol")
    pool.front.send(p.Submit("job-4", SPEC))
    w.expect(p.Assign)
    pool.front.expect(p.Assigned)
    w.send(p.Started("job-4"))
    w.sock.close(0)
    # Found by liveness (3 heartbeats); the deadline only tells that from never (the job has
    # no other end here).
    failed, _ = pool.front.expect(p.Failed, timeout_s=30)
    assert failed.job_id == "job-4" and failed.error.kind == "worker_died"
    assert "carol" in failed.error.message
    # Whichever comes first: the next heartbeat finding the peer gone, or the silence.
    c = pool.status().counters
    assert c["workers_expired"] + c["workers_unreachable"] == 1


def test_queue_timeout_reaches_the_front(broker):
    _, pool = broker
    pool.front.send(p.Submit("job-5", SPEC, queue_timeout_s=0.3))
    failed, _ = pool.front.expect(p.Failed, timeout_s=10)
    assert failed.error.kind == "queue_timeout" and failed.error.status == 503
    assert failed.error.retry_after_s


def test_sigterm_exits_zero(broker):
    proc, pool = broker
    pool.register("dave")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_restarted_broker_makes_workers_register_again(broker, tmp_path, started):
    proc, pool = broker
    old_id = ping(pool, 2)
    w = pool.register("erin")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    start_broker(tmp_path, started)  # same run directory: binds over the stale socket files
    assert ping(pool, 3) != old_id  # the front can tell its in-flight jobs are lost
    # The worker's DEALER reconnects by itself; its next frame is unknown to the new broker.
    deadline = time.monotonic() + 20
    while True:
        try:
            w.send(p.Heartbeat())
            w.expect(p.Disconnect, timeout_s=0.5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the new broker never answered the old worker"
    w.send(p.Ready(p.PROTOCOL_VERSION, "erin", os.getpid(), "inc-erin-2"))
    pool.wait_status(lambda st: [s.profile_id for s in st.workers] == ["erin"])
    pool.front.send(p.Submit("job-6", SPEC))
    assert w.expect(p.Assign)[0].job_id == "job-6"


def test_second_broker_on_the_same_run_dir_refuses_to_start(broker, tmp_path, started):
    proc, pool = broker
    first_id = ping(pool, 5)
    second = start_broker(tmp_path, started)
    assert second.wait(20) == 1
    assert "another broker" in (tmp_path / "broker.log").read_text()
    assert ping(pool, 6) == first_id and proc.poll() is None


def test_a_duplicate_ready_does_not_send_the_job_twice(broker):
    """A raw DEALER repeats its Ready while holding a job: one Assign only, and the client's
    job still ends normally."""
    _, pool = broker
    w = pool.register("frank")
    pool.front.send(p.Submit("job-dup", SPEC))
    assert w.expect(p.Assign)[0].job_id == "job-dup"
    assert pool.front.expect(p.Assigned)[0].profile_id == "frank"
    w.send(p.Ready(p.PROTOCOL_VERSION, "frank", os.getpid(), "inc-frank", "test", "", ()))
    pool.wait_status(lambda st: st.counters["repeated_ready"] == 1)
    w.send(p.Done("job-dup", "stop"))
    done, _ = pool.front.expect(p.Done)
    assert done.job_id == "job-dup"
    # No second Assign reached the worker meanwhile (heartbeats only).
    while (raw := w.recv_raw(0.2)) is not None:
        assert isinstance(w.dec.decode(raw), p.Heartbeat)
