"""Simulated Google accounts: a JSON file in the sim's data dir, and cookie profiles that log in.

The account file (`<sim dir>/accounts.json`, mode 0600) is shared by the serving sim and by
`make-profiles` / `expire` run from other processes, so every change is a locked read-modify-write
with an atomic replace, and the server re-reads the file whenever its mtime changes.

A session is the `SID` cookie's value. A profile carries the other Google cookie names too (random
values) so it looks like a real saved login; only `SID` decides who you are.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

SESSION_COOKIE = "SID"
COOKIE_NAMES = ("SID", "HSID", "SSID", "APISID", "SAPISID", "SIDCC",
                "__Secure-1PSID", "__Secure-3PSID", "__Secure-1PSIDTS")
EMAIL_DOMAIN = "sim.test"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Account:
    name: str
    email: str
    sid: str
    expired: bool = False
    tos: bool = False  # has not accepted the terms of service: the page asks, the RPCs refuse


def accounts_path(sim_dir: Path) -> Path:
    return sim_dir / "accounts.json"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"bad account name {name!r}: use a-z, 0-9, '.', '_', '-'")
    return name


def _read(path: Path) -> list[Account]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return [Account(a["name"], a["email"], a["sid"], bool(a.get("expired")), bool(a.get("tos")))
            for a in raw["accounts"]]


def _write(path: Path, accounts: list[Account]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    body = {"version": 1, "accounts": [a.__dict__ for a in accounts]}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=1)
    os.replace(tmp, path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update(path: Path, change: Callable[[list[Account]], list[Account]]) -> list[Account]:
    with _locked(path):
        accounts = change(_read(path))
        _write(path, accounts)
        return accounts


def ensure_accounts(path: Path, names: list[str], tos: bool | None = None) -> list[Account]:
    """Log `names` in: new accounts get a session; expired ones get a fresh one; live ones keep theirs.
    `tos` not None sets or clears their terms-of-service flag."""
    for n in names:
        check_name(n)

    def change(accounts: list[Account]) -> list[Account]:
        by_name = {a.name: a for a in accounts}
        for n in names:
            old = by_name.get(n)
            if old is None or old.expired:
                by_name[n] = Account(n, f"{n}@{EMAIL_DOMAIN}", secrets.token_urlsafe(24),
                                     tos=bool(old and old.tos))
            if tos is not None:
                by_name[n] = replace(by_name[n], tos=tos)
        return list(by_name.values())

    wanted = set(names)
    return [a for a in update(path, change) if a.name in wanted]


def _set(path: Path, who: str, **changes: bool) -> bool:
    found = False

    def change(accounts: list[Account]) -> list[Account]:
        nonlocal found
        out = []
        for a in accounts:
            if who in (a.name, a.email):
                found = True
                a = replace(a, **changes)
            out.append(a)
        return out

    update(path, change)
    return found


def set_expired(path: Path, who: str, expired: bool = True) -> bool:
    """Expire (log out) or revive the account named `who` (name or email); False if unknown."""
    return _set(path, who, expired=expired)


def set_tos(path: Path, who: str, required: bool = True) -> bool:
    """Flag the account as one that has not accepted the terms of service (or clear the flag)."""
    return _set(path, who, tos=required)


def free_names(path: Path, count: int, prefix: str = "user") -> list[str]:
    taken = {a.name for a in _read(path)}
    out: list[str] = []
    i = 1
    while len(out) < count:
        if f"{prefix}{i}" not in taken:
            out.append(f"{prefix}{i}")
        i += 1
    return out


class AccountBook:
    """The server's view of the account file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._by_sid: dict[str, Account] = {}

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._by_sid = {a.sid: a for a in _read(self.path)} if stamp else {}
            self._stamp = stamp

    def find(self, who: str) -> Account | None:
        """A live or expired account by name or email."""
        self._refresh()
        return next((a for a in self._by_sid.values() if who in (a.name, a.email)), None)

    def by_session(self, sid: str | None) -> Account | None:
        """The live account behind a session cookie value, or None (unknown or expired)."""
        if not sid:
            return None
        self._refresh()
        acc = self._by_sid.get(sid)
        return acc if acc is not None and not acc.expired else None

    def all(self) -> list[Account]:
        self._refresh()
        return list(self._by_sid.values())


def storage_state(sid: str, host: str, now: float | None = None) -> dict:
    """A Playwright storage state holding a Google-looking login for `host` (the sim's host)."""
    expires = (now or time.time()) + 180 * 86400
    cookies = []
    for name in COOKIE_NAMES:
        cookies.append({
            "name": name,
            "value": sid if name == SESSION_COOKIE else secrets.token_urlsafe(24),
            "domain": host,
            "path": "/",
            "expires": round(expires),
            "httpOnly": name not in ("APISID", "SAPISID"),
            # "__Secure-" cookies are refused by browsers without Secure; on plain http they are
            # then simply not sent, which is fine: only SID matters here.
            "secure": name.startswith("__Secure-"),
            "sameSite": "Lax",
        })
    return {"cookies": cookies, "origins": []}


def write_profile(out_dir: Path, name: str, state: dict) -> Path:
    """Write `<out_dir>/<name>.json` with mode 0600 (it holds session cookies)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{check_name(name)}.json"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply when the file already existed
    os.replace(tmp, path)
    return path
