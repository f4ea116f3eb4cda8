"""Account leases on the browser worker (docs/sessions.md "Account leases"): an operator
borrows the account's own Chromium over CDP, typically to log it in again on a headless
server, and the worker then takes the browser back to its clean state.

Chromium listens for CDP on a loopback port only when BPOOL_ACCOUNT_LEASES is on
(engines.lease_args); it writes the port and the browser's path to DevToolsActivePort in its
user-data dir, which is where the endpoint is read. Camoufox (no CDP) and browsers the worker
attached to (not its own to lend) refuse leases.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bpool.protocol import ErrorInfo, error
from bpool.studio.outcomes import BrowserGone, StepError
from bpool.worker.link import BackendDead, JobError

log = logging.getLogger("bpool.browser")
UNUSABLE_KINDS = ("logged_out", "needs_consent")


def devtools_ws_url(user_data: Path) -> str:
    """The browser's CDP WebSocket URL from DevToolsActivePort (port, then path)."""
    try:
        lines = (user_data / "DevToolsActivePort").read_text().split()
    except OSError:
        raise JobError(error("internal", "the browser has no CDP port (DevToolsActivePort "
                                         "missing)")) from None
    if len(lines) < 2 or not lines[0].isdigit() or not lines[1].startswith("/devtools/"):
        raise JobError(error("internal", "the browser's DevToolsActivePort is not readable"))
    return f"ws://127.0.0.1:{int(lines[0])}{lines[1]}"


class Leasable:
    """The lease half of BrowserBackend (browser.py): `browser` and `leases` are set by
    open_studio; `driver`, `unusable`, `account`, `models` by the backend."""

    browser: Any = None  # engines.LaunchedBrowser, or attach.AttachedBrowser
    leases: bool = False  # BPOOL_ACCOUNT_LEASES
    driver: Any
    unusable: ErrorInfo | None
    account: str
    models: tuple[str, ...]
    _lent_pages: frozenset = frozenset()

    async def lease(self) -> str:
        if not self.leases:
            raise JobError(ErrorInfo("bad_request", "account leases are off on this worker "
                                     "(BPOOL_ACCOUNT_LEASES=1 turns them on)", 409))
        if self.browser is None or self.browser.engine != "chromium" or not hasattr(
                self.browser, "dirs"):
            raise JobError(ErrorInfo("bad_request", "only a Chromium the worker started itself "
                                     "can be leased (not Camoufox, not an attached browser)",
                                     409))
        self._lent_pages = frozenset(self.browser.context.pages)
        return devtools_ws_url(self.browser.dirs.user_data)

    async def end_lease(self) -> ErrorInfo | None:
        """Close what the client opened, then a new chat: the normal reset, or for an account
        that was out of rotation the full open, which says whether the login works now."""
        try:
            for page in list(self.browser.context.pages):
                if page not in self._lent_pages and page is not self.driver.page:
                    await page.close()
            self._lent_pages = frozenset()
            if self.unusable is None:
                await self.driver.reset()
                return None
            try:
                await self.driver.open()
            except StepError as exc:
                if exc.kind in UNUSABLE_KINDS:
                    self.unusable = exc.to_error()
                    return self.unusable
                raise
            self.unusable = None
            self.account, self.models = self.driver.account, self.driver.models
            log.info("account %s is logged in again", self.account or "(unknown)")
            return None
        except BrowserGone as exc:
            raise BackendDead(str(exc)) from None
