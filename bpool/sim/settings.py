"""The simulator's settings, from `BPOOL_SIM_*` environment variables (flags override them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bpool.config import env_int, env_str, run_dir
from bpool.sim.knobs import Knobs

DEFAULT_PORT = 9223


def knobs_from_env(environ: dict[str, str] | None = None) -> Knobs:
    """Knobs with `BPOOL_SIM_<NAME>` overrides (ValueError names a bad one)."""
    import os

    env = os.environ if environ is None else environ
    changes = {}
    for f in dataclasses.fields(Knobs):
        value = env.get("BPOOL_SIM_" + f.name.upper())
        if value is not None and value != "":
            changes[f.name] = value
    return Knobs().updated(changes)


@dataclass
class SimSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0 = any free port; the bound URL is written to <dir>/url
    rpc_port: int = 0  # the RPC host's port (another origin); written to <dir>/rpc_url
    dir: Path = field(default_factory=lambda: run_dir() / "sim")
    knobs: Knobs = field(default_factory=Knobs)
    max_request_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_env(cls) -> SimSettings:
        try:
            knobs = knobs_from_env()
        except ValueError as e:
            raise SystemExit(f"bpool.sim: {e}") from None
        return cls(
            host=env_str("BPOOL_SIM_HOST", "127.0.0.1"),
            port=env_int("BPOOL_SIM_PORT", DEFAULT_PORT),
            rpc_port=env_int("BPOOL_SIM_RPC_PORT", 0),
            dir=Path(env_str("BPOOL_SIM_DIR", str(run_dir() / "sim"))).resolve(),
            knobs=knobs,
        )
