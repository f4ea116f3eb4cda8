"""BrokerCore's exact outputs where its main tests look only at kinds: which front each answer
goes to, the counters, the messages, usage rows, log lines, the boundaries of its timers, the
Retry-After estimate, model bookkeeping as workers come and go, and leases as they pass through
the core (pure, the Harness of test_core). Written against the survivors of
`scripts/mutation pool` (docs/testing.md)."""

from __future__ import annotations

import logging

import pytest

from bpool import config
from bpool.pool.core import BrokerCore, ForwardFront, SendFront, SendWorker
from bpool.protocol import (
    PROTOCOL_VERSION, AccountState, Assign, Assigned, Cancel, Chunk, Disconnect, Done, ErrorInfo,
    Failed, Goodbye, Heartbeat, Idle, JobFailed, Lease, LeaseEnd, LeaseGranted, LeaseRequest,
    Leased, ModelUsage, ProfileInfo, Ready, Started, StatusQuery, StatusReply, Usage, error,
)
from test_core import ENC, FRONT, Harness, assigns, failures, spec, to_worker

OTHER = b"front-2"
WS = "ws://127.0.0.1:9222/devtools/browser/x"
LOGGED_OUT = ErrorInfo("logged_out", "signed out", 503)


def log_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bpool.broker"]


# ---------------------------------------------------------------------------- fronts


def test_every_answer_goes_to_the_front_that_asked_with_its_exact_message():
    h = Harness(max_queue=2)
    h.ready(b"w1", models=["m"])
    assert h.submit("j1", front=OTHER) == [
        SendWorker(b"w1", Assign("j1", spec())), SendFront(OTHER, Assigned("j1", "w1"))]
    assert h.submit("j1", front=OTHER) == [
        SendFront(OTHER, Failed("j1", error("bad_request", "job id 'j1' is already in use")))]
    assert h.submit("j2", model="x", front=OTHER) == [SendFront(OTHER, Failed(
        "j2", error("model_not_found", "model 'x' is not served here; available: m")))]
    assert h.submit("q1", front=OTHER) == [] and h.submit("q2", front=OTHER) == []
    ((front, full),) = [(a.front, a.msg) for a in h.submit("q3", front=OTHER)]
    assert front == OTHER and full.error.kind == "queue_full"
    assert full.error.message == "2 requests already waiting"
    assert h.f(Cancel("q1"), front=OTHER) == [
        SendFront(OTHER, Failed("q1", error("cancelled", "cancelled")))]
    (reply,) = h.f(StatusQuery(5), front=OTHER)
    assert reply.front == OTHER and isinstance(reply.msg, StatusReply)
    site = error("site", "step 'send' failed")
    assert h.w(b"w1", JobFailed("j1", site, output_sent=True)) == [SendFront(OTHER, Failed("j1", site))]


def test_a_model_whose_only_accounts_are_logged_out_fails_at_once_to_its_front():
    h = Harness()
    h.ready(b"w1", models=["m"], unusable=LOGGED_OUT)
    ((front, msg),) = [(a.front, a.msg) for a in h.submit("j1", front=OTHER)]
    assert front == OTHER and msg.error.kind == "no_workers" and "w1 logged_out" in msg.error.message
    assert h.core.status(h.now).queue_length == 0


# ---------------------------------------------------------------------------- models


def test_a_model_is_served_while_any_worker_listing_it_is_registered():
    h = Harness()
    h.ready(b"b", models=["b"])
    for name in (b"a1", b"a2", b"a3"):
        h.ready(name, models=["a", "c"])
    err = failures(h.submit("x", "x"))["x"]
    assert err.message == "model 'x' is not served here; available: a, b, c"

    def served(job_id: str) -> bool:
        acts = h.submit(job_id, "a")
        h.f(Cancel(job_id))
        return "model_not_found" not in {e.kind for e in failures(acts).values()}

    assert served("j0")
    for name, still in ((b"a1", True), (b"a2", True), (b"a3", False)):
        h.core.worker_unreachable(name, h.now)
        assert served(f"after-{name.decode()}") == still
    err = failures(h.submit("j9", "a"))["j9"]
    assert err.message == "model 'a' is not served here; available: b"


def test_unknown_models_are_refused_again_once_the_last_any_model_worker_left():
    h = Harness()
    h.ready(b"m", models=["m"])
    h.ready(b"any1")
    h.ready(b"any2")
    h.w(b"any1", Goodbye("stopping"))
    assert assigns(h.submit("j1", "x")) == [(b"any2", "j1")]  # any2 still serves anything
    h.f(Cancel("j1"))
    h.w(b"any2", Goodbye("stopping"))
    assert failures(h.submit("j2", "x"))["j2"].kind == "model_not_found"


def test_a_moved_job_goes_at_once_to_an_idle_worker_listing_its_model():
    h = Harness()
    h.ready(b"w1", models=["m"])
    h.ready(b"w2", models=["m"])
    h.submit("j1")
    assert assigns(h.w(b"w1", JobFailed("j1", LOGGED_OUT, output_sent=False))) == [(b"w2", "j1")]


def test_a_model_rate_limit_keeps_the_worker_serving_other_models():
    h = Harness()
    h.ready(b"w1")
    h.w(b"w1", AccountState(ErrorInfo("rate_limited", "quota", 429, 30.0), "a"))
    st = h.worker("w1")
    assert (st.state, st.cooling) == ("idle", {"a": 30.0})
    assert assigns(h.submit("j1", "b")) == [(b"w1", "j1")]


# ---------------------------------------------------------------------------- counters


def test_registration_counters_count_each_event():
    h = Harness()
    for _ in range(2):
        assert h.w(b"ghost", Heartbeat()) == [
            SendWorker(b"ghost", Disconnect("unknown worker: send Ready"))]
    v = PROTOCOL_VERSION + 1
    for _ in range(2):
        assert h.ready(b"old", version=v) == [SendWorker(b"old", Disconnect(
            f"protocol version {v} not supported (broker speaks {PROTOCOL_VERSION})"))]
    h.ready(b"w1")
    for _ in range(2):  # the same Ready again: acknowledged, not a new registration
        assert h.ready(b"w1") == [SendWorker(b"w1", Heartbeat())]
    h.ready(b"w2")
    h.ready(b"w1", incarnation="inc-2")  # a new incarnation: the old one leaves
    h.core.worker_unreachable(b"w1", h.now)
    h.core.worker_unreachable(b"w2", h.now)
    c = h.counters
    assert (c["unknown_worker_messages"], c["version_mismatch"], c["repeated_ready"]) == (2, 2, 2)
    assert (c["workers_registered"], c["workers_unreachable"], c["workers_left"]) == (3, 2, 3)


def test_workers_expiring_at_different_times_are_each_counted():
    h = Harness(heartbeat_interval_s=1.0, heartbeat_liveness=3)
    h.ready(b"w1")
    h.tick(1.0)
    h.ready(b"w2")
    h.tick(2.5)
    assert h.worker("w1") is None and h.worker("w2") is not None
    h.tick(1.0)
    assert h.counters["workers_expired"] == 2


def test_job_counters_count_each_event():
    h = Harness(max_queue=1, queue_timeout_s=5.0)
    h.ready(b"w1", models=["m"])
    h.ready(b"w2", models=["m"])
    h.submit("j1", front=b"fa")
    h.submit("j2", front=b"fb")
    h.w(b"w1", Started("j1"))
    h.w(b"w2", Started("j2"))
    h.submit("j1")
    h.submit("j1")  # two duplicates
    h.submit("x1", "x")
    h.submit("x2", "x")  # two unknown models
    h.submit("q1")
    h.submit("q2")
    h.submit("q3")  # q1 waits, q2 and q3 find the queue full
    assert set(failures(h.wait(5.0))) == {"q1"}
    h.submit("q4")
    assert set(failures(h.wait(5.0))) == {"q4"}
    h.core.front_unreachable(b"fa", h.now)
    h.core.front_unreachable(b"fb", h.now)
    c = h.counters
    assert (c["jobs_started"], c["jobs_failed"], c["queue_full"], c["queue_timeout"]) == (2, 8, 2, 2)
    assert (c["fronts_lost"], c["cancelled"]) == (2, 2)


def test_each_whole_account_cool_down_is_counted_for_its_profile():
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    for _ in range(2):
        h.w(b"w1", AccountState(ErrorInfo("rate_limited", "quota", 429, 1.0)))
        assert h.worker("w1").state == "cooling"
        h.wait(1.0)
        assert h.worker("w1").state == "idle"
    assert h.counters["cooldowns:w1"] == 2 and "cooldowns:w2" not in h.counters


# ---------------------------------------------------------------------------- usage and stats


def test_usage_rows_and_worker_stats_add_up_per_profile_and_model():
    h = Harness()
    h.ready(b"w1", models=["m"])
    for job_id, usage in (("j1", Usage(10, 5)), ("j2", Usage(3, 2))):
        h.submit(job_id)
        h.w(b"w1", Started(job_id))
        h.w(b"w1", Done(job_id, usage=usage))
        h.w(b"w1", Idle())
        h.tick(1.0)
    st = h.worker("w1")
    assert (st.jobs_served, st.last_answer_s) == (2, 1.0)
    h.submit("j3")
    h.w(b"w1", JobFailed("j3", error("site", "x"), output_sent=True))
    h.w(b"w1", Idle())
    h.submit("j4")
    h.w(b"w1", Started("j4"))
    h.core.worker_unreachable(b"w1", h.now)
    assert h.core.status(h.now).usage == (
        ModelUsage("w1", "m", 4, 13, 7, {"site": 1, "worker_died": 1}),)
    assert h.counters["jobs_started"] == 3


def test_a_cancelled_answer_is_not_a_last_answer():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    h.w(b"w1", Done("j1", "cancelled"))
    assert h.worker("w1").last_answer_s is None


def test_profile_info_updates_the_cookie_expiry_and_nothing_else():
    h = Harness()
    h.ready(b"w1")
    assert h.w(b"w1", ProfileInfo(1.9e9)) == []
    st = h.worker("w1")
    assert (st.cookie_expires_at, st.state) == (1.9e9, "idle")


# ---------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize("workers, max_queue, expected", [
    (4, 1, 2.5),  # 5 s a job x (1 waiting + 1) / 4 workers
    (3, 0, 1.7),  # 5 / 3, to 0.1 s
    (1, 0, 5.0),
    (10, 0, 1.0),  # at least 1 s
    (1, 2, 5.0),  # at most 5 s
])
def test_retry_after_is_the_queue_drain_time_at_the_starting_average(workers, max_queue, expected):
    h = Harness(max_queue=max_queue)
    for i in range(workers):
        h.ready(f"w{i}".encode())
    for i in range(workers + max_queue):
        h.submit(f"j{i}")
    err = failures(h.submit("over"))["over"]
    assert err.kind == "queue_full" and err.retry_after_s == expected


def test_retry_after_follows_the_moving_average_of_job_lengths():
    h = Harness(max_queue=0)
    for i in range(4):
        h.ready(f"w{i}".encode())
    h.wait(10.0)
    h.submit("j0")
    h.wait(2.0)
    h.finish(b"w0", "j0")  # 2 s: the average moves a fifth of the way from 5 s, to 4.4 s
    for i in range(1, 5):
        h.submit(f"j{i}")
    assert failures(h.submit("over"))["over"].retry_after_s == 1.1  # 4.4 s x 1 / 4


# ---------------------------------------------------------------------------- time


def test_silence_of_exactly_the_liveness_is_still_alive():
    h = Harness(heartbeat_interval_s=1.0, heartbeat_liveness=3)
    h.ready(b"w1")
    h.tick(3.0)
    assert h.worker("w1") is not None
    h.tick(0.25)
    assert h.worker("w1") is None


def test_heartbeats_go_out_once_an_interval_after_the_last_send():
    h = Harness(heartbeat_interval_s=1.0)
    h.tick(10.0)
    h.ready(b"w1")  # acknowledged at once: the last send is at 10 s
    assert to_worker(h.tick(0.5), Heartbeat) == []
    assert to_worker(h.tick(0.5), Heartbeat) == [SendWorker(b"w1", Heartbeat())]


def test_a_worker_expiring_does_not_hold_up_the_heartbeats_of_the_next():
    h = Harness(heartbeat_interval_s=1.0, heartbeat_liveness=3)
    h.ready(b"dead")
    h.ready(b"alive")
    h.now = 3.5
    h.w(b"alive", Heartbeat())
    acts = h.tick()
    assert h.worker("dead") is None
    assert to_worker(acts, Heartbeat) == [SendWorker(b"alive", Heartbeat())]


def test_a_pause_ends_exactly_at_its_end_time():
    h = Harness()
    h.ready(b"w1")
    h.w(b"w1", AccountState(ErrorInfo("paused", "bot check", 503, 4.0)))
    h.wait(3.5)
    assert h.worker("w1").state == "paused"
    h.wait(0.5)
    assert h.worker("w1").state == "idle"


def test_a_model_cool_down_ends_exactly_at_its_end_time():
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j0")  # w1 busy
    h.w(b"w2", AccountState(ErrorInfo("rate_limited", "quota", 429, 4.0), "m"))
    assert assigns(h.submit("j1")) == []  # w1 is merely busy: j1 waits
    assert assigns(h.wait(3.5)) == []
    assert assigns(h.wait(0.5)) == [(b"w2", "j1")]


def test_jobs_that_time_out_together_fail_in_queue_order():
    h = Harness(queue_timeout_s=5.0)
    for job_id in ("j1", "j2", "j3"):
        h.submit(job_id)
    acts = h.tick(5.0)
    assert [a.msg.job_id for a in acts if isinstance(a, SendFront)] == ["j1", "j2", "j3"]


def test_a_queue_timeout_says_how_long_it_waited_and_when_a_resting_account_is_back():
    h = Harness(queue_timeout_s=10.0)
    h.ready(b"w1", models=["m"])
    h.w(b"w1", AccountState(ErrorInfo("paused", "bot check", 503, 8.0)))
    assert failures(h.submit("j1")) == {}  # back within the deadline: it waits
    h.w(b"w1", AccountState(ErrorInfo("paused", "bot check", 503, 300.37)))
    err = failures(h.wait(10.0))["j1"]
    assert err.message == "no worker became free within 10 s"
    assert err.retry_after_s == 290.4


def test_deadlines_of_jobs_that_left_the_queue_neither_pile_up_nor_lose_live_ones():
    h = Harness(queue_timeout_s=60.0)
    h.submit("waiting")
    for i in range(1100):  # far past the point where stale deadline entries are dropped
        h.submit(f"c{i}")
        h.f(Cancel(f"c{i}"))
    h.tick(1.0)
    h.submit("late")
    assert set(failures(h.tick(59.0))) == {"waiting"}
    assert set(failures(h.tick(1.0))) == {"late"}


# ---------------------------------------------------------------------------- moves and losses


def test_a_job_moved_three_times_fails_when_its_fourth_worker_dies():
    h = Harness()
    for i in range(5):
        h.ready(f"w{i}".encode())
    h.submit("j1")
    holder = b"w0"
    for _ in range(3):
        ((holder, _),) = assigns(h.w(holder, JobFailed("j1", LOGGED_OUT, output_sent=False)))
    acts = h.core.worker_unreachable(holder, h.now)
    assert assigns(acts) == [] and failures(acts)["j1"].kind == "worker_died"


def test_lost_jobs_name_the_worker_and_why():
    h = Harness()
    h.tick(1.0)
    for name in (b"gone", b"silent", b"dropper", b"rereg"):
        h.ready(name)
    for job_id in ("j-gone", "j-silent", "j-dropper", "j-rereg"):
        ((holder, _),) = assigns(h.submit(job_id))
        h.w(holder, Started(job_id))
    lost = failures(h.core.worker_unreachable(b"gone", h.now))
    lost |= failures(h.w(b"dropper", Idle()))
    lost |= failures(h.ready(b"rereg", incarnation="inc-2"))
    h.live = {b"dropper", b"rereg"}
    lost |= failures(h.wait(3.5))
    assert {j: e.message for j, e in lost.items()} == {
        "j-gone": "worker gone unreachable while running the job",
        "j-dropper": "worker dropper went idle without finishing the job while running the job",
        "j-rereg": "worker rereg re-registered while running the job",
        "j-silent": "worker silent silent for 3.5 s while running the job",
    }


def test_an_unreachable_workers_unstarted_job_waits_for_the_next_worker():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    h.tick(1.0)
    acts = h.core.worker_unreachable(b"w1", h.now)
    assert acts == [] and h.core.status(h.now).queue_length == 1
    assert assigns(h.ready(b"w2")) == [(b"w2", "j1")]


# ---------------------------------------------------------------------------- leaving and Idle


def test_a_leaving_worker_forwards_its_job_until_done_then_is_forgotten():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    h.w(b"w1", Goodbye("sigterm"))
    raw = ENC.encode(Chunk("j1", 0, "x"))
    assert h.core.on_worker(b"w1", Chunk("j1", 0, "x"), raw, h.now) == [ForwardFront(FRONT, raw)]
    assert h.worker("w1").state == "draining"
    done = Done("j1")
    assert h.w(b"w1", done) == [ForwardFront(FRONT, ENC.encode(done))]
    assert h.worker("w1") is None


def test_a_leaving_worker_that_drops_its_job_hands_it_on_and_is_forgotten():
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j1")
    h.w(b"w1", Goodbye("sigterm"))
    assert assigns(h.w(b"w1", Idle())) == [(b"w2", "j1")]
    assert h.worker("w1") is None


def test_a_broken_worker_stays_draining_after_its_idle():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    h.w(b"w1", JobFailed("j1", ErrorInfo("broken", "browser crashed"), output_sent=True))
    h.w(b"w1", Idle())
    assert h.worker("w1").state == "draining"
    assert assigns(h.submit("j2")) == []


def test_trouble_with_no_account_effect_reported_mid_job_leaves_the_worker_in_rotation():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    h.w(b"w1", AccountState(error("site", "a glitch")))  # held: applied at its Idle
    h.submit("j2")
    h.tick(1.0)
    assert assigns(h.finish(b"w1", "j1")) == [(b"w1", "j2")]
    assert (h.worker("w1").state, h.worker("w1").job_id) == ("busy", "j2")
    # The assignment counts as a send: the next heartbeat is due an interval after it.
    assert to_worker(h.tick(0.5), Heartbeat) == []
    assert to_worker(h.tick(0.5), Heartbeat) == [SendWorker(b"w1", Heartbeat())]


# ---------------------------------------------------------------------------- leases


def test_a_lease_passes_through_the_core_to_the_front_that_asked():
    h = Harness()
    h.ready(b"alice")
    h.ready(b"bob")
    assert h.f(LeaseRequest("l1", "alice", 30.0), front=OTHER) == [SendWorker(b"alice", Lease("l1"))]
    assert h.w(b"alice", Leased("l1", WS)) == [SendFront(OTHER, LeaseGranted("l1", "alice", WS))]
    assert h.f(LeaseEnd("l1"), front=FRONT) == []  # not that front's lease
    assert h.f(LeaseEnd("l1"), front=OTHER) == [SendWorker(b"alice", LeaseEnd("l1"))]
    assert h.w(b"alice", Idle()) == []  # the front ended it: nothing more to tell
    assert h.worker("alice").state == "idle"


def test_a_lease_ends_at_its_deadline():
    h = Harness()
    h.ready(b"alice")
    h.f(LeaseRequest("l1", "alice", 5.0), front=OTHER)
    assert to_worker(h.wait(4.5), LeaseEnd) == []
    acts = h.wait(0.5)
    assert to_worker(acts, LeaseEnd) == [SendWorker(b"alice", LeaseEnd("l1"))]
    assert SendFront(OTHER, Failed("l1", error("timeout", "the lease reached its time limit"))) in acts


def test_every_other_end_of_a_lease_tells_its_front_why():
    h = Harness()
    for name in (b"alice", b"bob", b"carol"):
        h.ready(name)
    for lease_id, profile in (("la", "alice"), ("lb", "bob"), ("lc", "carol")):
        h.f(LeaseRequest(lease_id, profile, 60.0), front=OTHER)
    died = error("worker_died", "the worker ended the lease")
    assert h.w(b"alice", Idle()) == [SendFront(OTHER, Failed("la", died))]
    left = error("worker_died", "the worker left (sigterm)")
    assert h.w(b"bob", Goodbye("sigterm")) == [SendFront(OTHER, Failed("lb", left))]
    gone = error("worker_died", "worker carol unreachable during the lease")
    assert h.core.worker_unreachable(b"carol", h.now) == [SendFront(OTHER, Failed("lc", gone))]


def test_a_lost_front_ends_only_its_own_leases():
    h = Harness()
    h.ready(b"alice")
    h.ready(b"bob")
    h.f(LeaseRequest("la", "alice", 60.0), front=OTHER)
    h.f(LeaseRequest("lb", "bob", 60.0), front=FRONT)
    assert h.core.front_unreachable(OTHER, h.now) == [SendWorker(b"alice", LeaseEnd("la"))]


# ---------------------------------------------------------------------------- log lines


def test_registrations_and_refusals_are_logged_with_what_the_worker_said(caplog):
    caplog.set_level(logging.INFO, logger="bpool.broker")
    h = Harness()
    h.ready(b"w1", models=["b", "a"])
    h.w(b"w2", Ready(PROTOCOL_VERSION, "w2", 77, "inc-w2"))  # no engine, no model list
    h.ready(b"old", version=PROTOCOL_VERSION + 1)
    lines = log_lines(caplog)
    assert "worker w1 registered (pid 1234, camoufox, models a,b)" in lines
    assert "worker w2 registered (pid 77, ?, models any)" in lines
    refused = [r for r in caplog.records if r.name == "bpool.broker" and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in refused] == [f"refused worker old: protocol version {PROTOCOL_VERSION + 1}"]


def test_state_changes_are_logged_except_between_idle_and_busy(caplog):
    caplog.set_level(logging.INFO, logger="bpool.broker")
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    caplog.clear()
    h.submit("j1")
    h.finish(b"w1", "j1")  # idle -> busy -> idle: too common to log
    assert not [line for line in log_lines(caplog) if "->" in line]
    h.w(b"w2", AccountState(LOGGED_OUT))
    h.w(b"w2", AccountState(None))
    assert [line for line in log_lines(caplog) if "->" in line] == [
        "worker w2: idle -> logged_out", "worker w2: logged_out -> idle"]


def test_each_removal_is_logged_with_its_reason(caplog):
    caplog.set_level(logging.INFO, logger="bpool.broker")
    h = Harness()
    for name in (b"bye", b"gone", b"drop", b"done", b"rereg", b"silent"):
        h.ready(name)
    h.w(b"bye", Goodbye("sigterm"))
    h.core.worker_unreachable(b"gone", h.now)
    h.submit("jd")  # to drop
    h.submit("jo")  # to done
    h.w(b"drop", Goodbye("sigterm"))
    h.f(Cancel("jd"))
    h.w(b"drop", Idle())
    h.w(b"done", Goodbye("sigterm"))
    h.w(b"done", Done("jo"))
    h.ready(b"rereg", incarnation="inc-2")
    h.live = {b"rereg"}
    h.wait(1.0)
    h.w(b"silent", Heartbeat())
    h.wait(3.5)
    removed = sorted(line for line in log_lines(caplog) if " removed: " in line)
    assert removed == [
        "worker bye removed: said goodbye (sigterm)",
        "worker done removed: left after its last job",
        "worker drop removed: left after its last job",
        "worker gone removed: unreachable",
        "worker rereg removed: re-registered",
        "worker silent removed: silent for 3.5 s",
    ]


# ---------------------------------------------------------------------------- construction


def test_the_core_defaults_are_the_documented_settings():
    core = BrokerCore()
    assert core.max_queue == config.default("BPOOL_MAX_QUEUE")
    assert core.queue_timeout_s == config.default("BPOOL_QUEUE_TIMEOUT_S")
    assert core.cooldown_s == config.default("BPOOL_COOLDOWN_S")
    assert core.pause_s == config.default("BPOOL_PAUSE_S")
    assert core.heartbeat_interval_s == config.default("BPOOL_HEARTBEAT_INTERVAL_S")
    assert core.expiry_s == core.heartbeat_interval_s * config.default("BPOOL_HEARTBEAT_LIVENESS")
    assert core.cooling_changed is False  # nothing to save yet
