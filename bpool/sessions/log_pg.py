"""The session log in PostgreSQL (BPOOL_DATABASE_URL), through an asyncpg connection pool.

Several processes may open the log at once (the front and every session host); migrations run
under a transaction-scoped advisory lock, so exactly one of them applies each step and the
others find it done.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from bpool.sessions.log import (COLUMNS, SCHEMA_VERSION_DDL, SessionLog, SessionRecord,
                                check_limit, pending_migrations, record_from_row, row_of)

# pg_advisory_xact_lock key of bpool's migrations (any constant shared by all bpool processes).
_MIGRATION_LOCK = 0x62706F6F6C  # "bpool"
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM sessions"


class PgSessionLog(SessionLog):
    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self._url = url  # may hold a password: never logged, not in repr
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return "PgSessionLog()"

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the session log is not open")
        return self._pool

    async def open(self, migrate_to: int | None = None) -> None:
        if self._pool is not None:
            return
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._max,
                                               command_timeout=30)
        try:
            await self._migrate(migrate_to)
        except BaseException:
            await self.close()
            raise

    async def _migrate(self, target: int | None) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(SCHEMA_VERSION_DDL)
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            for version, _, statements in pending_migrations(int(current), target):
                for sql in statements:
                    await conn.execute(sql)
                await conn.execute("INSERT INTO schema_version (version, applied_at) "
                                   "VALUES ($1, $2)", version, time.time())

    async def schema_version(self) -> int:
        return int(await self.pool.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def created(self, rec: SessionRecord) -> None:
        marks = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
        await self.pool.execute(f"INSERT INTO sessions ({', '.join(COLUMNS)}) VALUES ({marks})",
                                *row_of(rec))

    async def _update(self, session_id: str, fields: dict[str, Any]) -> bool:
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, 2))
        status = await self.pool.execute(f"UPDATE sessions SET {sets} WHERE id = $1",
                                         session_id, *fields.values())
        return status != "UPDATE 0"

    async def add_bytes(self, session_id: str, to_browser: int = 0, from_browser: int = 0) -> None:
        await self.pool.execute("UPDATE sessions SET bytes_to_browser = bytes_to_browser + $2, "
                                "bytes_from_browser = bytes_from_browser + $3 WHERE id = $1",
                                session_id, int(to_browser), int(from_browser))

    async def get(self, session_id: str) -> SessionRecord | None:
        row = await self.pool.fetchrow(f"{_SELECT} WHERE id = $1", session_id)
        return None if row is None else record_from_row(row)

    async def list(self, state: str | None = None, limit: int = 100) -> list[SessionRecord]:
        limit = check_limit(limit)
        if state is None:
            rows = await self.pool.fetch(f"{_SELECT} ORDER BY created_at DESC, id DESC "
                                         "LIMIT $1", limit)
        else:
            rows = await self.pool.fetch(f"{_SELECT} WHERE state = $1 ORDER BY created_at DESC, "
                                         "id DESC LIMIT $2", state, limit)
        return [record_from_row(r) for r in rows]
