"""Screenshots and HTML of a page whose step failed, for the operator to look at.

Kept under `<run dir>/snapshots/<profile>/` (mode 0700: a page shows the account and the
prompt), newest `keep` pairs only, named `<time>-<step>.png|.html`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

from bpool import config

log = logging.getLogger("bpool.driver")


async def _screenshot(page: Any, path: Path, attempts: int = 3) -> None:
    """Chromium sometimes refuses to capture a page that has just turned into its own error page
    ("Unable to capture screenshot"); a moment later it can."""
    for attempt in range(attempts):
        try:
            await page.screenshot(path=str(path))
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)


async def save_snapshot(page: Any, directory: Path, step: str, keep: int = 20) -> Path | None:
    """Save both files; returns their common stem, or None. Never raises."""
    try:
        d = config.ensure_private_dir(directory)
        stem = d / (time.strftime("%Y%m%d-%H%M%S") + "-" + re.sub(r"\W+", "-", step).strip("-"))
        async with asyncio.timeout(15):
            await _screenshot(page, stem.with_suffix(".png"))
            stem.with_suffix(".html").write_text(await page.content(), encoding="utf-8")
        for html in sorted(d.glob("*.html"))[:-keep]:
            html.unlink(missing_ok=True)
            html.with_suffix(".png").unlink(missing_ok=True)
        log.warning("snapshot of the failed step saved: %s.{png,html}", stem)
        return stem
    except Exception as exc:
        log.warning("could not save a snapshot: %r", exc)
        return None
