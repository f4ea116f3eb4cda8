"""Account leases in the broker core: who may be leased, no jobs while leased, and every way a
lease ends (docs/sessions.md "Account leases")."""

from __future__ import annotations

from bpool.pool.core import SendFront, SendWorker
from bpool.protocol import (
    AccountState, Assign, Failed, Heartbeat, Idle, Lease, LeaseEnd, LeaseFailed, LeaseGranted,
    LeaseRequest, Leased, Goodbye, error,
)
from tests.pool.test_core import FRONT, Harness, assigns

WS = "ws://127.0.0.1:9222/devtools/browser/x"


def to_front(acts, kind) -> list:
    return [a.msg for a in acts if isinstance(a, SendFront) and isinstance(a.msg, kind)]


def to_worker(acts, kind) -> list:
    return [(a.identity, a.msg) for a in acts
            if isinstance(a, SendWorker) and isinstance(a.msg, kind)]


def lease(h: Harness, lease_id: str, profile: str, timeout_s: float = 60.0) -> list:
    return h.f(LeaseRequest(lease_id, profile, timeout_s))


def test_idle_worker_is_leased_gets_no_job_and_comes_back_after_its_reset():
    h = Harness()
    h.ready(b"alice")
    acts = lease(h, "l1", "alice")
    assert to_worker(acts, Lease) == [(b"alice", Lease("l1"))]
    assert h.worker("alice").state == "leased"
    assert to_front(h.w(b"alice", Leased("l1", WS)), LeaseGranted) == [
        LeaseGranted("l1", "alice", WS)]
    assert assigns(h.submit("j1")) == []  # queued: its only worker is leased
    assert h.worker("alice").job_id is None
    end = h.f(LeaseEnd("l1"))
    assert to_worker(end, LeaseEnd) == [(b"alice", LeaseEnd("l1"))]
    assert h.worker("alice").state == "leased"  # until the worker has reset its browser
    back = h.w(b"alice", Idle())
    assert assigns(back) == [(b"alice", "j1")]  # the waiting job goes to it at once
    assert to_front(back, Failed) == []  # the front ended the lease itself: nothing to tell


def test_refusals_busy_second_lease_unknown_profile_and_reused_id():
    h = Harness()
    h.ready(b"alice")
    h.ready(b"bob")
    h.submit("j1")  # goes to alice (idle the longest)
    (busy,) = to_front(lease(h, "l1", "alice"), Failed)
    assert busy.error.status == 409 and "not free" in busy.error.message
    (unknown,) = to_front(lease(h, "l2", "carol"), Failed)
    assert unknown.error.status == 404
    assert to_worker(lease(h, "l3", "bob"), Lease) == [(b"bob", Lease("l3"))]
    (again,) = to_front(lease(h, "l4", "bob"), Failed)
    assert again.error.status == 409 and "already leased" in again.error.message
    (reused,) = to_front(lease(h, "l3", "alice"), Failed)
    assert reused.error.status == 400
    assert h.worker("alice").state == "busy" and h.worker("bob").state == "leased"


def test_logged_out_worker_is_leased_and_returns_to_rotation_only_when_repaired():
    h = Harness()
    h.ready(b"alice", unusable=error("logged_out", "signed out"))
    assert h.worker("alice").state == "logged_out"
    assert to_worker(lease(h, "l1", "alice"), Lease)
    h.w(b"alice", Leased("l1", WS))
    h.f(LeaseEnd("l1"))
    h.w(b"alice", Idle())  # the operator did not log it in: still out
    assert h.worker("alice").state == "logged_out"
    lease(h, "l2", "alice")
    h.f(LeaseEnd("l2"))
    h.w(b"alice", AccountState(None))  # the worker found the account logged in again
    h.w(b"alice", Idle())
    assert h.worker("alice").state == "idle"
    assert assigns(h.submit("j1")) == [(b"alice", "j1")]


def test_lease_times_out_at_the_broker_deadline():
    h = Harness()
    h.ready(b"alice")
    lease(h, "l1", "alice", timeout_s=5.0)
    h.w(b"alice", Leased("l1", WS))
    acts = h.wait(6.0)
    assert to_worker(acts, LeaseEnd) == [(b"alice", LeaseEnd("l1"))]
    (failed,) = to_front(acts, Failed)
    assert failed.job_id == "l1" and failed.error.kind == "timeout"
    assert to_front(h.w(b"alice", Idle()), Failed) == []  # told once
    assert h.worker("alice").state == "idle"


def test_worker_that_dies_or_leaves_while_leased_ends_the_lease_for_the_front():
    h = Harness()
    h.ready(b"alice")
    h.ready(b"bob")
    lease(h, "l1", "alice")
    lease(h, "l2", "bob")
    h.live.discard(b"alice")  # alice stops heartbeating
    acts = h.wait(5.0)
    (died,) = to_front(acts, Failed)
    assert died.job_id == "l1" and died.error.kind == "worker_died"
    assert h.worker("alice") is None
    (left,) = to_front(h.w(b"bob", Goodbye("stopping")), Failed)
    assert left.job_id == "l2"
    assert h.worker("bob") is None


def test_worker_refusal_reaches_the_front_and_the_worker_goes_back_idle():
    h = Harness()
    h.ready(b"alice")
    lease(h, "l1", "alice")
    (refused,) = to_front(h.w(b"alice", LeaseFailed("l1", error("bad_request", "no CDP"))), Failed)
    assert refused.error.message == "no CDP"
    h.w(b"alice", Idle())
    assert h.worker("alice").state == "idle"
    assert to_worker(lease(h, "l2", "alice"), Lease)  # a new lease is possible again


def test_lost_front_ends_its_leases_and_heartbeats_continue():
    h = Harness()
    h.ready(b"alice")
    lease(h, "l1", "alice")
    acts = h.core.front_unreachable(FRONT, h.now)
    assert to_worker(acts, LeaseEnd) == [(b"alice", LeaseEnd("l1"))]
    assert to_worker(h.wait(2.0), Heartbeat)  # a leased worker is still heartbeated
    assert not to_worker(h.submit("j1"), Assign)
