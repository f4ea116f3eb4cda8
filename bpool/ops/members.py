"""Who joins the pool besides the cookie directory's files, and how many may run.

- Browsers already running (`BPOOL_BROWSER_ENDPOINTS`, bpool.worker.attach): each entry becomes
  a profile whose worker attaches to that browser instead of launching one.
- The pool cap (`MAX_BROWSER_POOL_SIZE`): sync starts at most that many workers; the others are
  listed as waiting (in sync's output and in `run/waiting.json`, which `bpool status` shows).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bpool.ops.render import (ENDPOINTS_FILE, PROGRAM_PREFIX, Discovery, Profile, Refused,
                              SyncSettings, conf_name)

WAITING_FILE = "waiting.json"


def check_profile(path: Path) -> None:
    from bpool.worker.profiles import load_profile  # raises ProfileError(path, reason)

    load_profile(path)


def add_attached(settings: SyncSettings, found: Discovery) -> None:
    """Profiles of BPOOL_BROWSER_ENDPOINTS (browsers already running) join the discovered ones;
    an entry for a cookie file the directory also has replaces it. The manifest goes to
    run/endpoints.json (absolute paths) for the workers. With entries, an empty cookie
    directory is no longer demo mode."""
    from bpool.worker.attach import ManifestError, dump, load_manifest

    path = settings.run_dir / ENDPOINTS_FILE
    try:
        entries = load_manifest(settings.endpoints, settings.here)
    except ManifestError as exc:
        found.refused.append(Refused(Path("BPOOL_BROWSER_ENDPOINTS"), str(exc)))
        entries = []
    if not entries:
        path.unlink(missing_ok=True)
        return
    if found.demo:
        found.demo, found.simulator, found.profiles = False, settings.simulator == "on", []
        found.source = "the browser endpoints (no cookie file in the cookie directory)"
    for e in entries:
        try:
            check_profile(e.cookie_path)
        except Exception as exc:
            found.refused.append(Refused(e.cookie_path, getattr(exc, "reason", None) or str(exc)))
            continue
        found.profiles = [p for p in found.profiles if p.id != e.id and p.path != e.cookie_path]
        found.profiles.append(Profile(e.id, e.cookie_path))
        found.attached[e.id] = e.ws
    found.profiles.sort(key=lambda p: p.id)
    tmp = path.with_name(f".{ENDPOINTS_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the URLs control browsers
    with os.fdopen(fd, "w") as f:
        f.write(dump(entries))
    os.replace(tmp, path)


def apply_cap(limit: int, found: Discovery, running: set[str]) -> list[Profile]:
    """At most `limit` profiles (0: all) keep their place in `found`; the rest are returned as
    waiting. Profiles whose worker already runs come first, so raising the count of cookie files
    never swaps a serving account for a new one; then by id."""
    if limit <= 0 or len(found.profiles) <= limit:
        return []
    order = sorted(found.profiles,
                   key=lambda p: (conf_name(PROGRAM_PREFIX + p.id) not in running, p.id))
    keep = {p.id for p in order[:limit]}
    waiting = [p for p in order if p.id not in keep]
    found.profiles = [p for p in found.profiles if p.id in keep]
    return waiting


def write_waiting(run_dir: Path, waiting: list[Profile]) -> None:
    path = run_dir / WAITING_FILE
    if not waiting:
        path.unlink(missing_ok=True)
        return
    tmp = run_dir / f".{WAITING_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(sorted(p.id for p in waiting)))
    os.replace(tmp, path)


def read_waiting(run_dir: Path) -> list[str]:
    """The profiles the last sync left waiting for a place in the pool."""
    try:
        return list(json.loads((run_dir / WAITING_FILE).read_text()))
    except (OSError, ValueError):
        return []
