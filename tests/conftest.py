"""Shared fixtures: whole pools of real processes (bpool.testing.pool) and, for front-level tests,
a scripted in-process broker that plays the broker's side of the front protocol."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import aiohttp
import msgspec
import pytest
import zmq
import zmq.asyncio

from bpool import protocol

from bpool.wire import sockets as _zmq
from bpool.protocol import FrontToBroker, Ping, PoolStatus, Pong, StatusQuery, StatusReply
from bpool.testing.pool import Pool

# Fast heartbeats keep failure detection (3 x 0.5 s) well inside the tests' bounds.
TEST_ENV = {
    "BPOOL_HEARTBEAT_INTERVAL_S": "0.5",
    "BPOOL_HEARTBEAT_LIVENESS": "3",
    "BPOOL_DRAIN_TIMEOUT_S": "5",
    "BPOOL_LOG_LEVEL": "INFO",
}


# ---------------------------------------------------------------------------- skip policy
#
# A test that needs Chromium or supervisord carries `@pytest.mark.chromium` /
# `@pytest.mark.supervisord` (or the module-level `pytestmark`) and is skipped, with the reason
# shown, when the binary is missing. With BPOOL_TESTS_NO_SKIPS=1 (set by .ci/run on CI, which has
# both) any skipped test fails the run: a missing binary there must not pass as green.

CHROMIUM = Path(os.environ.get("BPOOL_CHROMIUM_PATH") or "/usr/bin/chromium")


def supervisord_path() -> str | None:
    here = Path(sys.executable).with_name("supervisord")
    return str(here) if here.exists() else shutil.which("supervisord")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--repeat", type=int, default=1, metavar="N",
                     help="run each selected test N times (to show a test is not flaky)")


@pytest.fixture
def _repeat(request: pytest.FixtureRequest) -> int:
    return request.param


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    n = metafunc.config.getoption("repeat")
    if n > 1:
        metafunc.fixturenames.append("_repeat")
        metafunc.parametrize("_repeat", range(n), indirect=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chromium: needs a Chromium binary (skipped without one)")
    config.addinivalue_line("markers", "supervisord: needs supervisord (skipped without it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = {"chromium": None if CHROMIUM.exists() else f"no Chromium at {CHROMIUM}",
               "supervisord": None if supervisord_path() else "no supervisord binary"}
    for item in items:
        for name, reason in missing.items():
            if reason and item.get_closest_marker(name) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("BPOOL_TESTS_NO_SKIPS") == "1" and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if os.environ.get("BPOOL_TESTS_NO_SKIPS") == "1" and _skipped:
        terminalreporter.section("skipped tests are failures here (BPOOL_TESTS_NO_SKIPS=1)")
        for nodeid in _skipped:
            terminalreporter.line(f"SKIPPED {nodeid}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


PoolFactory = Callable[..., Pool]


@pytest.fixture
def make_pool(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PoolFactory]:
    """Start broker + front + fake workers as real processes and wait until they are idle.

    make_pool(["a", "b"]) or make_pool({"a": ["--latency-s", "1"], "b": []}); every fake worker
    records its jobs to `pool.base_dir / "jobs.jsonl"` (see `records`)."""
    pools: list[Pool] = []

    def make(
        workers: Sequence[str] | Mapping[str, Sequence[str]] = ("a", "b", "c"),
        *, worker_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
        front_env: Mapping[str, str] | None = None, idle: int | None = None,
    ) -> Pool:
        pool = Pool(tmp_path / f"pool{len(pools)}", env={**TEST_ENV, **(env or {})})
        pools.append(pool)
        pool.start_broker()
        pool.start_front(env=dict(front_env or {}))
        per_worker = workers if isinstance(workers, Mapping) else {w: [] for w in workers}
        record = str(pool.base_dir / "jobs.jsonl")
        for profile, args in per_worker.items():
            pool.start_fake_worker(profile, "--record", record, *worker_args, *args)
        pool.wait_idle(len(per_worker) if idle is None else idle)
        return pool

    yield make
    for pool in pools:
        if _failed(request):
            print(pool.log_tails(60))
        pool.close()


def records(pool: Pool) -> list[dict[str, Any]]:
    path = pool.base_dir / "jobs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def chat_body(text: str = "hello", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}],
            "stream": stream, **extra}


async def read_sse(resp: aiohttp.ClientResponse) -> list[Any]:
    """Every `data:` event of a stream, JSON-decoded ("[DONE]" stays a string)."""
    events = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ---------------------------------------------------------------------------- scripted broker


class ScriptedBroker:
    """The broker side of the front protocol, driven by the test: answers Ping (unless told not
    to) and StatusQuery (with `status`), and queues every other message for the test."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = _zmq.router(self.ctx, endpoint)
        self.enc = protocol.encoder()
        self.dec = protocol.decoder(FrontToBroker)
        self.broker_id = "broker-1"
        self.answer_pings = True
        self.answer_status = True
        self.status = PoolStatus("broker-1", (), 0, {})
        self.front: bytes | None = None
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            ident, frame = await self.sock.recv_multipart()
            self.front = ident
            msg = self.dec.decode(frame)
            if isinstance(msg, Ping):
                if self.answer_pings:
                    self.send(Pong(msg.nonce, self.broker_id))
            elif isinstance(msg, StatusQuery):
                if self.answer_status:
                    self.send(StatusReply(msg.query_id, self.status))
            else:
                self.inbox.put_nowait(msg)

    def send(self, msg: msgspec.Struct) -> None:
        assert self.front is not None, "the front has not said anything yet"
        self.sock.send_multipart([self.front, self.enc.encode(msg)])

    async def expect(self, kind: type, timeout_s: float = 3.0) -> Any:
        """The next queued message, which must be of type `kind`."""
        msg = await asyncio.wait_for(self.inbox.get(), timeout_s)
        assert isinstance(msg, kind), f"expected {kind.__name__}, got {msg!r}"
        return msg

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
async def scripted_broker(tmp_path: Path) -> Any:
    broker = ScriptedBroker(f"ipc://{tmp_path}/front.sock")
    yield broker
    await broker.close()
