"""The worker's half of the broker contract, driven synchronously with a fake clock (no zmq)."""

from __future__ import annotations

from bpool.protocol import (Assign, Cancel, Chunk, ChatMessage, Disconnect, Done, Goodbye,
                            Heartbeat, Idle, JobFailed, JobSpec, Ready, Started, error)
from bpool.worker.link_core import (BackendGone, Cancelled, CancelRun, Exit, Failed, Finished,
                                    LinkCore, LinkTimes, Reconnect, ResetPage, Send, StartRun)

SPEC = JobSpec("m", (ChatMessage("user", "hi"),))
READY = Ready(1, "alice", 42, "inc", "chromium", "", (), None)


def core(**times) -> LinkCore:
    c = LinkCore(lambda: READY, LinkTimes(**{"heartbeat_interval_s": 1.0, "heartbeat_liveness": 3,
                                             "drain_timeout_s": 5.0, **times}))
    c.connected(0.0)
    return c


def sent(actions) -> list:
    return [a.msg for a in actions if isinstance(a, Send)]


def registered(now: float = 0.0) -> LinkCore:
    c = core()
    assert sent(c.tick(now)) == [READY]
    c.on_message(Heartbeat(), now)
    return c


def busy(job_id: str = "j1", now: float = 0.0) -> LinkCore:
    c = registered(now)
    assert c.on_message(Assign(job_id, SPEC), now) == [StartRun(job_id, SPEC)]
    return c


def test_ready_repeats_each_interval_until_the_broker_answers_then_heartbeats() -> None:
    c = core()
    assert sent(c.tick(0.0)) == [READY]
    assert sent(c.tick(0.5)) == []
    assert sent(c.tick(1.0)) == [READY]  # no answer yet: say it again
    c.on_message(Heartbeat(), 1.2)
    assert sent(c.tick(2.0)) == [Heartbeat()]


def test_a_busy_worker_keeps_heartbeating() -> None:
    c = busy()
    assert sent(c.tick(1.0)) == [Heartbeat()]
    c.on_message(Heartbeat(), 1.5)
    assert sent(c.tick(2.0)) == [Heartbeat()]


def test_a_second_assign_while_busy_is_refused_and_does_not_replace_the_job() -> None:
    c = busy("j1")
    acts = c.on_message(Assign("j2", SPEC), 0.1)
    assert not any(isinstance(a, StartRun) for a in acts)
    [refusal] = sent(acts)
    assert isinstance(refusal, JobFailed) and refusal.job_id == "j2" and not refusal.output_sent
    assert c.job is not None and c.job.id == "j1"


def test_cancel_for_another_job_is_ignored_and_for_ours_cancels_the_run() -> None:
    c = busy("j1")
    assert c.on_message(Cancel("other"), 0.1) == []
    assert c.on_message(Cancel("j1"), 0.2) == [CancelRun("j1")]
    acts = c.run_finished("j1", Cancelled(), 0.3)
    assert sent(acts) == [Done("j1", "cancelled")]


def test_started_precedes_the_first_chunk_and_output_is_remembered_for_failures() -> None:
    c = busy()
    assert sent(c.emit("j1", "", "", 0.1)) == []  # nothing to say: not even Started
    assert sent(c.emit("j1", "Hel", "", 0.2)) == [Started("j1"), Chunk("j1", 0, "Hel", "")]
    assert sent(c.emit("j1", "lo", "", 0.3)) == [Chunk("j1", 1, "lo", "")]
    err = error("site", "the page broke")
    [failed] = sent(c.run_finished("j1", Failed(err), 0.4))
    assert failed == JobFailed("j1", err, True)  # the broker must not replay it elsewhere


def test_a_failure_before_any_output_says_so() -> None:
    c = busy()
    err = error("rate_limited", "quota")
    assert sent(c.run_finished("j1", Failed(err), 0.4)) == [JobFailed("j1", err, False)]


def test_idle_is_sent_only_after_the_page_was_reset() -> None:
    c = busy()
    acts = c.run_finished("j1", Finished("stop"), 0.5)
    assert sent(acts) == [Started("j1"), Done("j1", "stop", None)]
    assert ResetPage("j1") in acts and Idle() not in sent(acts)
    assert sent(c.reset_finished("j1", True, 0.6)) == [Idle()]
    assert c.job is None


def test_a_failed_reset_ends_the_worker_with_goodbye_and_exit_1() -> None:
    c = busy()
    c.run_finished("j1", Finished("stop"), 0.5)
    assert sent(c.reset_finished("j1", False, 0.6)) == []  # never Idle on a broken page
    acts = c.tick(0.7)
    assert sent(acts) == [Goodbye("browser died")] and Exit(1) in acts


def test_a_dead_browser_fails_the_job_as_broken_without_a_reset() -> None:
    c = busy()
    c.emit("j1", "x", "", 0.1)
    acts = c.run_finished("j1", BackendGone("crashed"), 0.2)
    [failed] = [m for m in sent(acts) if isinstance(m, JobFailed)]
    assert failed.error.kind == "broken" and failed.output_sent
    assert not any(isinstance(a, ResetPage) for a in acts)
    assert Exit(1) in c.tick(0.3)


def test_disconnect_re_registers_at_once_and_the_forgotten_job_stays_silent() -> None:
    c = busy("j1")
    acts = c.on_message(Disconnect("unknown worker"), 0.3)
    assert acts == [CancelRun("j1")]
    # The forgotten job's end is not reported, and no Ready while its page still resets.
    assert sent(c.run_finished("j1", Cancelled(), 0.4)) == []
    assert sent(c.tick(0.45)) == []
    assert sent(c.reset_finished("j1", True, 0.5)) == []  # not registered: no Idle
    assert sent(c.tick(0.5)) == [READY]  # at once, not an interval later


def test_repeated_disconnects_do_not_make_a_ready_storm() -> None:
    c = registered()
    c.on_message(Disconnect("x"), 0.1)
    assert sent(c.tick(0.1)) == [READY]
    c.on_message(Disconnect("x"), 0.2)  # refused again within the interval
    assert sent(c.tick(0.3)) == []
    assert sent(c.tick(1.1)) == [READY]


def test_a_silent_broker_means_a_fresh_socket_and_the_job_is_abandoned() -> None:
    c = busy("j1")
    c.on_message(Heartbeat(), 1.0)
    assert not any(isinstance(a, Reconnect) for a in c.tick(3.9))
    acts = c.tick(4.1)  # silent for more than interval x liveness
    assert CancelRun("j1") in acts and Reconnect() in acts
    assert not c.registered


def test_stop_says_goodbye_drains_then_exits_0() -> None:
    c = busy("j1")
    assert sent(c.stop(1.0)) == [Goodbye("stopping")]
    assert c.on_message(Assign("j2", SPEC), 1.1)[0].msg.job_id == "j2"  # refused while stopping
    assert c.tick(2.2) == [Send(Heartbeat())]  # still alive while draining, no exit yet
    c.run_finished("j1", Finished("stop"), 3.0)
    c.reset_finished("j1", True, 3.1)
    assert c.tick(3.2) == [Exit(0)]


def test_drain_timeout_fails_the_job_it_could_not_finish() -> None:
    c = busy("j1")
    c.emit("j1", "partial", "", 0.5)
    c.stop(1.0)
    acts = c.tick(6.5)  # drain timeout 5 s
    [failed] = [m for m in sent(acts) if isinstance(m, JobFailed)]
    assert failed.error.kind == "worker_died" and failed.output_sent
    assert CancelRun("j1") in acts and Exit(0) in acts


# ---------------------------------------------------------------------------- finer points
# Each send also counts as "heard from us": the next heartbeat is one interval after it, so a
# tick follows the sends below (a send that forgot its time would break the clock).


def test_the_busy_refusal_says_why() -> None:
    c = busy("j1")
    [refusal] = sent(c.on_message(Assign("j2", SPEC), 0.1))
    assert refusal == JobFailed("j2", error("internal", "worker busy"), False)
    assert sent(c.tick(0.9)) == []  # the refusal counted as a send at 0.1
    assert sent(c.tick(1.1)) == [Heartbeat()]


def test_every_send_moves_the_heartbeat_clock() -> None:
    c = busy("j1")  # READY sent at 0.0
    assert sent(c.emit("j1", "a", "", 0.8)) == [Started("j1"), Chunk("j1", 0, "a", "")]
    assert sent(c.tick(1.5)) == []  # 0.7 s after the chunk
    assert sent(c.emit("j1", "b", "", 1.7)) == [Chunk("j1", 1, "b", "")]
    assert sent(c.tick(2.6)) == []
    c.on_message(Heartbeat(), 2.6)
    assert sent(c.run_finished("j1", Finished("stop"), 2.7)) == [Done("j1", "stop", None)]
    assert sent(c.tick(3.6)) == []
    assert sent(c.reset_finished("j1", True, 3.65)) == [Idle()]
    assert sent(c.tick(4.6)) == []
    assert sent(c.tick(4.7)) == [Heartbeat()]
    assert sent(c.stop(5.5)) == [Goodbye("stopping")]
    assert c.tick(5.6) == [Exit(0)]


def test_started_alone_also_moves_the_clock() -> None:
    c = busy("j1")
    assert sent(c.start("j1", 0.5)) == [Started("j1")]
    assert sent(c.start("j1", 0.75)) == []  # once
    assert sent(c.tick(1.25)) == []
    assert sent(c.tick(1.5)) == [Heartbeat()]


def test_seq_counts_up_and_reasoning_travels() -> None:
    c = busy("j1")
    msgs = [m for i, (text, thought) in enumerate([("", "think"), ("a", ""), ("b", "more")])
            for m in sent(c.emit("j1", text, thought, 0.1 * (i + 1)))]
    assert msgs == [Started("j1"), Chunk("j1", 0, "", "think"), Chunk("j1", 1, "a", ""),
                    Chunk("j1", 2, "b", "more")]


def test_calls_for_another_job_or_after_the_end_do_nothing() -> None:
    c = busy("j1")
    assert c.start("other", 0.1) == [] and c.emit("other", "x", "", 0.1) == []
    assert c.run_finished("other", Finished("stop"), 0.1) == []
    assert c.reset_finished("other", True, 0.1) == []
    assert c.job is not None and c.job.running
    c.run_finished("j1", Finished("stop"), 0.2)
    assert c.emit("j1", "late", "", 0.3) == []  # the run is over: no more output
    assert c.run_finished("j1", Failed(error("site", "x")), 0.3) == []  # ended once
    assert c.on_message(Cancel("j1"), 0.3) == []  # nothing left to cancel
    assert c.reset_finished("other", True, 0.4) == [] and c.job is not None
    assert sent(c.reset_finished("j1", True, 0.4)) == [Idle()]
    assert c.reset_finished("j1", True, 0.5) == []  # already forgotten


def test_done_carries_the_usage() -> None:
    from bpool.protocol import Usage

    c = busy("j1")
    usage = Usage(3, 4, 7)
    assert sent(c.run_finished("j1", Finished("length", usage), 0.1)) == [
        Started("j1"), Done("j1", "length", usage)]


def test_a_dead_browser_names_the_job_and_the_cause() -> None:
    c = busy("j1")
    [failed] = sent(c.run_finished("j1", BackendGone("target closed"), 0.2))
    assert failed.job_id == "j1" and failed.error.kind == "broken" and not failed.output_sent
    assert "browser died: target closed" in failed.error.message
    assert c.job is None


def test_backend_dead_between_jobs_ends_the_worker() -> None:
    c = registered()
    c.backend_dead()
    acts = c.tick(0.1)
    assert sent(acts) == [Goodbye("browser died")] and Exit(1) in acts
    assert sent(c.tick(0.2)) == [Goodbye("browser died")]  # the clock still works after it


def test_disconnect_while_the_page_resets_cancels_nothing_and_says_nothing() -> None:
    c = busy("j1")
    c.run_finished("j1", Finished("stop"), 0.1)  # the run is over, the reset is under way
    assert c.on_message(Disconnect("x"), 0.2) == []  # nothing to cancel
    assert sent(c.start("j1", 0.25)) == []
    assert sent(c.reset_finished("j1", True, 0.3)) == []  # forgotten by the broker: no Idle
    assert sent(c.tick(0.3)) == [READY]


def test_an_abandoned_job_says_nothing_at_all() -> None:
    c = busy("j1")
    c.on_message(Disconnect("x"), 0.1)
    assert sent(c.start("j1", 0.2)) == []
    assert sent(c.emit("j1", "x", "", 0.3)) == []
    assert sent(c.run_finished("j1", Failed(error("site", "x")), 0.4)) == []


def test_a_job_id_given_again_after_an_abandoned_run_is_a_fresh_job() -> None:
    c = busy("j1")
    c.on_message(Disconnect("x"), 0.1)
    c.run_finished("j1", Cancelled(), 0.2)
    c.reset_finished("j1", True, 0.3)
    assert sent(c.tick(0.3)) == [READY]
    c.on_message(Heartbeat(), 0.4)
    assert c.on_message(Assign("j1", SPEC), 0.5) == [StartRun("j1", SPEC)]
    assert sent(c.emit("j1", "x", "", 0.6)) == [Started("j1"), Chunk("j1", 0, "x", "")]


def test_a_second_disconnect_one_interval_later_waits_for_the_interval() -> None:
    c = registered()
    c.on_message(Disconnect("x"), 0.5)
    assert sent(c.tick(0.5)) == [READY]
    c.on_message(Heartbeat(), 0.6)
    assert sent(c.tick(1.5)) == [Heartbeat()]
    c.on_message(Disconnect("x"), 1.5)  # exactly one interval after the first: still a storm
    assert sent(c.tick(1.5)) == []
    assert sent(c.tick(2.5)) == [READY]


def test_the_drain_timeout_counts_from_the_stop() -> None:
    c = busy("j1", now=10.0)
    c.on_message(Heartbeat(), 10.0)
    c.stop(10.0)
    assert not any(isinstance(a, Exit) for a in c.tick(12.0))  # 2 s into a 5 s drain
    c.on_message(Heartbeat(), 14.0)
    assert not any(isinstance(a, Exit) for a in c.tick(15.0))  # exactly 5 s: not yet over
    acts = c.tick(15.1)
    [failed] = [m for m in sent(acts) if isinstance(m, JobFailed)]
    assert failed == JobFailed("j1", error("worker_died", "worker stopped"), False)
    assert Exit(0) in acts


def test_silence_of_exactly_the_liveness_is_still_alive_and_the_clock_restarts_after() -> None:
    c = busy("j1")
    c.on_message(Heartbeat(), 1.0)
    assert not any(isinstance(a, Reconnect) for a in c.tick(4.0))  # 3.0 s: not more than 3
    acts = c.tick(4.5)
    assert Reconnect() in acts
    # A fresh socket: silence is counted from now, not from before.
    assert not any(isinstance(a, Reconnect) for a in c.tick(7.0))
    assert Reconnect() in c.tick(7.6)
