"""The broker's rate-limit cool-downs on disk, so that a broker restart does not forget them.

`<BPOOL_RUN_DIR>/cooldowns.json`, mode 0600, replaced atomically (a reader never sees half a
file). Ends are stored as Unix times: the monotonic clock the core uses means nothing to the next
process. A missing, unreadable or foreign file is no cool-down at all (logged), never a broker
that cannot start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

log = logging.getLogger("bpool.broker")

FILE_NAME = "cooldowns.json"
VERSION = 1


class Saved(msgspec.Struct, frozen=True):
    version: int
    cooldowns: dict[str, dict[str, float]]  # profile -> model -> Unix time its cool-down ends


def save(path: Path, cooldowns: dict[str, dict[str, float]], mono_now: float,
         wall_now: float) -> None:
    """Write `cooldowns` (monotonic ends, as BrokerCore.cooldowns gives them)."""
    offset = wall_now - mono_now
    data = Saved(VERSION, {profile: {model: round(end + offset, 3) for model, end in models.items()}
                           for profile, models in cooldowns.items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: Path, mono_now: float, wall_now: float) -> dict[str, dict[str, float]]:
    """The cool-downs still running, as monotonic ends on this process's clock."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read the saved cool-downs %s: %s", path, exc.strerror)
        return {}
    try:
        saved = msgspec.json.decode(raw, type=Saved)
    except msgspec.DecodeError as exc:
        log.warning("ignoring the saved cool-downs %s: %s", path, exc)
        return {}
    if saved.version != VERSION:
        log.warning("ignoring the saved cool-downs %s: version %s", path, saved.version)
        return {}
    offset = mono_now - wall_now
    out: dict[str, dict[str, float]] = {}
    for profile, models in saved.cooldowns.items():
        running = {model: end + offset for model, end in models.items() if end > wall_now}
        if running:
            out[profile] = running
    return out
