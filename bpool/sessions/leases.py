"""Account leases on the front (docs/sessions.md "Account leases"): `POST /v1/sessions
{"profile": NAME}` borrows that account's own logged-in browser through the broker instead of a
throwaway one from the placement.

The front asks the broker over its chat link (`LeaseRequest`), gets the worker's loopback CDP
URL (`LeaseGranted`), and shows the lease as a session with `profile` set: the same relay, the
same GET / DELETE. The lease lives in this front's memory; it ends on DELETE, when no client
has been attached and no CDP frame has passed for its idle timeout, at its timeout (the broker's
deadline), or when its worker or the broker goes away (the broker's `Failed`).

Every lease is also a row of the session log (the same log placement writes: SQLite under the
run directory or PostgreSQL), with its profile, when it was connected and ended, why, and the
bytes relayed. A log that cannot be written is logged and never ends or refuses a lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field

import msgspec

from bpool.front.broker_link import BrokerLink
from bpool.front.errors import ApiError
from bpool.protocol import Failed, LeaseGranted
from bpool.sessions import protocol as sp
from bpool.sessions.book import to_record
from bpool.sessions.log import SessionLog
from bpool.sessions.relay import CLOSE_ENDED, Relays

log = logging.getLogger("bpool.front")

KEEP_ENDED = 100  # ended leases still answered by GET, newest last
IDLE_CHECK_S = 0.5
END_REASON = {"timeout": "timeout", "worker_died": "host_lost", "broker_lost": "broker_restart"}


@dataclass
class Leased:
    info: sp.SessionInfo
    last_active: float
    seen: tuple[int, int] = (0, 0)
    task: asyncio.Task | None = field(default=None, repr=False)


class FrontLeases:
    def __init__(self, relays: Relays, book: SessionLog | None = None) -> None:
        self.relays = relays
        self.book = book
        self.by_id: dict[str, Leased] = {}

    def get(self, sid: str) -> sp.SessionInfo | None:
        lease = self.by_id.get(sid)
        return lease.info if lease is not None else None

    def all(self) -> list[sp.SessionInfo]:
        return [lease.info for lease in self.by_id.values()]

    async def create(self, link: BrokerLink, profile: str, timeout_s: float, idle_s: float,
                     key_id: str, wait_s: float) -> sp.SessionInfo:
        sid = "s-" + os.urandom(12).hex()
        queue = link.lease(sid, profile, timeout_s)
        try:
            event = await asyncio.wait_for(queue.get(), wait_s)
        except TimeoutError:
            link.end_lease(sid)
            raise ApiError(503, f"the broker did not grant the lease within {wait_s:g} s",
                           code="lease_timeout", retry_after_s=1.0) from None
        if isinstance(event, Failed):
            link.forget(sid)
            err = event.error
            raise ApiError(err.status, f"cannot lease profile {profile!r}: {err.message}",
                           param="profile", code="lease_refused")
        assert isinstance(event, LeaseGranted)
        now = time.time()
        info = sp.SessionInfo(sid, "ready", f"worker:{profile}", event.ws_url, now,
                              now + timeout_s, timeout_s, idle_s, "none", key_id=key_id,
                              profile=profile)
        lease = self.by_id[sid] = Leased(info, time.monotonic())
        await self._write(lease, created=True)
        lease.task = asyncio.create_task(self._watch(link, lease, queue), name=f"lease-{sid}")
        self._trim()
        log.info("session %s leases profile %s (timeout %g s, idle %g s, key %s)", sid, profile,
                 timeout_s, idle_s, key_id)
        return info

    async def delete(self, link: BrokerLink, sid: str) -> sp.SessionInfo | None:
        lease = self.by_id.get(sid)
        if lease is None:
            return None
        if lease.info.state != "ended":
            link.end_lease(sid)
            await self._ended(lease, "deleted")
            if lease.task is not None:
                lease.task.cancel()
        return lease.info

    async def close_all(self, link: BrokerLink) -> None:
        for lease in list(self.by_id.values()):
            if lease.info.state != "ended":
                await self.delete(link, lease.info.id)

    async def _watch(self, link: BrokerLink, lease: Leased, queue: asyncio.Queue) -> None:
        """Until the broker ends the lease, or the client leaves it idle too long."""
        sid = lease.info.id
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), IDLE_CHECK_S)
            except TimeoutError:
                event = None
            if isinstance(event, Failed):
                reason = END_REASON.get(event.error.kind, "browser_exited")
                log.info("session %s (lease of %s) ended by the pool: %s", sid,
                         lease.info.profile, event.error.message)
                await self._ended(lease, reason)
                return
            now = time.monotonic()
            c = self.relays.counters.get(sid)
            if c is not None:
                traffic = (c.to_browser, c.from_browser)
                if c.client is not None or traffic != lease.seen:
                    lease.seen, lease.last_active = traffic, now
                    if lease.info.state == "ready":
                        self._set(lease, state="connected", connected_at=time.time())
                        await self._write(lease)
            if now - lease.last_active > lease.info.idle_timeout_s:
                link.end_lease(sid)
                await self._ended(lease, "idle")
                return

    def _set(self, lease: Leased, **changes) -> None:
        c = self.relays.counters.get(lease.info.id)
        if c is not None:
            changes.update(bytes_to_browser=c.to_browser, bytes_from_browser=c.from_browser)
        lease.info = msgspec.structs.replace(lease.info, **changes)

    async def _ended(self, lease: Leased, reason: str) -> None:
        self._set(lease, state="ended", ended_at=time.time(), end_reason=reason, ws_url="")
        await self._write(lease)
        c = self.relays.counters.get(lease.info.id)
        if c is not None and c.client is not None:
            await c.client.close(code=CLOSE_ENDED, message=f"session ended: {reason}".encode())

    async def _write(self, lease: Leased, created: bool = False) -> None:
        if self.book is None:
            return
        rec = to_record(lease.info)
        try:
            if created:
                await self.book.created(rec)
            else:
                await self.book.update(
                    rec.id, state=rec.state, connected_at=rec.connected_at,
                    ended_at=rec.ended_at, end_reason=rec.end_reason,
                    bytes_to_browser=rec.bytes_to_browser,
                    bytes_from_browser=rec.bytes_from_browser)
        except Exception as exc:  # the lease matters more than its row
            log.warning("session log: lease %s not written (%s)", rec.id, exc)

    def _trim(self) -> None:
        ended = [sid for sid, lease in self.by_id.items() if lease.info.state == "ended"]
        for sid in ended[:max(0, len(ended) - KEEP_ENDED)]:
            del self.by_id[sid]
