"""Recording a session on its host (HAR or video), for GET /v1/sessions/{id}/recording.

SEAM: the recorders and the store are separate libraries (bpool/sessions/recording.py,
bpool/sessions/store.py). Until they exist, `SessionRecorder.start` records nothing and
`finish()` returns None, so a session asked with `record` runs and ends normally with no
recording; the host logs it once.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("bpool.sessions.host")


def available() -> bool:
    try:
        import bpool.sessions.recording  # noqa: F401  # type: ignore[import-not-found]
        import bpool.sessions.store  # noqa: F401  # type: ignore[import-not-found]
    except ImportError:
        return False
    return True


class SessionRecorder:
    def __init__(self, session_id: str, kind: str) -> None:
        self.session_id = session_id
        self.kind = kind

    @classmethod
    def start(cls, session_id: str, kind: str, browser: object, home: Path) -> "SessionRecorder":
        if not available():
            log.warning("session %s: %s recording asked, but the recording library is not "
                        "installed: nothing is recorded", session_id, kind)
        return cls(session_id, kind)

    async def finish(self) -> str | None:
        """Where the recording was stored, or None."""
        return None
