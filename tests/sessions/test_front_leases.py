"""The front's record of account leases (bpool/sessions/leases.py) with a stand-in broker link:
a refusal is the broker's status, and a lease ends when idle or when the pool ends it."""

from __future__ import annotations

import asyncio
import time

import pytest

from bpool.front.errors import ApiError
from bpool.protocol import ErrorInfo, Failed, LeaseGranted, error
from bpool.sessions.leases import FrontLeases
from bpool.sessions.relay import Relays

WS = "ws://127.0.0.1:1/devtools/browser/x"


class StubLink:
    """What FrontLeases uses of BrokerLink; `answer` is what the broker says first."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.queues: dict[str, asyncio.Queue] = {}
        self.ended: list[str] = []

    def lease(self, lease_id: str, profile_id: str, timeout_s: float) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        q.put_nowait(self.answer(lease_id, profile_id))
        self.queues[lease_id] = q
        return q

    def end_lease(self, lease_id: str) -> None:
        self.ended.append(lease_id)

    def forget(self, lease_id: str) -> None:
        self.queues.pop(lease_id, None)


async def wait_for(check, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_refused_lease_is_the_brokers_status() -> None:
    link = StubLink(lambda lid, p: Failed(lid, ErrorInfo("bad_request", "already leased", 409)))
    with pytest.raises(ApiError) as exc:
        await FrontLeases(Relays()).create(link, "alice", 60, 10, "k", 5)
    assert exc.value.status == 409 and "already leased" in str(exc.value)


async def test_an_unused_lease_ends_idle_and_gives_the_browser_back() -> None:
    link = StubLink(lambda lid, p: LeaseGranted(lid, p, WS))
    leases = FrontLeases(Relays())
    info = await leases.create(link, "alice", 60, 0.2, "k", 5)
    assert (info.profile, info.ws_url, info.state) == ("alice", WS, "ready")
    await wait_for(lambda: leases.get(info.id).state == "ended")
    assert leases.get(info.id).end_reason == "idle" and link.ended == [info.id]


async def test_the_pool_ending_a_lease_ends_the_session_with_its_reason() -> None:
    link = StubLink(lambda lid, p: LeaseGranted(lid, p, WS))
    leases = FrontLeases(Relays())
    info = await leases.create(link, "alice", 60, 60, "k", 5)
    link.queues[info.id].put_nowait(Failed(info.id, error("worker_died", "gone")))
    await wait_for(lambda: leases.get(info.id).state == "ended")
    assert leases.get(info.id).end_reason == "host_lost"
    assert link.ended == []  # nothing to give back: the pool ended it
    assert (await leases.delete(link, info.id)).end_reason == "host_lost"
