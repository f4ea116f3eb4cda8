"""The running pool's own settings, recorded in its run directory, for every operator command.

    run/pool.json (0600)  {"settings": {"BPOOL_PORT": "2049", "BPOOL_DRAIN_TIMEOUT_S": "20", ...},
                           "api_keys": "none" | "env" | "file", "mode": "demo",
                           "real_profiles_seen": false}

supervisord passes the environment of the shell that started it to its programs; an operator
later types `scripts/sync-profiles` or `bpool wait-profile` in another shell, without those
variables. Reading them from that shell would look for the front on the wrong port, render the
workers' sections with another drain (and restart every worker for it), or switch to the wrong
cookie directory. So the settings the operator commands need are written here when the pool
starts (`scripts/run` → `bpool profiles sync --render-only` while no supervisord runs it), and
every later command reads them from here: a different value in the caller's environment is
named on stderr and ignored. API keys are never written, only where they come from.

Also kept here across starts: whether a real cookie file was ever seen (then an empty cookie
directory means "no accounts", not demo mode) and the pool's current mode.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from bpool import config

FILE_NAME = "pool.json"
# The settings a running pool is operated with; each is read from the record, never the shell.
RECORDED = ("BROWSER_PROFILE_DIR", "ACTIVE_AUTH_JSON_PATH", "BPOOL_SIMULATOR", "BPOOL_SIM_HOST",
            "BPOOL_SIM_PORT", "BPOOL_DRAIN_TIMEOUT_S", "BPOOL_HOST", "BPOOL_PORT",
            "BPOOL_API_KEYS_FILE", "BPOOL_WORKER_CMD", "BPOOL_SESSION_HOSTS",
            "MAX_BROWSER_POOL_SIZE", "BPOOL_BROWSER_ENDPOINTS", "BPOOL_ACCOUNT_LEASES")
PATHS = ("BROWSER_PROFILE_DIR", "ACTIVE_AUTH_JSON_PATH", "BPOOL_API_KEYS_FILE")
MODES = ("demo", "accounts", "none")  # simulator answers; real accounts; no cookie file


def _text(name: str, env: Mapping[str, str]) -> str:
    """The variable's value (its default if unset) as one canonical string."""
    v = config.value(name, env)
    if name in PATHS and v:
        return str(Path(v).resolve())
    if isinstance(v, float):
        return f"{v:g}"
    return "" if v is None else str(v)


def snapshot(env: Mapping[str, str]) -> dict[str, str]:
    """The recorded settings of `env`; config.ConfigError names a bad value."""
    return {name: _text(name, env) for name in RECORDED}


@dataclass
class PoolRecord:
    settings: dict[str, str]
    api_keys: str = "none"  # where the front's keys come from: none, env, file
    mode: str = ""
    real_profiles_seen: bool = False
    path: Path | None = field(default=None, compare=False)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default this process's environment) with the recorded settings in force."""
        out = {k: v for k, v in (os.environ if base is None else base).items()
               if k not in RECORDED}
        out.update({k: v for k, v in self.settings.items() if v != ""})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "api_keys": self.api_keys, "mode": self.mode,
                "real_profiles_seen": self.real_profiles_seen}


def of_env(env: Mapping[str, str], previous: PoolRecord | None = None) -> PoolRecord:
    """A new record from the environment of the shell that starts the pool, keeping what the
    previous record learnt about the cookie directory."""
    keys = "file" if (env.get("BPOOL_API_KEYS_FILE") or "").strip() else \
        "env" if (env.get("BPOOL_API_KEYS") or "").strip() else "none"
    return PoolRecord(snapshot(env), keys,
                      previous.mode if previous else "",
                      previous.real_profiles_seen if previous else False)


def load(run_dir: Path) -> PoolRecord | None:
    path = run_dir / FILE_NAME
    try:
        raw = json.loads(path.read_text())
        settings = {k: str(v) for k, v in raw["settings"].items() if k in RECORDED}
        return PoolRecord(settings, str(raw.get("api_keys", "none")), str(raw.get("mode", "")),
                          bool(raw.get("real_profiles_seen", False)), path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(run_dir: Path, rec: PoolRecord) -> Path:
    """Write atomically, mode 0600 from the first byte (it names the keys file)."""
    config.ensure_private_dir(run_dir)
    path = run_dir / FILE_NAME
    tmp = run_dir / f".{FILE_NAME}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(rec.to_json(), f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    rec.path = path
    return path


def differences(rec: PoolRecord, env: Mapping[str, str]) -> list[str]:
    """One line per setting the caller's environment gives another value than the pool's."""
    out = []
    where = rec.path or FILE_NAME
    for name in RECORDED:
        raw = (env.get(name) or "").strip()
        if not raw:
            continue
        try:
            mine = _text(name, {name: raw})
        except config.ConfigError:
            mine = raw
        if mine != rec.settings.get(name, ""):
            pool = rec.settings.get(name) or "unset"
            out.append(f"ignoring {name}={raw} from this shell: the running pool uses {pool} "
                       f"(recorded in {where} when it started; restart the pool to change it)")
    if (env.get("BPOOL_API_KEYS") or "").strip() and rec.api_keys == "none":
        out.append("ignoring BPOOL_API_KEYS from this shell: the running pool has no API keys")
    return out


def report(rec: PoolRecord, env: Mapping[str, str], say: Callable[[str], None]) -> None:
    for line in differences(rec, env):
        say(f"bpool: {line}")
