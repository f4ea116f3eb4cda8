"""Profiles: one logged-in account each, stored as a Playwright storage-state JSON file.

A profile's id is its file stem (`cookies/alice.json` → `alice`). `load_profile()` validates the
file with msgspec and raises `ProfileError` naming the file and the reason. Cookie values never
appear in messages, logs or reprs: a profile file is a password.

    python -m bpool.worker.profiles check FILE...     # exit 1 if any file is unusable
"""

from __future__ import annotations

import logging
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

log = logging.getLogger("bpool.profiles")

MAX_PROFILE_BYTES = 5 * 1024 * 1024  # storage states are a few KB; anything huge is not one
# The one rule for profile ids, used by the worker and by sync: an id becomes a path, a zmq
# identity, a supervisord program name (browser-<id>) and a log file name. Always fullmatch:
# `$` would also match before a trailing newline.
PROFILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
PROFILE_ID_RULE = "letters, digits and . _ @ + -, starting with a letter or digit; at most 64"
# Google's session cookies (docs/aistudio-page.md); only used to describe a profile, never required, since
# the simulator's profiles carry their own.
GOOGLE_SESSION_COOKIES = frozenset(
    {"SID", "HSID", "SSID", "APISID", "SAPISID", "SIDCC", "__Secure-1PSID", "__Secure-3PSID",
     "__Secure-1PSIDTS"}
)


class Cookie(msgspec.Struct, frozen=True):
    name: str
    value: str
    domain: str
    path: str = "/"
    expires: float = -1
    httpOnly: bool = False
    secure: bool = False
    sameSite: Literal["Strict", "Lax", "None"] = "Lax"

    def __repr__(self) -> str:  # never show the value
        return f"Cookie({self.name!r}, domain={self.domain!r}, value=<{len(self.value)} chars>)"

    __str__ = __repr__


class StorageItem(msgspec.Struct, frozen=True):
    name: str
    value: str

    def __repr__(self) -> str:
        return f"StorageItem({self.name!r}, value=<{len(self.value)} chars>)"

    __str__ = __repr__


class Origin(msgspec.Struct, frozen=True):
    origin: str
    localStorage: tuple[StorageItem, ...] = ()


class StorageState(msgspec.Struct, frozen=True):
    cookies: tuple[Cookie, ...]
    origins: tuple[Origin, ...] = ()


class ProfileError(Exception):
    """A profile file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"profile {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class Profile:
    id: str
    path: Path
    state: StorageState = field(repr=False)

    @property
    def cookie_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.state.cookies)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted({c.domain.lstrip(".") for c in self.state.cookies}))

    def expired(self, now: float) -> tuple[str, ...]:
        """Names of cookies whose expiry is in the past (-1 means a session cookie)."""
        return tuple(c.name for c in self.state.cookies if 0 < c.expires < now)

    def storage_state(self) -> dict[str, Any]:
        """The validated state as Playwright takes it (unknown fields dropped)."""
        return msgspec.to_builtins(self.state)

    def describe(self, now: float) -> str:
        n_google = len(GOOGLE_SESSION_COOKIES.intersection(self.cookie_names))
        expired = self.expired(now)
        parts = [f"{len(self.state.cookies)} cookies", f"{len(self.state.origins)} origins",
                 "domains " + ",".join(self.domains)]
        if n_google:
            parts.append(f"{n_google} Google session cookies")
        if expired:
            parts.append(f"{len(expired)} expired ({', '.join(sorted(expired)[:5])})")
        return f"{self.id}: " + "; ".join(parts)


def profile_id(path: Path | str) -> str:
    return Path(path).stem


def valid_profile_id(pid: str) -> bool:
    return PROFILE_ID.fullmatch(pid) is not None


def load_profile(path: Path | str) -> Profile:
    """Read and validate one profile file; raises ProfileError (never with cookie values)."""
    path = Path(path)
    pid = profile_id(path)
    if not valid_profile_id(pid):
        raise ProfileError(path, f"file name {pid!r} is not a usable profile id "
                                 f"({PROFILE_ID_RULE})")
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ProfileError(path, "not a regular file")
        if st.st_size > MAX_PROFILE_BYTES:
            raise ProfileError(path, f"too large ({st.st_size} bytes) for a storage state")
        raw = path.read_bytes()
    except ProfileError:
        raise
    except OSError as exc:
        raise ProfileError(path, f"cannot read it: {exc.strerror or exc}") from None
    if st.st_mode & 0o077:
        log.warning("profile %s is readable by group/others (mode %o): chmod 600 it",
                    path, stat.S_IMODE(st.st_mode))
    try:
        state = msgspec.json.decode(raw, type=StorageState)
    except msgspec.ValidationError as exc:
        raise ProfileError(path, f"not a Playwright storage state: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProfileError(path, f"not valid JSON: {exc}") from None
    if not state.cookies:
        raise ProfileError(path, "has no cookies (save it after logging in)")
    for i, c in enumerate(state.cookies):
        if not c.name or not c.domain:
            raise ProfileError(path, f"cookie #{i} has an empty name or domain")
    return Profile(pid, path, state)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bpool.worker.profiles",
                                 description="Validate profile (cookie) files.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="validate files; exit 1 if any is unusable")
    check.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    bad = 0
    now = time.time()
    for f in args.files:
        try:
            prof = load_profile(f)
        except ProfileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            bad += 1
            continue
        print(f"ok: {prof.describe(now)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
