"""The front's settings (one object per process) and API-key checking."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from bpool import config

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass
class FrontSettings:
    host: str = "127.0.0.1"
    port: int = 2048
    broker_endpoint: str = ""
    # Never printed: repr=False keeps keys out of logs and tracebacks that show the settings.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    # How long a job may wait for a worker at the broker; sent with every Submit so the broker's
    # deadline and the front's own bound on the wait can never disagree.
    queue_timeout_s: float = 60.0
    # Upper bound for one whole job once a worker holds it (long reasoning answers are slow).
    job_timeout_s: float = 900.0
    status_timeout_s: float = 2.0
    drain_timeout_s: float = 30.0
    # Web pages allowed to call the API from a browser (exact `Origin` values); none by default,
    # so a page a user happens to visit cannot drive a loopback or LAN front.
    cors_origins: tuple[str, ...] = ()
    # Slow or stuck clients: an idle keep-alive connection, a body that trickles in, and a
    # client that stops reading a stream are each cut off after these.
    keepalive_timeout_s: float = 75.0
    body_timeout_s: float = 30.0
    write_timeout_s: float = 30.0

    @classmethod
    def from_env(cls) -> "FrontSettings":
        return cls(
            host=config.env_str("BPOOL_HOST", "127.0.0.1"),
            port=config.env_int("BPOOL_PORT", 2048),
            broker_endpoint=config.front_endpoint(),
            api_keys=load_api_keys(
                os.environ.get("BPOOL_API_KEYS", ""), os.environ.get("BPOOL_API_KEYS_FILE", "")
            ),
            max_body_bytes=config.env_int("BPOOL_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            heartbeat_interval_s=config.heartbeat_interval_s(),
            heartbeat_liveness=config.heartbeat_liveness(),
            queue_timeout_s=config.env_float("BPOOL_QUEUE_TIMEOUT_S", 60.0),
            job_timeout_s=config.env_float("BPOOL_JOB_TIMEOUT_S", 900.0),
            status_timeout_s=config.env_float("BPOOL_STATUS_TIMEOUT_S", 2.0),
            drain_timeout_s=config.env_float("BPOOL_DRAIN_TIMEOUT_S", 30.0),
            cors_origins=tuple(o.strip().rstrip("/") for o in config.env_str(
                "BPOOL_CORS_ORIGINS", "").split(",") if o.strip()),
            keepalive_timeout_s=config.env_float("BPOOL_KEEPALIVE_TIMEOUT_S", 75.0),
            body_timeout_s=config.env_float("BPOOL_BODY_TIMEOUT_S", 30.0),
            write_timeout_s=config.env_float("BPOOL_WRITE_TIMEOUT_S", 30.0),
        )

    @property
    def broker_silence_s(self) -> float:
        """After this long without a Pong the broker counts as lost."""
        return self.heartbeat_interval_s * self.heartbeat_liveness

    @property
    def assign_wait_s(self) -> float:
        """The front's bound on waiting for a worker: the broker's queue deadline plus a margin
        for the broker noticing a dead worker and moving the job once."""
        return self.queue_timeout_s + 2 * self.broker_silence_s + 2.0


def load_api_keys(inline: str, path: str) -> tuple[str, ...]:
    """Keys from a comma-separated list and/or a file (one a line; a line whose first non-space
    character is `#` is a comment). A `#` inside a key is part of the key.

    A configured file that cannot be read, holds no key, or holds a line with spaces inside
    (a key with a trailing comment, most likely) stops the process with ConfigError: an API
    left open, or a key silently cut short, would be worse than not starting."""
    keys = [k.strip() for k in inline.split(",") if k.strip()]
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise config.ConfigError(f"BPOOL_API_KEYS_FILE {path}: cannot read it: {reason}"
                                     ) from None
        found = 0
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if any(ch.isspace() for ch in line):
                raise config.ConfigError(
                    f"BPOOL_API_KEYS_FILE {path}: line {n} holds a space; put one key a line "
                    "and comments on lines of their own")
            keys.append(line)
            found += 1
        if not found:
            raise config.ConfigError(f"BPOOL_API_KEYS_FILE {path} holds no key (only blank "
                                     "lines or comments); refusing to start with an open API")
    return tuple(dict.fromkeys(keys))


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def key_matches(presented: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every key (no early exit that would leak which one)."""
    if presented is None:
        return False
    # surrogateescape: a header with bytes that are not UTF-8 (aiohttp hands them over as lone
    # surrogates) is simply a wrong key, not an encoding error.
    given = presented.encode("utf-8", "surrogateescape")
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key.encode("utf-8", "surrogateescape"))
    return ok
