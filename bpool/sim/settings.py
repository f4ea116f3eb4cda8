"""The simulator's settings, from `BPOOL_SIM_*` environment variables (flags override them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bpool import config
from bpool.config import run_dir
from bpool.sim.knobs import Knobs

DEFAULT_PORT = config.default("BPOOL_SIM_PORT")


def knobs_from_env(environ: dict[str, str] | None = None) -> Knobs:
    """Knobs with `BPOOL_SIM_<NAME>` overrides (config.ConfigError names a bad one)."""
    return Knobs(**{f.name: config.value("BPOOL_SIM_" + f.name.upper(), environ)
                    for f in dataclasses.fields(Knobs)})


@dataclass
class SimSettings:
    host: str = config.default("BPOOL_SIM_HOST")
    port: int = DEFAULT_PORT  # 0 = any free port; the bound URL is written to <dir>/url
    rpc_port: int = 0  # the RPC host's port (another origin); written to <dir>/rpc_url
    dir: Path = field(default_factory=lambda: run_dir() / "sim")
    knobs: Knobs = field(default_factory=Knobs)
    max_request_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_env(cls) -> SimSettings:
        """From the registry's variables; config.ConfigError names a bad one."""
        return cls(
            host=config.value("BPOOL_SIM_HOST"),
            port=config.value("BPOOL_SIM_PORT"),
            rpc_port=config.value("BPOOL_SIM_RPC_PORT"),
            dir=Path(config.value("BPOOL_SIM_DIR") or run_dir() / "sim").resolve(),
            knobs=knobs_from_env(),
        )
