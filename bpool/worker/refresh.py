"""Keeping a profile's login alive: the browser's refreshed storage state, saved back to its file.

Google rotates some session cookies (`__Secure-1PSIDTS`, `SIDCC`) while a browser uses them, so a
cookie file exported once goes stale within days. A worker therefore writes its browser
context's current storage state back to the profile's cookie file every BPOOL_COOKIE_REFRESH_S
(default 6 h) and once more on a clean shutdown.

The file is the operator's too (`scripts/swap-cookie`, `bpool login`), so a save:
- takes the profile file's lock (flock on the file itself, as `scripts/swap-cookie` and
  `bpool login` do) without waiting: a swap or login that holds it wins, and the save is
  skipped (the next one comes at the next period);
- is skipped when the file is no longer the one this worker loaded (another inode, size or
  mtime): a swapped-in file must never be overwritten by the old login on the way out;
- is skipped when the state has no Google session cookie (a browser that lost its login would
  otherwise destroy the last good file);
- keeps the previous file as `<name>.json.bak` (0600; not `*.json`, so never a profile itself),
  writes a hidden temporary file 0600 and renames it over the profile (atomic).
Cookie values never appear in a log line; only names, counts and expiry times do.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from bpool import config
from bpool.worker.profiles import GOOGLE_SESSION_COOKIES, ProfileError, load_profile

log = logging.getLogger("bpool.refresh")

SaveResult = Literal["saved", "busy", "replaced", "no_session"]
STATE_TIMEOUT_S = 5.0  # well inside the stop margin supervisord allows after the drain


def session_cookies(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in state.get("cookies", ()) if c.get("name") in GOOGLE_SESSION_COOKIES]


def earliest_expiry(state: dict[str, Any]) -> float | None:
    """Unix time at which the first Google session cookie expires; None when none has a date
    (a cookie with `expires` -1 lives as long as the browser, so it is no warning sign)."""
    dates = [float(c["expires"]) for c in session_cookies(state)
             if isinstance(c.get("expires"), (int, float)) and c["expires"] > 0]
    return min(dates) if dates else None


@contextmanager
def profile_lock(path: Path, wait: bool) -> Iterator[bool]:
    """The profile file's lock: flock on the file itself, so no lock file is left beside it
    (`scripts/swap-cookie` runs `flock FILE`). Whoever replaces the file does so holding the
    lock on the old one; a waiter then finds another file there (see CookieFile.save). Yields
    False when someone else holds it and `wait` is False; True with nothing to lock when the
    file does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """`data` into `path` through a hidden temporary file, 0600, fsynced, renamed (atomic)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class CookieFile:
    """One profile's cookie file, as this worker loaded it."""

    def __init__(self, path: Path, loaded: Any = None) -> None:
        """`loaded`: the storage state the worker started with; a file that no longer holds it
        was replaced while the browser started (a swap), and is never written."""
        self.path = path
        self.backup = path.with_name(path.name + ".bak")
        self.stamp = _stamp(path)
        if loaded is not None and not self._holds(loaded):
            self.stamp = None  # no stamp matches an existing file: every save says "replaced"

    def _holds(self, loaded: Any) -> bool:
        try:
            return load_profile(self.path).state == loaded
        except ProfileError:
            return False

    def save(self, state: dict[str, Any]) -> SaveResult:
        if not session_cookies(state):
            return "no_session"
        with profile_lock(self.path, wait=False) as got:
            if not got:
                return "busy"
            if self.stamp is None or _stamp(self.path) != self.stamp:
                return "replaced"  # or removed: a removed profile must not come back
            write_private(self.backup, self.path.read_bytes())
            write_private(self.path, json.dumps(state, indent=1).encode())
            self.stamp = _stamp(self.path)
        return "saved"


def _when(t: float | None) -> str:
    return "unknown" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


class LoginKeeper:
    """Saves `context`'s storage state into `cookie_file` now and then, and tells `on_expiry`
    the first session-cookie expiry of each saved state."""

    def __init__(self, context: Any, cookie_file: CookieFile, interval_s: float,
                 on_expiry: Callable[[float | None], None], profile: str = "",
                 may_save: Callable[[], bool] = lambda: True) -> None:
        self.context = context
        self.file = cookie_file
        self.interval_s = interval_s
        self.on_expiry = on_expiry
        self.profile = profile
        self.may_save = may_save
        self.task: asyncio.Task | None = None

    def start(self) -> "LoginKeeper":
        if self.interval_s > 0:
            self.task = asyncio.ensure_future(self._every_period())
        return self

    async def _every_period(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.save_now("periodic")

    async def save_now(self, why: str) -> SaveResult | None:
        """One save; None when it was not attempted (the account is not usable, or the
        browser did not answer). Never raises: a failed save must not stop the worker."""
        if not self.may_save():
            log.info("profile %s: login not saved (%s): the account is not usable", self.profile, why)
            return None
        try:
            async with asyncio.timeout(STATE_TIMEOUT_S):
                state = await self.context.storage_state()
            result = await asyncio.to_thread(self.file.save, state)
        except Exception as exc:
            log.warning("profile %s: could not save the refreshed login (%s): %s",
                        self.profile, why, type(exc).__name__)
            return None
        if result == "saved":
            expiry = earliest_expiry(state)
            self.on_expiry(expiry)
            log.info("profile %s: refreshed login saved to %s (%s; %d session cookies, first "
                     "expires %s)", self.profile, self.file.path, why,
                     len(session_cookies(state)), _when(expiry))
        elif result == "busy":
            log.info("profile %s: login not saved (%s): %s is being replaced", self.profile,
                     why, self.file.path)
        elif result == "replaced":
            log.warning("profile %s: login not saved (%s): %s was replaced since this worker "
                        "loaded it", self.profile, why, self.file.path)
        else:
            log.warning("profile %s: login not saved (%s): the browser holds no Google session "
                        "cookie", self.profile, why)
        return result

    async def close(self, save: bool) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except BaseException:
                pass
        if save and self.interval_s > 0:
            await self.save_now("shutdown")


def start(context: Any, profile: Any, backend: Any) -> LoginKeeper:
    """The worker's hook: `backend.cookie_expires_at` from the loaded file now (for Ready), then
    from each saved state; no save while the account is logged out."""
    backend.cookie_expires_at = earliest_expiry(profile.storage_state())

    def on_expiry(t: float | None) -> None:
        backend.cookie_expires_at = t

    def usable() -> bool:
        return getattr(backend.unusable, "kind", None) != "logged_out"

    return LoginKeeper(context, CookieFile(Path(profile.path), profile.state),
                       config.value("BPOOL_COOKIE_REFRESH_S"), on_expiry, profile.id,
                       usable).start()
