"""`bpool login NAME`: sign one Google account in by hand and save it as the profile NAME.

A browser window opens on AI Studio's sign-in page (a fresh, private browser profile, deleted
afterwards). The operator signs in; when the page reaches AI Studio's ready state (the prompt
box), the login is checked (Google session cookies present), saved as `<cookie dir>/NAME.json`
(0600, under the profile's lock; a file it replaces is kept as `NAME.json.bak-<UTC time>`), and
the pool is synced so a worker starts with it (a profile that was already running is restarted).

Signing in needs a window: without DISPLAY / WAYLAND_DISPLAY the command explains how to do it
from another machine and exits 78. `--headless` skips that check; it is for scripted sign-ins
against the simulator (tests), where `human` plays the operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from bpool import config
from bpool.studio.table import STUDIO
from bpool.worker.profiles import PROFILE_ID_RULE, ProfileError, load_profile, valid_profile_id
from bpool.worker.refresh import profile_lock, session_cookies, write_private

log = logging.getLogger("bpool.login")

EX_NO_DISPLAY = config.EX_CONFIG  # 78: running it again here cannot help
# Any of these means a signed-in Google session (the rest come and go with it).
REQUIRED_ANY = ("SID", "__Secure-1PSID", "__Secure-3PSID")
POLL_S = 0.5
CHROMIUM_ARGS = ["--no-first-run", "--no-default-browser-check", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

Human = Callable[[Any], Awaitable[None]]  # gets the Playwright page; plays the operator
Say = Callable[[str], None]


class LoginError(Exception):
    """The sign-in did not produce a usable login; the message says what to do."""


@dataclass(frozen=True)
class LoginSettings:
    name: str
    cookie_dir: Path
    studio_url: str
    chromium_path: str
    timeout_s: float = 600.0
    headless: bool = False


def no_display_help(name: str, cookie_dir: Path) -> str:
    return (
        f"bpool login: this machine has no display (DISPLAY and WAYLAND_DISPLAY are unset), and "
        f"signing in to Google needs a browser window you can type into. Either:\n"
        f"  1. on a desktop with bpool installed, run `bpool login {name}` there, then copy the "
        f"file here (it is a password: keep it 0600):\n"
        f"       scp cookies/{name}.json THIS_SERVER:{cookie_dir}/{name}.json\n"
        f"     and run `bpool profiles sync` on this server;\n"
        f"  2. or log in to this server with X forwarding (`ssh -X THIS_SERVER`; the server's "
        f"sshd needs X11Forwarding yes and xauth) and run `bpool login {name}` again.\n"
        f"See docs/operations.md, \"Signing an account in\".")


def has_display(env: dict[str, str] | os._Environ = os.environ) -> bool:
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


async def _ready(page: Any) -> bool:
    """The studio's ready state: a prompt box is visible (docs/aistudio-page.md)."""
    try:
        return await page.locator(", ".join(STUDIO.ready)).first.is_visible()
    except Exception:  # the page is navigating: ask again at the next poll
        return False


async def wait_signed_in(context: Any, timeout_s: float) -> Any:
    """The page of `context` that reached the studio's ready state, polled until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for page in context.pages:
            if await _ready(page):
                return page
        if not context.pages:
            raise LoginError("the browser window was closed before the sign-in finished")
        await asyncio.sleep(POLL_S)
    raise LoginError(f"the page did not reach AI Studio within {timeout_s:.0f} s; run "
                     f"`bpool login` again (--timeout S gives more time)")


def check_state(state: dict[str, Any]) -> None:
    names = {c["name"] for c in session_cookies(state)}
    if not names.intersection(REQUIRED_ANY):
        raise LoginError("AI Studio opened, but the browser holds no Google session cookie "
                         f"({', '.join(REQUIRED_ANY)}); nothing was saved")


def save(state: dict[str, Any], path: Path) -> Path | None:
    """Write the profile file under its lock; returns the backup of the file it replaced."""
    if not path.parent.exists():
        config.ensure_private_dir(path.parent)
    with profile_lock(path, wait=True):
        backup = None
        if path.exists():
            backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
            write_private(backup, path.read_bytes())
        write_private(path, json.dumps(state, indent=1).encode())
    try:
        load_profile(path)
    except ProfileError as exc:  # cannot happen for a state Playwright wrote; say so if it does
        raise LoginError(f"the saved file does not validate: {exc.reason}") from None
    return backup


async def sign_in(s: LoginSettings, human: Human | None = None, say: Say = print
                  ) -> dict[str, Any]:
    """Open the studio in a fresh browser, wait for the sign-in, return the storage state."""
    from playwright.async_api import async_playwright

    user_data = tempfile.mkdtemp(prefix="bpool-login-")  # 0700; removed below
    try:
        async with async_playwright() as pw:
            try:
                context = await pw.chromium.launch_persistent_context(
                    user_data, executable_path=s.chromium_path, headless=s.headless,
                    args=CHROMIUM_ARGS, no_viewport=not s.headless)
            except Exception as exc:
                raise LoginError(f"could not start the browser {s.chromium_path}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                url = s.studio_url.rstrip("/") + STUDIO.new_chat_path
                try:
                    await page.goto(url)
                except Exception as exc:  # the site is unreachable: nothing to sign in to
                    raise LoginError(f"could not open {url}: "
                                     f"{str(exc).strip().splitlines()[0]}") from None
                say(f"Sign in to the Google account for profile {s.name} in the browser window "
                    f"(waiting up to {s.timeout_s:.0f} s for AI Studio to open).")
                acting = asyncio.ensure_future(human(page)) if human is not None else None
                try:
                    await wait_signed_in(context, s.timeout_s)
                finally:
                    if acting is not None and not acting.done():
                        acting.cancel()
                if acting is not None and acting.done() and not acting.cancelled() \
                        and acting.exception() is not None:
                    raise acting.exception()  # type: ignore[misc]
                state = await context.storage_state()
            finally:
                await context.close()
    finally:
        shutil.rmtree(user_data, ignore_errors=True)
    check_state(state)
    return state


def login(s: LoginSettings, human: Human | None = None, say: Say = print) -> Path:
    """Sign in and save; returns the profile file. Raises LoginError."""
    if not valid_profile_id(s.name):
        raise LoginError(f"bad profile name {s.name!r}: use {PROFILE_ID_RULE}")
    state = asyncio.run(sign_in(s, human, say))
    path = s.cookie_dir / f"{s.name}.json"
    backup = save(state, path)
    n = len(session_cookies(state))
    say(f"saved {path} (0600; {n} Google session cookies)"
        + (f"; the previous file is kept as {backup}" if backup else ""))
    return path


def run(s: LoginSettings, sync: Callable[[], int], restart: Callable[[str], int],
        env: dict[str, str] | os._Environ = os.environ, human: Human | None = None,
        say: Say = print) -> int:
    """The command: exit 0 signed in, saved and synced; 1 not signed in; 78 no display."""
    if not s.headless and not has_display(env):
        print(no_display_help(s.name, s.cookie_dir), file=sys.stderr)
        return EX_NO_DISPLAY
    existed = (s.cookie_dir / f"{s.name}.json").exists()
    try:
        login(s, human, say)
    except LoginError as exc:
        print(f"bpool login: {exc}", file=sys.stderr)
        return 1
    code = sync()
    if code == 0 and existed:
        code = restart(s.name)  # sync leaves a running worker on its old cookies
    return code
