"""The session log: one row per browser session, what it was and how it ended.

SQLite under the run directory by default (one file, mode 0600); PostgreSQL when
BPOOL_DATABASE_URL is set, for pools whose front and session hosts should share one log. Both
backends take the same ordered migrations (`MIGRATIONS`), recorded in a `schema_version` table,
and are migrated when opened.

API keys are never stored: a session names its client by `key_id_of(key)`, a short keyed hash
that tells keys apart in the log and cannot be turned back into the key.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
from pathlib import Path
from typing import Any

import msgspec


class SessionRecord(msgspec.Struct, kw_only=True):
    id: str
    key_id: str
    host: str = ""
    profile: str | None = None
    record: str = "none"
    state: str = "pending"
    created_at: float
    connected_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    bytes_to_browser: int = 0
    bytes_from_browser: int = 0
    recording: str | None = None


FIELD_TYPES: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(SessionRecord)}
COLUMNS: tuple[str, ...] = tuple(FIELD_TYPES)

# The key of the key-id hash is fixed and public on purpose: the same API key gets the same id on
# every host and in every pool, so an operator can find a client's sessions from its key. It
# separates these ids from plain SHA-256 digests (no lookup in precomputed tables); a key short
# enough to guess stays guessable from its id, as it is from the API itself.
_KEY_ID_LABEL = b"bpool session key id v1"


def key_id_of(api_key: str | None) -> str:
    """A non-secret name for an API key: `k-` and 16 hex digits of HMAC-SHA256 (64 bits: no
    collisions among any realistic number of keys). No key (an open front) is `anonymous`."""
    if not api_key:
        return "anonymous"
    digest = hmac.new(_KEY_ID_LABEL, api_key.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return "k-" + digest.hexdigest()[:16]


# ------------------------------------------------------------------------------ the schema
# Ordered; never edit a released step, add one. The SQL is written once for both backends
# (types both understand: TEXT, BIGINT, DOUBLE PRECISION).

SCHEMA_VERSION_DDL = ("CREATE TABLE IF NOT EXISTS schema_version ("
                      "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "sessions", (
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            host TEXT NOT NULL DEFAULT '',
            profile TEXT,
            record TEXT NOT NULL DEFAULT 'none',
            state TEXT NOT NULL DEFAULT 'pending',
            created_at DOUBLE PRECISION NOT NULL,
            connected_at DOUBLE PRECISION,
            ended_at DOUBLE PRECISION,
            end_reason TEXT,
            bytes_to_browser BIGINT NOT NULL DEFAULT 0,
            bytes_from_browser BIGINT NOT NULL DEFAULT 0)""",
        "CREATE INDEX sessions_created ON sessions (created_at)",
    )),
    (2, "recording location, listing by state", (
        "ALTER TABLE sessions ADD COLUMN recording TEXT",
        "CREATE INDEX sessions_state_created ON sessions (state, created_at)",
    )),
)
LATEST_VERSION = MIGRATIONS[-1][0]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer bpool; this one must not write to it."""


def pending_migrations(current: int, target: int | None) -> list[tuple[int, str, tuple[str, ...]]]:
    """The steps that take a database at `current` to `target` (None: the latest)."""
    target = LATEST_VERSION if target is None else target
    if current > LATEST_VERSION:
        raise SchemaTooNew(f"the session log's schema is version {current}, newer than this "
                           f"bpool knows ({LATEST_VERSION}); upgrade bpool")
    return [m for m in MIGRATIONS if current < m[0] <= target]


# ------------------------------------------------------------------------------ the interface


class SessionLog(abc.ABC):
    """Where sessions are recorded. `open()` before use (creates and migrates the schema),
    `close()` after; every method is a coroutine and never blocks the event loop."""

    async def __aenter__(self) -> "SessionLog":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self, migrate_to: int | None = None) -> None:
        """Connect, create the schema and migrate it (to `migrate_to`, for tests of older
        schemas; the latest by default)."""

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def created(self, rec: SessionRecord) -> None:
        """A new session; its id must be new (sqlite3 / asyncpg integrity error otherwise)."""

    async def update(self, session_id: str, **fields: Any) -> bool:
        """Set some fields of a session; False if there is no such session. ValueError for a
        field that a record does not have (or `id`) or a value of the wrong type."""
        return await self._update(session_id, checked_fields(fields))

    @abc.abstractmethod
    async def _update(self, session_id: str, fields: dict[str, Any]) -> bool: ...

    @abc.abstractmethod
    async def add_bytes(self, session_id: str, to_browser: int = 0, from_browser: int = 0) -> None:
        """Add to the byte counters in the database itself (no read-modify-write race between
        relays)."""

    @abc.abstractmethod
    async def get(self, session_id: str) -> SessionRecord | None: ...

    @abc.abstractmethod
    async def list(self, state: str | None = None, limit: int = 100) -> list[SessionRecord]:
        """Sessions, newest first, optionally only those in `state`."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def checked_fields(fields: dict[str, Any]) -> dict[str, Any]:
    if not fields:
        raise ValueError("update() needs at least one field")
    out: dict[str, Any] = {}
    for name, val in fields.items():
        if name not in FIELD_TYPES or name == "id":
            raise ValueError(f"a session record has no updatable field {name!r}")
        try:
            out[name] = msgspec.convert(val, FIELD_TYPES[name])
        except msgspec.ValidationError as exc:
            raise ValueError(f"{name}={val!r}: {exc}") from None
    return out


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0, not {limit!r}")
    return limit


def record_from_row(row: Any) -> SessionRecord:
    return SessionRecord(**dict(zip(COLUMNS, tuple(row))))


def row_of(rec: SessionRecord) -> tuple[Any, ...]:
    return tuple(getattr(rec, c) for c in COLUMNS)


def open_log(run_dir: Path, database_url: str | None) -> SessionLog:
    """The session log of a pool: PostgreSQL at `database_url` when given (BPOOL_DATABASE_URL),
    else SQLite at `<run_dir>/sessions.sqlite3`. Call `await log.open()` next."""
    if database_url:
        from bpool.sessions.log_pg import PgSessionLog

        return PgSessionLog(database_url)
    from bpool.sessions.log_sqlite import SqliteSessionLog

    return SqliteSessionLog(Path(run_dir) / SQLITE_FILE)


SQLITE_FILE = "sessions.sqlite3"
