"""Account leases in the worker's state machine (LinkCore, fake clock; docs/sessions.md "Account
leases"): who may be leased, what is said and when, how the browser is taken back, and the
finer points of each message (exact refusals, lease ids, the heartbeat clock)."""

from __future__ import annotations

from bpool.protocol import (AccountState, Assign, Chunk, Disconnect, Done, ErrorInfo, Goodbye,
                            Heartbeat, Idle, JobFailed, Lease, LeaseEnd, LeaseFailed, Leased,
                            NativeCall, Started, error)
from bpool.worker.link_core import (EndLease, Exit, Finished, LinkCore, Reconnect, Send,
                                    StartLease, StartRun)
from tests.worker.test_link_core import READY, SPEC, busy, registered, sent

WS = "ws://127.0.0.1:41234/devtools/browser/abc"
BUSY = ErrorInfo("bad_request", "worker busy", 409)  # the broker answers the client 409
LOGGED_OUT = error("logged_out", "still signed out")


def leased(lease_id: str = "l1", now: float = 0.0) -> LinkCore:
    c = registered(now)
    assert c.on_message(Lease(lease_id), now) == [StartLease(lease_id)]
    assert c.lease_started(lease_id, WS, None, now) == [Send(Leased(lease_id, WS))]
    return c


def test_leased_carries_the_endpoint_and_counts_as_a_send() -> None:
    c = registered()  # Ready at 0.0
    assert c.on_message(Lease("l1"), 0.1) == [StartLease("l1")]
    assert c.lease_started("l1", WS, None, 0.5) == [Send(Leased("l1", WS))]
    assert sent(c.tick(1.4)) == []  # 0.9 s after Leased
    assert sent(c.tick(1.5)) == [Heartbeat()]  # a leased worker keeps heartbeating


def test_a_lease_is_refused_while_a_job_runs_and_the_job_goes_on() -> None:
    c = busy("j1")  # Ready at 0.0
    assert c.on_message(Lease("l1"), 0.2) == [Send(LeaseFailed("l1", BUSY))]
    assert sent(c.tick(1.1)) == []  # the refusal counted as a send at 0.2
    assert sent(c.tick(1.2)) == [Heartbeat()]
    c.on_message(Heartbeat(), 1.3)
    assert sent(c.run_finished("j1", Finished("stop"), 1.4)) == [Started("j1"),
                                                                  Done("j1", "stop", None)]
    assert sent(c.reset_finished("j1", True, 1.5)) == [Idle()]  # not held by a lease


def test_a_second_lease_is_refused_and_calls_for_it_leave_the_first_alone() -> None:
    c = leased("l1")
    assert c.on_message(Lease("l2"), 0.1) == [Send(LeaseFailed("l2", BUSY))]
    assert c.on_message(LeaseEnd("l2"), 0.2) == []
    assert c.lease_started("l2", WS, None, 0.3) == []
    assert c.lease_started("l2", None, None, 0.3) == []
    assert c.lease_finished("l2", True, None, 0.4) == []
    assert c.on_message(LeaseEnd("l1"), 0.5) == [EndLease("l1")]  # the first is still on


def test_a_lease_is_refused_while_stopping() -> None:
    c = registered()
    c.stop(0.1)
    assert c.on_message(Lease("l1"), 0.2) == [Send(LeaseFailed("l1", BUSY))]
    assert c.tick(0.3) == [Exit(0)]  # nothing held: the drain is over at once


def test_a_job_is_refused_while_leased() -> None:
    c = leased("l1")
    assert c.on_message(Assign("j1", SPEC), 0.1) == [
        Send(JobFailed("j1", error("internal", "worker busy"), False))]
    assert c.job is None


def test_lease_end_only_for_the_lease_held_and_only_once() -> None:
    c = registered()
    assert c.on_message(LeaseEnd("l1"), 0.1) == []  # nothing leased
    c = leased("l1")
    assert c.on_message(LeaseEnd("other"), 0.1) == []
    assert c.on_message(LeaseEnd("l1"), 0.2) == [EndLease("l1")]
    assert c.on_message(LeaseEnd("l1"), 0.3) == []  # already being taken back
    assert sent(c.tick(0.4)) == []  # no Ready, no Idle while the browser is not back


def test_a_lease_ended_before_the_browser_opened_never_says_leased() -> None:
    c = registered()
    c.on_message(Lease("l1"), 0.1)
    assert c.on_message(LeaseEnd("l1"), 0.2) == [EndLease("l1")]
    assert c.lease_started("l1", WS, None, 0.3) == []
    assert c.lease_started("l1", None, None, 0.3) == []  # no refusal, no second take-back
    assert sent(c.lease_finished("l1", True, None, 0.4)) == [AccountState(None), Idle()]


def test_no_endpoint_without_a_reason_is_an_internal_failure_and_is_taken_back() -> None:
    c = registered()
    c.on_message(Lease("l1"), 0.1)
    assert c.lease_started("l1", None, None, 0.2) == [
        Send(LeaseFailed("l1", error("internal", "the browser has no CDP endpoint"))),
        EndLease("l1")]
    assert c.on_message(LeaseEnd("l1"), 0.3) == []  # the broker's LeaseEnd: already under way
    assert sent(c.tick(1.1)) == []  # the refusal counted as a send at 0.2
    assert sent(c.tick(1.2)) == [Heartbeat()]


def test_no_endpoint_with_a_reason_passes_the_reason_on() -> None:
    c = registered()
    c.on_message(Lease("l1"), 0.1)
    err = ErrorInfo("bad_request", "a camoufox worker cannot be leased", 409)
    assert c.lease_started("l1", None, err, 0.2) == [Send(LeaseFailed("l1", err)), EndLease("l1")]


def test_the_account_state_found_after_the_lease_precedes_idle() -> None:
    c = leased("l1")
    c.on_message(LeaseEnd("l1"), 0.1)
    assert c.lease_finished("l1", True, LOGGED_OUT, 0.5) == [
        Send(AccountState(LOGGED_OUT)), Send(Idle())]
    assert sent(c.tick(1.4)) == []  # both counted as sends at 0.5
    assert sent(c.tick(1.5)) == [Heartbeat()]
    assert c.lease_finished("l1", True, None, 1.6) == []  # over once
    assert c.on_message(LeaseEnd("l1"), 1.7) == []


def test_after_the_lease_the_worker_takes_jobs_and_leases_again() -> None:
    c = leased("l1")
    c.on_message(LeaseEnd("l1"), 0.1)
    assert sent(c.lease_finished("l1", True, None, 0.2)) == [AccountState(None), Idle()]
    assert c.on_message(Lease("l2"), 0.3) == [StartLease("l2")]
    assert c.lease_started("l2", WS, None, 0.4) == [Send(Leased("l2", WS))]
    c.on_message(LeaseEnd("l2"), 0.5)
    c.lease_finished("l2", True, None, 0.6)
    assert c.on_message(Assign("j1", SPEC), 0.7) == [StartRun("j1", SPEC)]


def test_a_browser_that_could_not_be_taken_back_ends_the_worker_without_idle() -> None:
    c = leased("l1")
    c.on_message(LeaseEnd("l1"), 0.1)
    assert c.lease_finished("l1", False, None, 0.2) == []
    assert c.tick(0.3) == [Send(Goodbye("browser died")), Exit(1)]


def test_a_silent_broker_takes_the_browser_back_then_registers_with_the_ready() -> None:
    c = leased("l1")
    c.on_message(Heartbeat(), 1.0)
    # Silent for more than interval x liveness; no Ready while the browser is lent.
    assert c.tick(4.1) == [EndLease("l1"), Reconnect()]
    assert sent(c.tick(5.5)) == []  # no Ready while the browser is lent
    # Not registered: the account's state travels in the next Ready, not as AccountState.
    assert c.lease_finished("l1", True, LOGGED_OUT, 5.6) == []
    assert sent(c.tick(5.7)) == [READY]


def test_disconnect_before_the_browser_opened_says_nothing_about_the_lease() -> None:
    c = registered()
    c.on_message(Lease("l1"), 0.1)
    assert c.on_message(Disconnect("broker restarted"), 0.2) == [EndLease("l1")]
    assert c.lease_started("l1", WS, None, 0.3) == []
    assert c.on_message(Disconnect("broker restarted"), 0.35) == []  # already being taken back
    assert sent(c.tick(0.4)) == []
    assert c.lease_finished("l1", True, None, 0.5) == []
    assert sent(c.tick(0.6)) == [READY]


def test_a_tool_call_alone_is_output_and_travels_in_the_chunk() -> None:
    c = busy("j1")
    call = NativeCall("get_weather", '{"city": "Oslo"}')
    assert sent(c.emit("j1", "", "", 0.1, (call,))) == [Started("j1"),
                                                       Chunk("j1", 0, "", "", (call,))]
