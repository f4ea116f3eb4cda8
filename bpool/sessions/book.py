"""The session log as placement uses it (bpool/sessions/log.py: SQLite under the run
directory, or PostgreSQL at BPOOL_DATABASE_URL): opening it, and converting between its
records and the wire's SessionInfo (the log keeps no limits or URLs: those live only while the
session does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from bpool import config
from bpool.sessions import protocol as sp
from bpool.sessions.log import SessionLog, SessionRecord, open_log


FIELDS = tuple(sp.SessionInfo.__struct_fields__)


def open_book(run_dir: Path) -> SessionLog:
    return open_log(run_dir, config.value("BPOOL_DATABASE_URL") or None)


def to_record(info: sp.SessionInfo) -> SessionRecord:
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
