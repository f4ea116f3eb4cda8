"""The session log, the same tests on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg
import pytest

from bpool.sessions.log import (LATEST_VERSION, MIGRATIONS, SQLITE_FILE, SchemaTooNew,
                                SessionLog, SessionRecord, key_id_of, open_log)


@dataclass
class Backend:
    name: str
    make: Callable[[], SessionLog]
    # Plain SQL on the same database, past the code under test (to build older schemas).
    raw: Callable[[str], Awaitable[list[tuple[Any, ...]]]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    run_dir = tmp_path / "run"
    if request.param == "sqlite":
        async def raw_sqlite(sql: str) -> list[tuple[Any, ...]]:
            db = sqlite3.connect(run_dir / SQLITE_FILE, isolation_level=None)
            try:
                return db.execute(sql).fetchall()
            finally:
                db.close()
        return Backend("sqlite", lambda: open_log(run_dir, None), raw_sqlite)

    url = await request.getfixturevalue("postgres_server").new_database()

    async def raw_pg(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return Backend("postgresql", lambda: open_log(run_dir, url), raw_pg)


async def opened(backend: Backend, migrate_to: int | None = None) -> SessionLog:
    log = backend.make()
    await log.open(migrate_to)
    return log


def rec(sid: str, created_at: float, **kw: Any) -> SessionRecord:
    return SessionRecord(id=sid, key_id=key_id_of("sk-client"), created_at=created_at, **kw)


async def test_a_session_from_creation_to_its_end_survives_reopening(backend: Backend) -> None:
    log = await opened(backend)
    await log.created(rec("s1", 1000.5, profile="alice", record="har"))
    assert await log.update("s1", host="host-a", state="connected", connected_at=1001)
    await log.add_bytes("s1", to_browser=300, from_browser=4000)
    await log.add_bytes("s1", to_browser=20, from_browser=5)
    assert await log.update("s1", state="ended", ended_at=1060.25, end_reason="idle",
                            recording="file:recordings/s1/network.har")
    await log.close()

    async with backend.make() as log:
        got = await log.get("s1")
        assert got == SessionRecord(
            id="s1", key_id=key_id_of("sk-client"), host="host-a", profile="alice",
            record="har", state="ended", created_at=1000.5, connected_at=1001.0,
            ended_at=1060.25, end_reason="idle", bytes_to_browser=320, bytes_from_browser=4005,
            recording="file:recordings/s1/network.har")
        assert await log.get("nope") is None
        assert not await log.update("nope", state="ended")


async def test_list_is_newest_first_and_filters_by_state(backend: Backend) -> None:
    log = await opened(backend)
    try:
        for i, state in enumerate(["ended", "connected", "ended", "pending", "ended"]):
            await log.created(rec(f"s{i}", 100.0 + i, state=state))
        assert [r.id for r in await log.list()] == ["s4", "s3", "s2", "s1", "s0"]
        assert [r.id for r in await log.list(state="ended")] == ["s4", "s2", "s0"]
        assert [r.id for r in await log.list(state="ended", limit=2)] == ["s4", "s2"]
        assert await log.list(state="failed") == []
        with pytest.raises(ValueError):
            await log.list(limit=-1)
    finally:
        await log.close()


async def test_update_refuses_what_a_record_does_not_have(backend: Backend) -> None:
    log = await opened(backend)
    try:
        await log.created(rec("s1", 1.0))
        with pytest.raises(ValueError, match="api_key"):
            await log.update("s1", api_key="sk-secret")
        with pytest.raises(ValueError, match="'id'"):
            await log.update("s1", id="s2")
        with pytest.raises(ValueError, match="bytes_to_browser"):
            await log.update("s1", bytes_to_browser="many")
        with pytest.raises(ValueError):
            await log.update("s1")
        assert await log.get("s1") == rec("s1", 1.0)  # nothing was half-applied
        with pytest.raises(Exception):  # the id is the primary key
            await log.created(rec("s1", 2.0))
    finally:
        await log.close()


async def test_an_older_schema_is_migrated_on_open(backend: Backend) -> None:
    log = await opened(backend, migrate_to=1)
    assert await log.schema_version() == 1
    await log.close()
    # A row as the first schema had it (no recording column yet).
    await backend.raw("INSERT INTO sessions (id, key_id, host, state, created_at, ended_at, "
                      "bytes_to_browser) VALUES ('old', 'k-1', 'h', 'ended', 5.0, 9.0, 7)")
    with pytest.raises(Exception):
        await backend.raw("SELECT recording FROM sessions")

    log = await opened(backend)
    try:
        assert await log.schema_version() == LATEST_VERSION == MIGRATIONS[-1][0] >= 2
        got = await log.get("old")
        assert got is not None and (got.key_id, got.state, got.ended_at, got.recording,
                                    got.bytes_to_browser) == ("k-1", "ended", 9.0, None, 7)
        assert await log.update("old", recording="s3://recordings/old/video.webm")
        assert (await log.list(state="ended"))[0].recording == "s3://recordings/old/video.webm"
    finally:
        await log.close()
    versions = await backend.raw("SELECT version FROM schema_version ORDER BY version")
    assert [v[0] for v in versions] == [m[0] for m in MIGRATIONS]


async def test_processes_opening_at_once_migrate_once(backend: Backend) -> None:
    logs = [backend.make() for _ in range(3)]
    await asyncio.gather(*(log.open() for log in logs))
    try:
        await logs[0].created(rec("s1", 1.0))
        assert (await logs[2].get("s1")) == rec("s1", 1.0)
    finally:
        await asyncio.gather(*(log.close() for log in logs))
    versions = await backend.raw("SELECT version FROM schema_version ORDER BY version")
    assert [v[0] for v in versions] == [m[0] for m in MIGRATIONS]


async def test_a_new_sqlite_log_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = sqlite3.connect(run_dir / SQLITE_FILE, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process, mid-write, before any WAL switch
    log = open_log(run_dir, None)
    task = asyncio.create_task(log.open())
    try:
        done, _ = await asyncio.wait({task}, timeout=0.5)
        assert not done, f"open() did not wait for the lock: {task.exception()!r}"
        other.execute("COMMIT")
        await asyncio.wait_for(task, 30)
        assert await log.schema_version() == LATEST_VERSION
    finally:
        other.close()
        await log.close()


async def test_a_schema_from_a_newer_bpool_is_refused(backend: Backend) -> None:
    await (await opened(backend)).close()
    await backend.raw(f"INSERT INTO schema_version (version, applied_at) "
                      f"VALUES ({LATEST_VERSION + 1}, 0)")
    with pytest.raises(SchemaTooNew, match="upgrade bpool"):
        await opened(backend)


async def test_the_sqlite_file_is_private_to_its_owner(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = open_log(run_dir, None)
    await log.open()
    try:
        await log.created(rec("s1", 1.0))
    finally:
        await log.close()
    for path in run_dir.glob(SQLITE_FILE + "*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_a_key_id_names_a_key_without_holding_it() -> None:
    key = "sk-live-0123456789abcdef"
    kid = key_id_of(key)
    assert kid == key_id_of(key) and kid.startswith("k-") and len(kid) == 18
    assert key not in kid and key[3:11] not in kid
    assert kid != key_id_of(key + "x") and kid != key_id_of(key.upper())
    assert key_id_of(None) == key_id_of("") == "anonymous"
