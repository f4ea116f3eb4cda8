"""BrokerCore driven synchronously with a fake clock: the broker contract of docs/architecture.md."""

from __future__ import annotations

import random

import pytest

from bpool.pool.core import BrokerCore, ForwardFront, SendFront, SendWorker
from bpool.protocol import (
    PROTOCOL_VERSION,
    AccountState,
    Assign,
    Assigned,
    Cancel,
    JobsKnown,
    JobsQuery,
    ChatMessage,
    Chunk,
    Disconnect,
    Done,
    ErrorInfo,
    Failed,
    Goodbye,
    Heartbeat,
    Idle,
    JobFailed,
    JobSpec,
    Ping,
    Pong,
    Ready,
    Started,
    StatusQuery,
    StatusReply,
    Submit,
    encoder,
)

ENC = encoder()
FRONT = b"front-1"


def spec(model: str = "m") -> JobSpec:
    return JobSpec(model, (ChatMessage("user", "hi"),))


class Harness:
    """A BrokerCore, a fake clock and shorthands for what workers and the front send."""

    def __init__(self, **kw: object) -> None:
        self.core = BrokerCore(broker_id="b-test", **kw)  # type: ignore[arg-type]
        self.now = 0.0
        self.live: set[bytes] = set()  # workers that keep sending heartbeats during wait()

    def ready(self, ident: bytes, models=(), unusable=None, version=PROTOCOL_VERSION, profile=None,
              incarnation=None):
        profile = profile or ident.decode()
        self.live.add(ident)
        inc = incarnation or "inc-" + profile
        return self.w(ident, Ready(version, profile, 1234, inc, "camoufox", "a@x", tuple(models), unusable))

    def w(self, ident: bytes, msg) -> list:
        return self.core.on_worker(ident, msg, ENC.encode(msg), self.now)

    def submit(self, job_id: str, model: str = "m", timeout=None, front: bytes = FRONT) -> list:
        return self.core.on_front(front, Submit(job_id, spec(model), timeout), self.now)

    def f(self, msg, front: bytes = FRONT) -> list:
        return self.core.on_front(front, msg, self.now)

    def tick(self, dt: float = 0.0) -> list:
        self.now += dt
        return self.core.tick(self.now)

    def wait(self, dt: float) -> list:
        """Let `dt` seconds pass in small steps, the live workers heartbeating all along."""
        out: list = []
        end = self.now + dt
        while self.now < end - 1e-9:
            for ident in sorted(self.live):
                self.w(ident, Heartbeat())
            out += self.tick(min(0.5, end - self.now))
        return out

    def finish(self, ident: bytes, job_id: str) -> list:
        """Started, one chunk, Done, Idle: a whole successful job as the worker reports it."""
        out = self.w(ident, Started(job_id)) + self.w(ident, Chunk(job_id, 0, "x"))
        return out + self.w(ident, Done(job_id)) + self.w(ident, Idle())

    def worker(self, profile: str):
        return next((s for s in self.core.status(self.now).workers if s.profile_id == profile), None)

    @property
    def counters(self) -> dict[str, int]:
        return self.core.status(self.now).counters


def assigns(acts) -> list[tuple[bytes, str]]:
    return [(a.identity, a.msg.job_id) for a in acts if isinstance(a, SendWorker) and isinstance(a.msg, Assign)]


def failures(acts) -> dict[str, ErrorInfo]:
    return {a.msg.job_id: a.msg.error for a in acts if isinstance(a, SendFront) and isinstance(a.msg, Failed)}


def to_worker(acts, kind) -> list[SendWorker]:
    return [a for a in acts if isinstance(a, SendWorker) and isinstance(a.msg, kind)]


def test_lru_order_and_assigned_sent_to_front():
    h = Harness()
    for name in (b"w1", b"w2", b"w3"):
        assert h.ready(name) == [SendWorker(name, Heartbeat())]  # Ready is acknowledged at once
    acts = h.submit("j1")
    assert assigns(acts) == [(b"w1", "j1")]
    assert SendFront(FRONT, Assigned("j1", "w1")) in acts
    assert assigns(h.submit("j2")) == [(b"w2", "j2")]
    h.tick(1)
    h.finish(b"w2", "j2")  # w2 becomes idle before w1
    h.tick(1)
    h.finish(b"w1", "j1")
    # w3 has been idle since it registered, then w2, then w1.
    got = [assigns(h.submit(j))[0][0] for j in ("j3", "j4", "j5")]
    assert got == [b"w3", b"w2", b"w1"]


def test_one_job_per_worker_held_until_idle_even_after_done():
    h = Harness()
    h.ready(b"w1")
    assert assigns(h.submit("j1")) == [(b"w1", "j1")]
    done = Done("j1")
    acts = h.w(b"w1", Started("j1")) + h.w(b"w1", done)
    assert acts == [ForwardFront(FRONT, ENC.encode(done))]
    assert assigns(h.submit("j2")) == []  # w1 is still resetting its page
    assert h.worker("w1").state == "busy"
    assert h.core.status(h.now).queue_length == 1
    assert assigns(h.w(b"w1", Idle())) == [(b"w1", "j2")]


def test_chunks_are_forwarded_byte_for_byte():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    raw = ENC.encode(Chunk("j1", 0, "héllo", "thinking"))
    assert h.core.on_worker(b"w1", Chunk("j1", 0, "héllo", "thinking"), raw, h.now) == [ForwardFront(FRONT, raw)]


def test_queue_is_fifo():
    h = Harness()
    h.ready(b"w1")
    h.submit("j0")
    for j in ("j1", "j2", "j3"):
        assert assigns(h.submit(j)) == []
    order = []
    job = "j0"
    for _ in range(3):
        (_, job), = assigns(h.finish(b"w1", job))
        order.append(job)
    assert order == ["j1", "j2", "j3"]


def test_queue_full_is_429_with_retry_after():
    h = Harness(max_queue=2)
    h.ready(b"w1")
    h.submit("j0")
    assert h.submit("j1") == [] and h.submit("j2") == []
    err = failures(h.submit("j3"))["j3"]
    assert (err.kind, err.status) == ("queue_full", 429)
    assert 1.0 <= err.retry_after_s <= 5.0
    assert h.counters["queue_full"] == 1
    assert h.core.status(h.now).queue_length == 2


@pytest.mark.parametrize("submit_timeout, waits_s", [(None, 10.0), (2.0, 2.0), (0.0, 0.0)])
def test_queue_deadline_is_503_with_retry_after(submit_timeout, waits_s):
    h = Harness(queue_timeout_s=10.0)
    h.tick(1.0)
    h.submit("j1", timeout=submit_timeout)  # no worker at all: it still waits, workers may be coming
    early = failures(h.tick(max(0.0, waits_s - 0.01)))
    if waits_s:
        assert early == {}
    err = (failures(h.tick(0.02)) if waits_s else early)["j1"]
    assert (err.kind, err.status) == ("queue_timeout", 503)
    assert err.retry_after_s is not None and err.retry_after_s >= 1.0
    assert h.counters["queue_timeout"] == 1 and h.core.status(h.now).queue_length == 0


def test_queued_job_goes_to_a_worker_that_registers_late():
    h = Harness()
    h.submit("j1")
    h.tick(5)
    assert assigns(h.ready(b"w1")) == [(b"w1", "j1")]
    assert failures(h.tick(100)) == {}  # its old deadline no longer applies


def test_heartbeats_sent_when_quiet_and_silent_idle_worker_expires():
    h = Harness(heartbeat_interval_s=1.0, heartbeat_liveness=3)
    h.ready(b"w1")
    h.ready(b"w2")
    assert to_worker(h.tick(0.5), Heartbeat) == []
    beats = to_worker(h.tick(0.6), Heartbeat)
    assert sorted(a.identity for a in beats) == [b"w1", b"w2"]
    for _ in range(4):
        h.tick(0.9)
        h.w(b"w2", Heartbeat())
    assert [s.profile_id for s in h.core.status(h.now).workers] == ["w2"]
    assert h.counters["workers_expired"] == 1
    assert assigns(h.submit("j1")) == [(b"w2", "j1")]


def test_busy_worker_that_started_dies_job_fails_naming_profile():
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j1")
    h.w(b"w1", Started("j1"))
    assert failures(h.tick(2.9)) == {}
    h.w(b"w2", Heartbeat())
    err = failures(h.tick(0.2))["j1"]  # silent for 3.1 s > 1 s x 3
    assert (err.kind, err.status) == ("worker_died", 502)
    assert "w1" in err.message
    # Never replayed once started, although w2 is idle.
    assert h.counters["jobs_moved"] == 0


def test_unstarted_job_moves_once_then_fails():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    h.tick(2.0)
    h.ready(b"w2")
    acts = h.tick(1.5)  # w1 silent 3.5 s: gone; j1 moves to w2 and the front hears of it
    assert assigns(acts) == [(b"w2", "j1")]
    assert SendFront(FRONT, Assigned("j1", "w2")) in acts
    assert failures(acts) == {}
    h.ready(b"w3")
    acts = h.core.worker_unreachable(b"w2", h.now)
    assert assigns(acts) == []
    assert failures(acts)["j1"].kind == "worker_died"
    assert h.counters["jobs_moved"] == 1


def test_moved_job_goes_first_in_line():
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j1")
    h.submit("j2")
    h.submit("j3")  # waits
    h.live.discard(b"w1")
    acts = h.wait(3.5)  # w1 dies before starting j1: j1 waits again, ahead of j3
    assert assigns(acts) == [] and failures(acts) == {}
    assert assigns(h.finish(b"w2", "j2")) == [(b"w2", "j1")]
    assert assigns(h.finish(b"w2", "j1")) == [(b"w2", "j3")]


def test_heartbeat_from_busy_worker_does_not_make_it_idle():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    for _ in range(10):
        h.tick(0.9)
        assert h.w(b"w1", Heartbeat()) == []
    assert h.worker("w1").state == "busy" and h.worker("w1").job_id == "j1"
    assert assigns(h.submit("j2")) == []


def test_rate_limited_job_moves_and_worker_cools_down_then_returns():
    h = Harness(cooldown_s=60.0)
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j1")
    h.w(b"w1", Started("j1"))  # the site refused after submission: still no output
    err = ErrorInfo("rate_limited", "quota", 429, 30.0)
    acts = h.w(b"w1", JobFailed("j1", err, output_sent=False))
    assert assigns(acts) == [(b"w2", "j1")] and failures(acts) == {}
    assert h.worker("w1").state == "busy"  # held until it has reset
    h.w(b"w1", Idle())
    st = h.worker("w1")
    # Cooling for the job's model only (tests/pool/test_model_cooldown.py has the rest).
    assert st.state == "idle" and st.cooling == {"m": pytest.approx(30.0)}
    assert st.last_error.startswith("rate_limited")
    h.wait(10)
    assert assigns(h.submit("j2")) == []  # w2 busy, w1 cooling for m: wait
    assert assigns(h.wait(19.9)) == []
    assert assigns(h.wait(0.2)) == [(b"w1", "j2")]


def test_default_cooldown_when_no_retry_after():
    h = Harness(cooldown_s=7.0)
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j0")  # w1 busy
    h.w(b"w2", AccountState(ErrorInfo("rate_limited", "slow down", 429)))  # the whole account
    assert h.worker("w2").state == "cooling"
    h.submit("j1")  # w1 merely busy: j1 waits
    for _ in range(6):
        h.w(b"w1", Heartbeat())
        h.w(b"w2", Heartbeat())
        assert assigns(h.tick(1.0)) == []
    h.w(b"w1", Heartbeat())
    h.w(b"w2", Heartbeat())
    assert assigns(h.tick(1.01)) == [(b"w2", "j1")]


def test_failures_that_are_not_moved():
    h = Harness()
    for name in (b"w1", b"w2"):
        h.ready(name)
    h.submit("j1")
    site = ErrorInfo("site", "step 'send' failed", 502)
    assert failures(h.w(b"w1", JobFailed("j1", site, output_sent=False))) == {"j1": site}
    h.w(b"w1", Idle())
    (ident, _), = assigns(h.submit("j2"))
    limited = ErrorInfo("rate_limited", "quota", 429)
    assert failures(h.w(ident, JobFailed("j2", limited, output_sent=True))) == {"j2": limited}


def test_account_failures_move_a_job_at_most_three_times():
    h = Harness()
    names = [f"w{i}".encode() for i in range(5)]
    for n in names:
        h.ready(n)
    h.submit("j1")
    err = ErrorInfo("logged_out", "signed out", 503)
    holder = b"w0"
    for _ in range(3):
        (holder, _), = assigns(h.w(holder, JobFailed("j1", err, output_sent=False)))
    assert failures(h.w(holder, JobFailed("j1", err, output_sent=False))) == {"j1": err}
    assert h.counters["jobs_moved"] == 3


def test_logged_out_workers_are_excluded_until_usable_again():
    h = Harness()
    h.ready(b"w1", unusable=ErrorInfo("logged_out", "no session", 503))
    assert h.worker("w1").state == "logged_out"
    # Nobody can serve it: at once, not after the whole queue timeout.
    err = failures(h.submit("j0"))["j0"]
    assert (err.kind, err.status) == ("no_workers", 503) and "w1 logged_out" in err.message
    h.ready(b"w2")
    assert assigns(h.submit("j1")) == [(b"w2", "j1")]
    # w1 is out of rotation: j2 waits for w2.
    assert assigns(h.submit("j2")) == []
    assert assigns(h.w(b"w1", AccountState(None))) == [(b"w1", "j2")]
    # Logged out in the middle of a job: out of rotation after its Idle.
    h.w(b"w1", JobFailed("j2", ErrorInfo("logged_out", "session expired", 503), output_sent=True))
    h.w(b"w1", Idle())
    assert h.worker("w1").state == "logged_out"
    h.finish(b"w2", "j1")
    assert assigns(h.submit("j3")) == [(b"w2", "j3")]
    assert assigns(h.submit("j4")) == []


def test_paused_job_moves_and_worker_is_out_of_rotation_for_the_pause():
    h = Harness(cooldown_s=5.0, pause_s=100.0)
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j1")
    h.w(b"w1", Started("j1"))
    err = ErrorInfo("paused", "read answer: error 7 PERMISSION_DENIED: no permission", 503)
    acts = h.w(b"w1", JobFailed("j1", err, output_sent=False))
    assert assigns(acts) == [(b"w2", "j1")] and failures(acts) == {}  # moved, not failed
    assert h.counters["jobs_moved"] == 1
    h.w(b"w1", Idle())
    st = h.worker("w1")
    assert st.state == "paused" and st.cooldown_remaining_s == pytest.approx(100.0)
    assert st.last_error == "paused: read answer: error 7 PERMISSION_DENIED: no permission"
    assert assigns(h.submit("j2", timeout=1000.0)) == []  # w2 busy, w1 paused: j2 waits
    assert assigns(h.wait(10.0)) == []  # the rate-limit cool-down (5 s) does not apply
    assert assigns(h.wait(89.8)) == []
    assert h.worker("w1").cooldown_remaining_s == pytest.approx(0.2)
    assert assigns(h.wait(0.3)) == [(b"w1", "j2")]
    assert h.worker("w1").state == "busy" and h.worker("w1").cooldown_remaining_s is None


def test_paused_after_output_fails_the_job_and_still_pauses():
    h = Harness(pause_s=50.0)
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j1")
    err = ErrorInfo("paused", "permission denied", 503)
    assert failures(h.w(b"w1", JobFailed("j1", err, output_sent=True))) == {"j1": err}
    h.w(b"w1", Idle())
    assert h.worker("w1").state == "paused"
    # A pause the worker reports outside a job, with its own duration; None ends it early.
    h.w(b"w2", AccountState(ErrorInfo("paused", "bot check", 503, 7.0)))
    st = h.worker("w2")
    assert (st.state, st.cooldown_remaining_s) == ("paused", 7.0)
    assert assigns(h.submit("j2", timeout=100.0)) == []
    assert assigns(h.w(b"w1", AccountState(None))) == [(b"w1", "j2")]
    assert assigns(h.wait(7.1)) == []  # w2 is back, idle: nothing waiting
    assert h.worker("w2").state == "idle"


def test_needs_consent_is_out_of_rotation_until_usable_again():
    h = Harness(cooldown_s=1.0, pause_s=2.0)
    h.ready(b"w1", unusable=ErrorInfo("needs_consent", "accept the terms of service", 503))
    h.ready(b"w2")
    st = h.worker("w1")
    assert (st.state, st.cooldown_remaining_s) == ("needs_consent", None)
    assert st.last_error == "needs_consent: accept the terms of service"
    assert assigns(h.submit("j1")) == [(b"w2", "j1")]
    assert assigns(h.submit("j2", timeout=100.0)) == []
    assert assigns(h.wait(20.0)) == []  # no timer brings it back
    assert h.worker("w1").state == "needs_consent"
    assert assigns(h.w(b"w1", AccountState(None))) == [(b"w1", "j2")]
    # Found mid-job before any output: the job moves, the worker leaves rotation at Idle.
    h.finish(b"w2", "j1")
    acts = h.w(b"w1", JobFailed("j2", ErrorInfo("needs_consent", "consent", 503), output_sent=False))
    assert assigns(acts) == [(b"w2", "j2")]
    h.w(b"w1", Idle())
    assert h.worker("w1").state == "needs_consent"


def test_pause_duration_is_read_from_the_environment(monkeypatch, tmp_path):
    from bpool.pool.shell import BrokerSettings

    monkeypatch.setenv("BPOOL_RUN_DIR", str(tmp_path))
    assert BrokerSettings.from_env().core().pause_s == 1800.0
    monkeypatch.setenv("BPOOL_PAUSE_S", "90")
    assert BrokerSettings.from_env().core().pause_s == 90.0


@pytest.mark.parametrize(
    "kind, state",
    [("logged_out", "logged_out"), ("rate_limited", "cooling"), ("broken", "draining"), ("site", "logged_out"),
     ("paused", "paused"), ("needs_consent", "needs_consent")],
)
def test_unusable_at_ready_is_out_of_rotation(kind, state):
    h = Harness()
    h.ready(b"w1", unusable=ErrorInfo(kind, "cannot serve"))
    st = h.worker("w1")
    assert (st.state, st.last_error) == (state, f"{kind}: cannot serve")
    assert assigns(h.submit("j1")) == []


def test_late_messages_are_dropped_and_counted():
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j1")
    h.w(b"w1", Done("j1"))
    late = [Chunk("j1", 1, "x"), Done("j1"), Started("j1"), JobFailed("j1", ErrorInfo("site", "x"), True)]
    for msg in late:
        assert h.w(b"w1", msg) == []
    assert h.w(b"w2", Chunk("j1", 0, "not yours")) == []
    assert h.counters["late_messages"] == 5


def test_unknown_identity_gets_disconnect_then_registers():
    h = Harness()
    for msg in (Heartbeat(), Idle(), Chunk("j", 0, "x"), Goodbye("bye")):
        acts = h.w(b"ghost", msg)
        assert len(acts) == 1 and isinstance(acts[0].msg, Disconnect) and acts[0].identity == b"ghost"
    assert h.core.on_worker_garbage(b"ghost", h.now)[0].msg.__class__ is Disconnect
    assert h.counters["decode_errors"] == 1
    assert h.core.status(h.now).workers == ()
    h.ready(b"ghost")
    assert assigns(h.submit("j1")) == [(b"ghost", "j1")]


@pytest.mark.parametrize("started, expect_moved", [(False, True), (True, False)])
def test_reregistration_drops_old_state(started, expect_moved):
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    if started:
        h.w(b"w1", Started("j1"))
    acts = h.ready(b"w1", incarnation="inc-2")  # a new session under the same identity
    if expect_moved:
        assert assigns(acts) == [(b"w1", "j1")]
    else:
        assert failures(acts)["j1"].kind == "worker_died"
        assert h.worker("w1").state == "idle"
    assert len(h.core.status(h.now).workers) == 1


def test_version_mismatch_is_refused():
    h = Harness()
    acts = h.ready(b"w1", version=PROTOCOL_VERSION + 1)
    assert len(acts) == 1 and isinstance(acts[0].msg, Disconnect)
    assert str(PROTOCOL_VERSION + 1) in acts[0].msg.reason
    assert h.core.status(h.now).workers == ()
    assert isinstance(h.w(b"w1", Heartbeat())[0].msg, Disconnect)


def test_goodbye_drains_the_running_job_then_forgets_the_worker():
    h = Harness()
    h.ready(b"idle")
    h.ready(b"busy")
    h.submit("j0")  # to "idle", the oldest...
    h.finish(b"idle", "j0")  # ...which is idle again; "busy" is now the oldest idle
    h.submit("j1")
    assert h.w(b"idle", Goodbye("sigterm")) == []
    assert h.worker("idle") is None
    h.w(b"busy", Goodbye("sigterm"))
    assert h.worker("busy").state == "draining"
    assert assigns(h.submit("j2")) == []
    raw = ENC.encode(Chunk("j1", 0, "still flowing"))
    assert h.core.on_worker(b"busy", Chunk("j1", 0, "still flowing"), raw, h.now) == [ForwardFront(FRONT, raw)]
    h.w(b"busy", Done("j1"))
    assert h.core.status(h.now).workers == ()


def test_cancel_queued_job():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    h.submit("j2")
    acts = h.f(Cancel("j2"))
    assert failures(acts)["j2"].kind == "cancelled"
    assert h.core.status(h.now).queue_length == 0
    assert h.f(Cancel("j2"), front=b"other") == []
    assert assigns(h.finish(b"w1", "j1")) == []  # nothing waits any more


def test_cancel_running_job_holds_worker_until_idle():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    h.w(b"w1", Started("j1"))
    assert h.f(Cancel("j1"), front=b"someone-else") == []  # not theirs
    acts = h.f(Cancel("j1"))
    assert to_worker(acts, Cancel) == [SendWorker(b"w1", Cancel("j1"))]
    assert h.w(b"w1", Chunk("j1", 3, "x")) == []
    assert h.w(b"w1", Done("j1", "cancelled")) == []
    assert h.counters["late_messages"] == 2 and h.counters["cancelled"] == 1
    assert assigns(h.submit("j2")) == []
    assert assigns(h.w(b"w1", Idle())) == [(b"w1", "j2")]


def test_front_gone_cancels_its_jobs():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1", front=b"gone")
    h.submit("j2", front=b"gone")
    h.submit("j3", front=b"alive")
    acts = h.core.front_unreachable(b"gone", h.now)
    assert to_worker(acts, Cancel) == [SendWorker(b"w1", Cancel("j1"))]
    assert failures(acts) == {}
    assert assigns(h.w(b"w1", Idle())) == [(b"w1", "j3")]


def test_model_routing():
    h = Harness()
    h.ready(b"a", models=["gemini-a"])
    h.ready(b"ab", models=["gemini-a", "gemini-b"])
    assert assigns(h.submit("j1", "gemini-b")) == [(b"ab", "j1")]
    assert assigns(h.submit("j2", "gemini-b")) == []  # a cannot serve it: wait for ab
    err = failures(h.submit("j3", "gpt-x"))["j3"]
    assert (err.kind, err.status) == ("model_not_found", 404)
    assert "gpt-x" in err.message and "gemini-a" in err.message and "gemini-b" in err.message
    assert assigns(h.submit("j4", "gemini-a")) == [(b"a", "j4")]
    # Once ab is free it takes the first job it can serve.
    assert assigns(h.finish(b"ab", "j1")) == [(b"ab", "j2")]
    h.ready(b"any")
    assert assigns(h.submit("j5", "gpt-x")) == [(b"any", "j5")]


def test_ping_status_and_snapshot_content():
    h = Harness(cooldown_s=60.0)
    assert h.f(Ping(7)) == [SendFront(FRONT, Pong(7, "b-test"))]
    h.ready(b"w1", models=["m"])
    h.ready(b"w2")
    h.ready(b"w3", unusable=ErrorInfo("logged_out", "no cookie", 503))
    h.wait(2.0)
    h.submit("j1")
    h.w(b"w2", AccountState(ErrorInfo("rate_limited", "quota", 429, 20.0)))
    h.wait(5.0)
    (reply,) = h.f(StatusQuery(3))
    assert isinstance(reply.msg, StatusReply) and reply.msg.query_id == 3
    st = reply.msg.status
    assert st.broker_id == "b-test" and st.queue_length == 0
    by = {s.profile_id: s for s in st.workers}
    assert (by["w1"].state, by["w1"].job_id, by["w1"].since_s, by["w1"].models) == ("busy", "j1", 5.0, ("m",))
    assert (by["w1"].pid, by["w1"].engine, by["w1"].account) == (1234, "camoufox", "a@x")
    assert (by["w2"].state, by["w2"].cooldown_remaining_s) == ("cooling", 15.0)
    assert (by["w3"].state, by["w3"].last_error) == ("logged_out", "logged_out: no cookie")
    for name in ("jobs_submitted", "jobs_done", "jobs_failed", "jobs_moved", "late_messages",
                 "decode_errors", "workers_expired", "queue_full", "queue_timeout", "cancelled"):
        assert name in st.counters
    assert st.counters["jobs_submitted"] == 1


def test_same_profile_twice_are_separate_workers():
    h = Harness()
    h.ready(b"old", profile="alice")
    h.ready(b"new", profile="alice")
    assert [s.profile_id for s in h.core.status(h.now).workers] == ["alice", "alice"]
    assert assigns(h.submit("j1")) == [(b"old", "j1")]
    assert assigns(h.submit("j2")) == [(b"new", "j2")]


def test_broken_worker_moves_unstarted_job_and_leaves_rotation():
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.submit("j1")
    acts = h.w(b"w1", JobFailed("j1", ErrorInfo("broken", "browser crashed"), output_sent=False))
    assert assigns(acts) == [(b"w2", "j1")]
    assert h.worker("w1").state == "draining"
    h.w(b"w1", Idle())
    assert assigns(h.submit("j2")) == []
    h.w(b"w1", Goodbye("browser died"))
    assert h.worker("w1") is None


def test_idle_while_holding_a_job_loses_it():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    acts = h.w(b"w1", Idle())  # the worker dropped the job without a word: move it
    assert assigns(acts) == [(b"w1", "j1")]


def test_duplicate_job_id_is_refused():
    h = Harness()
    h.ready(b"w1")
    h.submit("j1")
    assert failures(h.submit("j1"))["j1"].kind == "bad_request"
    assert h.worker("w1").job_id == "j1"


@pytest.mark.parametrize("seed", range(20))
def test_random_conversations_keep_the_invariants(seed):
    """Workers following the protocol, dying, cooling and leaving at random; the front submitting
    and cancelling. Every job ends exactly once and no worker ever holds two jobs."""
    rng = random.Random(seed)
    h = Harness(max_queue=8, queue_timeout_s=5.0, cooldown_s=2.0, pause_s=3.0)
    alive: dict[bytes, str | None] = {}  # identity -> job it is working on (None: idle/held)
    held: set[bytes] = set()
    ended: dict[str, str] = {}
    submitted: list[str] = []

    def handle(acts):
        for a in acts:
            if isinstance(a, SendWorker) and isinstance(a.msg, Assign):
                assert a.identity not in held, "a worker got a second job before Idle"
                held.add(a.identity)
                alive[a.identity] = a.msg.job_id
            elif isinstance(a, SendWorker) and isinstance(a.msg, Cancel):
                assert a.msg.job_id not in ended, "a job ended twice"
                ended[a.msg.job_id] = "cancelled"
            elif isinstance(a, SendWorker) and isinstance(a.msg, Disconnect):
                alive.pop(a.identity, None)  # forgotten by the broker: this worker gives up
                held.discard(a.identity)
            elif isinstance(a, SendFront) and isinstance(a.msg, Failed):
                assert a.msg.job_id not in ended, "a job ended twice"
                ended[a.msg.job_id] = a.msg.error.kind

    for step in range(400):
        r = rng.random()
        if r < 0.1 and len(alive) < 5:
            ident = f"w{step}".encode()
            alive[ident] = None
            handle(h.ready(ident))
        elif r < 0.4:
            job_id = f"j{step}"
            submitted.append(job_id)
            handle(h.submit(job_id))
        elif r < 0.45 and submitted:
            handle(h.f(Cancel(rng.choice(submitted))))
        elif r < 0.9 and alive:
            ident = rng.choice(sorted(alive))
            job = alive[ident]
            choice = rng.random()
            if job is not None and choice < 0.5:
                handle(h.w(ident, Started(job)))
                out = h.w(ident, Done(job))
                if out:
                    assert job not in ended, "a job ended twice"
                    ended[job] = "done"
                alive[ident] = None
            elif job is not None and choice < 0.7:
                err = ErrorInfo(rng.choice(["rate_limited", "paused", "logged_out", "needs_consent",
                                            "site"]), "x")
                handle(h.w(ident, JobFailed(job, err, output_sent=False)))
                alive[ident] = None
            elif job is None and ident in held:
                held.discard(ident)
                handle(h.w(ident, Idle()))
            elif choice < 0.75:
                handle(h.w(ident, AccountState(None)))
            elif choice < 0.8:
                del alive[ident]  # dies silently
                held.discard(ident)
            else:
                handle(h.w(ident, Heartbeat()))
        for ident in list(alive):
            if rng.random() < 0.9:
                handle(h.w(ident, Heartbeat()))
        handle(h.tick(0.3))
    # Let everything run out: the workers go silent, queued jobs time out.
    for _ in range(40):
        handle(h.tick(0.5))
    st = h.core.status(h.now)
    assert st.workers == () and st.queue_length == 0
    assert set(ended) == set(submitted)
    c = st.counters
    assert c["jobs_submitted"] == len(submitted)
    assert c["jobs_done"] + c["jobs_failed"] + c["cancelled"] == len(submitted)


def test_jobs_query_answers_which_jobs_this_broker_holds():
    h = Harness()
    h.ready(b"w1")
    h.submit("running")
    h.submit("queued")
    acts = h.f(JobsQuery(7, ("running", "queued", "from-the-old-broker")))
    assert acts == [SendFront(FRONT, JobsKnown(7, ("running", "queued")))]


def test_a_repeated_ready_of_the_same_incarnation_is_not_a_new_registration():
    """A Ready that crossed the broker's acknowledgement must not hand the job out twice."""
    h = Harness()
    h.ready(b"w1")
    assert assigns(h.submit("j1")) == [(b"w1", "j1")]
    acts = h.ready(b"w1")  # the same Ready again
    assert assigns(acts) == [] and failures(acts) == {}
    assert [type(a.msg) for a in acts] == [Heartbeat]
    assert h.worker("w1").state == "busy" and h.counters["repeated_ready"] == 1
    h.finish(b"w1", "j1")
    assert h.counters["jobs_done"] == 1


def test_accounts_that_all_rest_past_the_deadline_say_when_to_retry():
    h = Harness(queue_timeout_s=10.0)
    h.ready(b"w1")
    h.ready(b"w2")
    h.w(b"w1", AccountState(ErrorInfo("paused", "bot check", 503, retry_after_s=300.0)))
    h.w(b"w2", AccountState(ErrorInfo("paused", "bot check", 503, retry_after_s=120.0)))
    err = failures(h.submit("j1"))["j1"]
    assert err.kind == "no_workers" and err.retry_after_s == 120.0
    # One of them back within the deadline: the job waits for it.
    h.w(b"w2", AccountState(ErrorInfo("paused", "bot check", 503, retry_after_s=5.0)))
    assert failures(h.submit("j2")) == {}
    assert assigns(h.wait(6.0)) == [(b"w2", "j2")]
    # A rate-limited account among the resting ones: a 429 at once, back with the soonest.
    h.finish(b"w2", "j2")
    h.w(b"w1", AccountState(ErrorInfo("rate_limited", "quota", 429, retry_after_s=40.0)))
    h.w(b"w2", AccountState(ErrorInfo("paused", "bot check", 503, retry_after_s=30.0)))
    err = failures(h.submit("j3"))["j3"]
    assert (err.kind, err.status, err.retry_after_s) == ("rate_limited", 429, 30.0)


def test_a_queued_job_that_times_out_while_every_account_rests_says_when_one_is_back():
    h = Harness(queue_timeout_s=10.0)
    h.ready(b"w1")
    h.w(b"w1", AccountState(ErrorInfo("paused", "bot check", 503, retry_after_s=8.0)))
    assert failures(h.submit("j1")) == {}  # back within the deadline: it waits
    h.w(b"w1", AccountState(ErrorInfo("paused", "bot check", 503, retry_after_s=300.0)))
    err = failures(h.wait(10.5))["j1"]
    assert err.kind == "queue_timeout" and 289 <= err.retry_after_s <= 290
