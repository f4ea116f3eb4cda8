"""The front's settings (one object per process) and API-key checking."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

from bpool import config

DEFAULT_MAX_BODY_BYTES = config.default("BPOOL_MAX_BODY_BYTES")


@dataclass(frozen=True)
class FrontSettings:
    ENV: ClassVar[dict[str, str]] = {
        "host": "BPOOL_HOST", "port": "BPOOL_PORT", "max_body_bytes": "BPOOL_MAX_BODY_BYTES",
        "heartbeat_interval_s": "BPOOL_HEARTBEAT_INTERVAL_S",
        "heartbeat_liveness": "BPOOL_HEARTBEAT_LIVENESS",
        "queue_timeout_s": "BPOOL_QUEUE_TIMEOUT_S", "job_timeout_s": "BPOOL_JOB_TIMEOUT_S",
        "status_timeout_s": "BPOOL_STATUS_TIMEOUT_S", "drain_timeout_s": "BPOOL_DRAIN_TIMEOUT_S",
        "keepalive_timeout_s": "BPOOL_KEEPALIVE_TIMEOUT_S",
        "body_timeout_s": "BPOOL_BODY_TIMEOUT_S", "write_timeout_s": "BPOOL_WRITE_TIMEOUT_S",
    }
    host: str = config.default("BPOOL_HOST")
    port: config.Port = config.default("BPOOL_PORT")
    broker_endpoint: str = ""
    # Never printed: repr=False keeps keys out of logs and tracebacks that show the settings.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: config.Count = config.default("BPOOL_MAX_BODY_BYTES")
    heartbeat_interval_s: config.Positive = config.default("BPOOL_HEARTBEAT_INTERVAL_S")
    heartbeat_liveness: config.Count = config.default("BPOOL_HEARTBEAT_LIVENESS")
    # How long a job may wait for a worker at the broker; sent with every Submit so the broker's
    # deadline and the front's own bound on the wait can never disagree.
    queue_timeout_s: config.Positive = config.default("BPOOL_QUEUE_TIMEOUT_S")
    # Upper bound for one whole job once a worker holds it (long reasoning answers are slow).
    job_timeout_s: config.Positive = config.default("BPOOL_JOB_TIMEOUT_S")
    status_timeout_s: config.Positive = config.default("BPOOL_STATUS_TIMEOUT_S")
    drain_timeout_s: config.NonNegative = config.default("BPOOL_DRAIN_TIMEOUT_S")
    # Web pages allowed to call the API from a browser (exact `Origin` values); none by default,
    # so a page a user happens to visit cannot drive a loopback or LAN front.
    cors_origins: tuple[str, ...] = ()
    # Slow or stuck clients: an idle keep-alive connection, a body that trickles in, and a
    # client that stops reading a stream are each cut off after these.
    keepalive_timeout_s: config.Positive = config.default("BPOOL_KEEPALIVE_TIMEOUT_S")
    body_timeout_s: config.Positive = config.default("BPOOL_BODY_TIMEOUT_S")
    write_timeout_s: config.Positive = config.default("BPOOL_WRITE_TIMEOUT_S")

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> "FrontSettings":
        """From the registry's variables; `overrides` (flags) win. ConfigError if invalid."""
        return config.build(cls, {
            "broker_endpoint": config.front_endpoint(),
            "api_keys": load_api_keys(config.value("BPOOL_API_KEYS"),
                                      config.value("BPOOL_API_KEYS_FILE")),
            "cors_origins": tuple(o.strip().rstrip("/") for o in
                                  config.value("BPOOL_CORS_ORIGINS").split(",") if o.strip()),
            **(overrides or {}),
        })

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
