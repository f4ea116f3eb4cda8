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
