"""The session log as placement uses it: the persistent log (bpool/sessions/log.py) when it is
present, else an in-memory stand-in with the same calls.

SEAM: `bpool.sessions.log` (open_log, SessionRecord) is a separate library. Until it exists,
`MemoryLog` keeps the records of this broker's lifetime only; `open_book` picks the real one as
soon as it can be imported, and `to_info` reads its records by field name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec

from bpool.sessions import protocol as sp

log = logging.getLogger("bpool.sessions")

FIELDS = tuple(sp.SessionInfo.__struct_fields__)


class MemoryLog:
    """The log's interface over a dict: what placement needs when no persistent log exists."""

    persistent = False

    def __init__(self) -> None:
        self.rows: dict[str, sp.SessionInfo] = {}

    async def open(self) -> None:
        pass

    async def created(self, rec: sp.SessionInfo) -> None:
        self.rows[rec.id] = rec

    async def update(self, session_id: str, **fields: Any) -> None:
        row = self.rows.get(session_id)
        if row is not None:
            self.rows[session_id] = msgspec.structs.replace(
                row, **{k: v for k, v in fields.items() if k in FIELDS})

    async def get(self, session_id: str) -> sp.SessionInfo | None:
        return self.rows.get(session_id)

    async def list(self, state: str | None = None, limit: int = 100) -> list[sp.SessionInfo]:
        rows = [r for r in reversed(self.rows.values()) if state is None or r.state == state]
        return rows[:limit]

    async def close(self) -> None:
        pass


def open_book(run_dir: Path) -> Any:
    try:
        from bpool.sessions.log import open_log  # type: ignore[import-not-found]
    except ImportError:
        log.warning("session log library not present: sessions are logged in memory only")
        return MemoryLog()
    from bpool import config

    url = config.value("BPOOL_DATABASE_URL")
    return open_log(run_dir, url or None)


def to_record(info: sp.SessionInfo) -> Any:
    """What `log.created` takes: the library's SessionRecord when present."""
    try:
        from bpool.sessions.log import SessionRecord  # type: ignore[import-not-found]
    except ImportError:
        return info
    names = set(SessionRecord.__struct_fields__)
    fields = {k: getattr(info, k) for k in FIELDS if k in names}
    fields["key_id"] = info.key_id or "anonymous"
    return SessionRecord(**fields)


def to_info(rec: Any) -> sp.SessionInfo | None:
    """A log record as the front shows it (fields the record lacks take their defaults)."""
    if rec is None or isinstance(rec, sp.SessionInfo):
        return rec
    get = rec.get if isinstance(rec, dict) else (lambda k, d=None: getattr(rec, k, d))
    return sp.SessionInfo(
        id=get("id") or get("session_id"), state=get("state", "ended"), host=get("host") or "",
        ws_url="", created_at=float(get("created_at") or 0.0),
        expires_at=float(get("expires_at") or 0.0), timeout_s=float(get("timeout_s") or 0.0),
        idle_timeout_s=float(get("idle_timeout_s") or 0.0), record=get("record") or "none",
        connected_at=get("connected_at"), ended_at=get("ended_at"), end_reason=get("end_reason"),
        bytes_to_browser=int(get("bytes_to_browser") or 0),
        bytes_from_browser=int(get("bytes_from_browser") or 0), recording=get("recording"),
        key_id=get("key_id") or "")
