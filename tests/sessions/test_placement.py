"""The placement core and the sweeper, driven directly with a fake clock (no sockets)."""

from __future__ import annotations

import pytest

from bpool.sessions import protocol as sp
from bpool.sessions.placement import LogCreated, LogUpdate, PlacementCore, ToFront, ToHost
from bpool.sessions.sweeper import Timing, due

FRONT = b"front"


def core() -> PlacementCore:
    return PlacementCore(heartbeat_interval_s=1.0, heartbeat_liveness=3)


def ready(c: PlacementCore, ident: bytes, cap: int, now: float = 0.0, name: str = "",
          sessions: tuple = ()) -> list:
    return c.on_host(ident, sp.HostReady(sp.SESSION_PROTOCOL_VERSION, name or ident.decode(),
                                         1, "inc", cap, sessions), now)


def create(c: PlacementCore, now: float = 0.0, req: int = 1, **kw) -> list:
    args = {"timeout_s": 3600.0, "idle_timeout_s": 300.0, "record": "none", "queue_s": 0.0,
            **kw}
    return c.on_front(FRONT, sp.CreateSession(req, **args), now)


def started(c: PlacementCore, acts: list, now: float = 0.0) -> tuple[str, bytes, list]:
    start = next(a for a in acts if isinstance(a, ToHost) and isinstance(a.msg, sp.StartSession))
    sid = start.msg.session_id
    return sid, start.identity, c.on_host(start.identity, sp.SessionStarted(
        sid, f"ws://127.0.0.1:1/devtools/browser/{sid}", 99), now)


def replies(acts: list) -> list:
    return [a.msg for a in acts if isinstance(a, ToFront)]


def test_a_session_goes_to_the_host_with_the_most_free_capacity() -> None:
    c = core()
    ready(c, b"a", 2)
    ready(c, b"b", 3)
    placed = []
    for i in range(5):
        sid, host, acts = started(c, create(c, req=i))
        placed.append(host)
        (reply,) = replies(acts)
        assert reply.req == i and reply.session.state == "ready" and reply.session.ws_url
    # b (3 free) first, then ties go to the host registered first.
    assert placed == [b"b", b"a", b"b", b"a", b"b"]
    (full,) = replies(create(c, req=9))
    assert full.error == "no_capacity" and 1 <= full.retry_after_s <= 60


def test_no_host_means_no_capacity_at_once() -> None:
    (reply,) = replies(create(core()))
    assert reply.error == "no_capacity" and "no session host" in reply.message


def test_a_queued_session_starts_when_a_browser_frees_and_expires_otherwise() -> None:
    c = core()
    ready(c, b"a", 1)
    first, host, _ = started(c, create(c, req=1))
    queued = create(c, 1.0, req=2, queue_s=5.0)
    assert replies(queued) == [] and any(isinstance(a, LogCreated) for a in queued)
    assert c.pong(0).states["queued"] == 1
    acts = c.on_front(FRONT, sp.DeleteSession(3, first), 2.0)
    assert [a.msg.session_id for a in acts if isinstance(a, ToHost)
            if isinstance(a.msg, sp.StopSession)] == [first]
    second, _, acts = started(c, acts, 3.0)
    assert replies(acts)[0].req == 2 and second != first
    # Full again: a third waits 5 s and is then refused.
    create(c, 4.0, req=4, queue_s=5.0)
    assert replies(c.tick(8.0)) == []
    (late,) = replies(c.tick(9.5))
    assert late.req == 4 and late.error == "no_capacity"


def test_the_sweeper_ends_idle_and_overlong_sessions_and_stops_their_browsers() -> None:
    c = core()
    ready(c, b"a", 5)
    idle, _, _ = started(c, create(c, 0.0, timeout_s=100.0, idle_timeout_s=10.0), 1.0)
    busy, _, _ = started(c, create(c, 0.0, timeout_s=30.0, idle_timeout_s=10.0), 1.0)
    for t in range(2, 30, 2):  # frames keep `busy` alive, never `idle`
        c.on_front(FRONT, sp.Activity((sp.Traffic(busy, t, t, True),)), float(t))
        c.on_host(b"a", sp.HostBeat(), float(t))
        acts = c.tick(float(t) + 0.5)
        if t + 0.5 >= 11.0 and c.get(idle).state != "ended":
            pytest.fail("idle session not swept")
    assert c.get(idle).end_reason == "idle" and c.get(busy).state == "connected"
    acts = c.tick(30.0)
    assert c.get(busy).end_reason == "timeout"
    assert [a.msg for a in acts if isinstance(a, ToHost)
            and not isinstance(a.msg, sp.HostBeat)] == [sp.StopSession(busy, "timeout")]
    logged = [a for a in acts if isinstance(a, LogUpdate)]
    assert logged[0].fields["end_reason"] == "timeout" and logged[0].fields["bytes_to_browser"] == 28
    assert c.pong(0).sweeps == {"idle": 1, "timeout": 1}


def test_a_silent_host_loses_its_sessions_within_the_heartbeat_window() -> None:
    c = core()
    ready(c, b"a", 1)
    ready(c, b"b", 1)
    on_a, host_a, _ = started(c, create(c, req=1))
    on_b, host_b, _ = started(c, create(c, req=2))
    c.on_host(host_b, sp.HostBeat(), 2.9)
    assert c.get(on_a).state == "ready"
    c.tick(3.01)  # a: silent for more than 1 s x 3
    assert c.get(on_a).end_reason == "host_lost" and c.get(on_b).state == "ready"
    assert [h.host_id for h in c.hosts.values()] == [host_b.decode()]
    # Its messages are now unknown: it is told to register again.
    assert c.on_host(host_a, sp.HostBeat(), 3.5) == [ToHost(host_a, sp.HostDisconnect())]


def test_a_host_registering_again_keeps_what_it_still_runs() -> None:
    c = core()
    ready(c, b"a", 2, name="h")
    kept, _, _ = started(c, create(c, req=1))
    lost, _, _ = started(c, create(c, req=2))
    acts = ready(c, b"a2", 2, 1.0, name="h", sessions=(sp.HostSession(kept, "ws://x"),))
    assert c.get(kept).state == "ready" and c.get(lost).end_reason == "host_lost"
    assert not [a for a in acts if isinstance(a, ToHost)]
    # A broker restart forgot everything: the host is told to stop what nobody knows.
    fresh = core()
    acts = ready(fresh, b"a3", 2, name="h", sessions=(sp.HostSession(kept, "ws://x"),))
    assert [a.msg for a in acts] == [sp.StopSession(kept, "broker_restart")]


def test_a_failed_start_is_reported_and_frees_the_slot() -> None:
    c = core()
    ready(c, b"a", 1)
    acts = create(c, req=7)
    sid = next(a.msg.session_id for a in acts if isinstance(a, ToHost))
    (reply,) = replies(c.on_host(b"a", sp.StartFailed(sid, "no CDP endpoint"), 1.0))
    assert reply.req == 7 and reply.error == "start_failed" and "no CDP" in reply.message
    assert c.hosts[b"a"].free == 1


def test_due_reasons() -> None:
    t = Timing("s", "ready", created_at=0, timeout_s=100, idle_timeout_s=10, last_activity=5)
    assert due([t], 14.9) == [] and due([t], 15) == [("s", "idle")]
    assert due([t], 100) == [("s", "timeout")]  # the lifetime wins over idleness
    starting = Timing("s", "starting", 0, 100, 1, 0)
    assert due([starting], 50) == []  # a browser still starting is not idle
    queued = Timing("q", "queued", 0, 100, 1, 0, queue_deadline=3)
    assert due([queued], 2.9) == [] and due([queued], 3) == [("q", "queue_timeout")]


def test_a_host_that_never_answers_a_start_fails_it_and_frees_the_slot() -> None:
    c = PlacementCore(1.0, 3, start_timeout_s=10.0)
    ready(c, b"a", 1)
    acts = create(c, req=5)
    sid = next(a.msg.session_id for a in acts if isinstance(a, ToHost))
    c.on_host(b"a", sp.HostBeat(), 14.0)  # alive, but the start is never answered
    assert replies(c.tick(14.9)) == [] and c.get(sid).state == "starting"
    acts = c.tick(15.0)  # its own start timeout (10 s) plus a margin
    assert c.get(sid).end_reason == "start_failed"
    (reply,) = replies(acts)
    assert reply.req == 5 and reply.error == "start_failed"
    assert sp.StopSession(sid, "start_failed") in [a.msg for a in acts if isinstance(a, ToHost)]
    assert c.hosts[b"a"].free == 1
