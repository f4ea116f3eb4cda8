"""The broker core's edges that its main tests pass by: garbage from a worker or a front, a peer
the socket says is unreachable, a front that is gone (pure, no sockets; the Harness of
test_core)."""

from __future__ import annotations

from bpool.pool.core import SendWorker
from bpool.protocol import Cancel, Disconnect, Done, Idle, Started
from test_core import FRONT, Harness, assigns, failures, to_worker


def test_garbage_from_a_worker_is_counted_and_it_is_asked_to_register_again() -> None:
    h = Harness()
    h.ready(b"w1")
    acts = h.core.on_worker_garbage(b"w1", h.now)
    assert acts == [SendWorker(b"w1", Disconnect("undecodable frame: send Ready"))]
    assert h.counters["decode_errors"] == 1
    assert h.core.on_worker_garbage(b"nobody", h.now) == [
        SendWorker(b"nobody", Disconnect("undecodable frame: send Ready"))]
    assert h.counters["decode_errors"] == 2


def test_garbage_still_shows_the_worker_is_alive() -> None:
    h = Harness(heartbeat_interval_s=1.0, heartbeat_liveness=3)
    h.ready(b"w1")
    for _ in range(5):  # 5 s with nothing but garbage from it: alive, not expired
        h.tick(1.0)
        h.core.on_worker_garbage(b"w1", h.now)
    assert h.worker("w1") is not None and h.counters.get("workers_expired", 0) == 0
    h.tick(3.5)  # then true silence
    assert h.worker("w1") is None


def test_an_unreachable_idle_worker_is_removed_and_counted() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    assert h.core.worker_unreachable(b"w1", h.now) == []
    assert h.worker("w1") is None and h.worker("w2") is not None
    assert h.counters["workers_unreachable"] == 1 and h.counters["workers_left"] == 1
    assert h.core.worker_unreachable(b"w1", h.now) == []  # already gone: counted once
    assert h.counters["workers_unreachable"] == 1
    assert assigns(h.submit("j1")) == [(b"w2", "j1")]  # the removed one gets no work


def test_an_unreachable_worker_that_started_its_job_fails_it_naming_the_worker() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    [(holder, _)] = assigns(h.submit("j1"))
    h.w(holder, Started("j1"))
    acts = h.core.worker_unreachable(holder, h.now)
    err = failures(acts)["j1"]
    assert err.kind == "worker_died" and holder.decode() in err.message
    assert "unreachable" in err.message and assigns(acts) == []  # started: never replayed


def test_an_unreachable_worker_whose_job_never_started_hands_it_on() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    assert assigns(h.submit("j1")) == [(b"w1", "j1")]
    acts = h.core.worker_unreachable(b"w1", h.now)
    assert failures(acts) == {} and assigns(acts) == [(b"w2", "j1")]


def test_garbage_from_a_front_is_counted_and_answered_with_nothing() -> None:
    h = Harness()
    assert h.core.on_front_garbage(FRONT, h.now) == []
    assert h.core.on_front_garbage(b"other", h.now) == []
    assert h.counters["decode_errors"] == 2


def test_a_lost_front_cancels_its_own_jobs_only() -> None:
    h = Harness()
    h.ready(b"w1")
    h.submit("mine", front=b"gone")
    h.submit("queued-mine", front=b"gone")  # queued behind it
    h.submit("theirs", front=FRONT)
    acts = h.core.front_unreachable(b"gone", h.now)
    assert sorted(a.msg.job_id for a in to_worker(acts, Cancel)) == ["mine"]
    assert h.counters["fronts_lost"] == 1
    # The worker that held "mine" is free once it is Idle; "theirs" is next, not "queued-mine".
    h.w(b"w1", Done("mine"))
    assert assigns(h.w(b"w1", Idle())) == [(b"w1", "theirs")]
    assert h.core.front_unreachable(b"nobody", h.now) == []
    assert h.counters["fronts_lost"] == 1  # a front with no jobs is not counted
