"""Shared fixtures: whole pools of real processes (bpool.testing.pool) and, for front-level tests,
a scripted in-process broker that plays the broker's side of the front protocol."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import weakref
from asyncio import base_subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import aiohttp
import pytest

from bpool.testing.pool import Pool
from support import TEST_ENV, PoolFactory, ScriptedBroker

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


# ---------------------------------------------------------------- subprocesses left behind
#
# A test whose event loop closes while one of its asyncio subprocesses (a Playwright driver, a
# browser, ffmpeg) is still attached can never reap it: the process may live on, and its pipes
# surface only as an unattributed ResourceWarning when the garbage collector finds them at the
# end of the run. Every asyncio subprocess transport is tracked, and a test that leaves one open
# on a closed loop fails its teardown with the command line; the process is killed.

_subprocess_transports: weakref.WeakSet[Any] = weakref.WeakSet()
_transport_init = base_subprocess.BaseSubprocessTransport.__init__


def _tracked_transport_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _transport_init(self, *args, **kwargs)
    _subprocess_transports.add(self)


base_subprocess.BaseSubprocessTransport.__init__ = _tracked_transport_init  # type: ignore


def orphaned_subprocesses() -> list[str]:
    """Subprocess transports still open on a closed loop; each is killed and forgotten."""
    found = []
    for t in list(_subprocess_transports):
        if t.is_closing() or not t._loop.is_closed():
            continue
        _subprocess_transports.discard(t)
        proc = t._proc
        args = proc.args if proc is not None else "?"
        found.append(f"pid {t._pid}: {' '.join(map(str, args))[:300]}")
        for proto in t._pipes.values():  # the loop that would close these is gone
            pipe = getattr(proto, "pipe", None)
            if getattr(pipe, "_pipe", None) is not None:
                pipe._pipe.close()
                pipe._pipe = None
        t._closed = True
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    result = yield
    left = orphaned_subprocesses()
    if left:
        raise AssertionError("the test's event loop closed with its subprocesses still "
                             "attached (never stopped or waited for):\n  " + "\n  ".join(left))
    return result


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


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


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def scripted_broker(tmp_path: Path) -> Any:
    broker = ScriptedBroker(f"ipc://{tmp_path}/front.sock")
    yield broker
    await broker.close()
