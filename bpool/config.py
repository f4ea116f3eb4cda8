"""Settings shared by every bpool process, read from `BPOOL_*` environment variables.

Each process has one settings object built by `from_env()`; command-line flags override fields.
Durations are floats in seconds and end in `_s`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"bpool: {name}={raw!r} is not a number") from None


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"bpool: {name}={raw!r} is not an integer") from None


def run_dir() -> Path:
    """Where the pool's ipc sockets, logs and snapshots live (`BPOOL_RUN_DIR`, default `run/`)."""
    return Path(env_str("BPOOL_RUN_DIR", str(REPO_ROOT / "run"))).resolve()


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed; tighten it if it exists with wider permissions."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def front_endpoint(rd: Path | None = None) -> str:
    """The broker's front-side ROUTER (the HTTP front connects here)."""
    return env_str("BPOOL_BROKER_FRONT", f"ipc://{(rd or run_dir()) / 'front.sock'}")


def worker_endpoint(rd: Path | None = None) -> str:
    """The broker's worker-side ROUTER (browser and fake workers connect here)."""
    return env_str("BPOOL_BROKER_WORKERS", f"ipc://{(rd or run_dir()) / 'workers.sock'}")


def heartbeat_interval_s() -> float:
    return env_float("BPOOL_HEARTBEAT_INTERVAL_S", 1.0)


def heartbeat_liveness() -> int:
    return env_int("BPOOL_HEARTBEAT_LIVENESS", 3)
