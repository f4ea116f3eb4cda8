"""The simulator's settings, from `BPOOL_SIM_*` environment variables (flags override them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bpool.config import env_float, env_int, env_str, run_dir
from bpool.sim.state import Knobs

DEFAULT_PORT = 9223


@dataclass
class SimSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0 = any free port; the bound URL is written to <dir>/url
    dir: Path = field(default_factory=lambda: run_dir() / "sim")
    knobs: Knobs = field(default_factory=Knobs)
    max_request_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_env(cls) -> SimSettings:
        try:
            knobs = Knobs().updated(dict(
                tokens_per_s=env_float("BPOOL_SIM_TOKENS_PER_S", 50.0),
                first_token_s=env_float("BPOOL_SIM_FIRST_TOKEN_S", 0.2),
                answer_s=env_float("BPOOL_SIM_ANSWER_S", 0.0),
                split=env_str("BPOOL_SIM_SPLIT", "chars"),
                quota=env_int("BPOOL_SIM_QUOTA", 0),
                quota_window_s=env_float("BPOOL_SIM_QUOTA_WINDOW_S", 60.0),
                require_token=env_str("BPOOL_SIM_REQUIRE_TOKEN", "1") not in ("0", "false", "no"),
            ))
        except ValueError as e:
            raise SystemExit(f"bpool.sim: {e}") from None
        return cls(
            host=env_str("BPOOL_SIM_HOST", "127.0.0.1"),
            port=env_int("BPOOL_SIM_PORT", DEFAULT_PORT),
            dir=Path(env_str("BPOOL_SIM_DIR", str(run_dir() / "sim"))).resolve(),
            knobs=knobs,
        )
