"""The session log in one SQLite file (the default): stdlib sqlite3 on a thread of its own.

Every call runs on one single-thread executor, so the connection is only ever used by that
thread and the event loop never waits on the disk. WAL mode lets other processes of the pool
read the file while one writes; SQLite gives the -wal and -shm files the database's own mode.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from bpool.config import ensure_private_dir
from bpool.sessions.log import (COLUMNS, SCHEMA_VERSION_DDL, SessionLog, SessionRecord,
                                check_limit, pending_migrations, record_from_row, row_of)

T = TypeVar("T")
BUSY_TIMEOUT_S = 10.0
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM sessions"


class SqliteSessionLog(SessionLog):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the session log is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the session log is not open")
        return self._db

    # -------------------------------------------------------------------------- lifecycle

    async def open(self, migrate_to: int | None = None) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="session-log")
        try:
            await self._call(self._open, migrate_to)
        except BaseException:
            await self.close()
            raise

    def _open(self, migrate_to: int | None) -> None:
        ensure_private_dir(self.path.parent)
        # Created 0600 before sqlite3 sees it (sqlite would use the umask), and tightened if an
        # older file is wider: the log names clients and hosts.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        if self.path.stat().st_mode & 0o077:
            self.path.chmod(0o600)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._wal()
        self._migrate(migrate_to)

    def _wal(self) -> None:
        # SQLite does not wait for a lock to change the journal mode: "database is locked" at
        # once while another process holds one (a log opened by two processes at the same
        # moment), so this waits here.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # on the log's own thread, not the event loop

    def _migrate(self, target: int | None) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
        try:
            db.execute(SCHEMA_VERSION_DDL)
            for version, _, statements in pending_migrations(self._version(), target):
                for sql in statements:
                    db.execute(sql)
                db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                           (version, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _version(self) -> int:
        row = self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    async def schema_version(self) -> int:
        return await self._call(self._version)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        executor.shutdown(wait=False)

    # -------------------------------------------------------------------------- records

    async def created(self, rec: SessionRecord) -> None:
        sql = (f"INSERT INTO sessions ({', '.join(COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in COLUMNS)})")
        await self._call(self._write, sql, row_of(rec))

    async def _update(self, session_id: str, fields: dict[str, Any]) -> bool:
        sets = ", ".join(f"{name} = ?" for name in fields)
        return await self._call(self._write, f"UPDATE sessions SET {sets} WHERE id = ?",
                                (*fields.values(), session_id)) > 0

    async def add_bytes(self, session_id: str, to_browser: int = 0, from_browser: int = 0) -> None:
        await self._call(self._write, "UPDATE sessions SET bytes_to_browser = bytes_to_browser"
                         " + ?, bytes_from_browser = bytes_from_browser + ? WHERE id = ?",
                         (int(to_browser), int(from_browser), session_id))

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        return self.db.execute(sql, params).rowcount  # autocommit: one statement, atomic

    async def get(self, session_id: str) -> SessionRecord | None:
        rows = await self._call(self._read, f"{_SELECT} WHERE id = ?", (session_id,))
        return record_from_row(rows[0]) if rows else None

    async def list(self, state: str | None = None, limit: int = 100) -> list[SessionRecord]:
        where, params = ("", ()) if state is None else (" WHERE state = ?", (state,))
        rows = await self._call(self._read, f"{_SELECT}{where} ORDER BY created_at DESC, "
                                "id DESC LIMIT ?", (*params, check_limit(limit)))
        return [record_from_row(r) for r in rows]

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()
