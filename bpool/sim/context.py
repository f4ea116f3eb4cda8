"""What the page origin and the RPC host share: settings, state, accounts, and each other's URL."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from bpool.sim.accounts import SESSION_COOKIE, Account, AccountBook
from bpool.sim.settings import SimSettings
from bpool.sim.state import SimState

log = logging.getLogger("bpool.sim")


@dataclass
class Origins:
    """Filled in once both sites are bound (ports may be chosen by the OS)."""

    page: str = ""
    rpc: str = ""


@dataclass
class Shared:
    settings: SimSettings
    state: SimState
    book: AccountBook
    origins: Origins


SHARED = web.AppKey("shared", Shared)


def shared(request: web.Request) -> Shared:
    return request.app[SHARED]


def account_of(request: web.Request) -> Account | None:
    """The live account behind the request's session cookie (cookies are per host, not per port,
    so the page's SID reaches the RPC host too)."""
    return shared(request).book.by_session(request.cookies.get(SESSION_COOKIE))
