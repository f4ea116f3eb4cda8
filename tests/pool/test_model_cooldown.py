"""Rate limits per account AND per model: BrokerCore's routing around cool-downs, the 429 when
every account for a model cools, their file and the usage rows (fake clock, no sockets)."""

from __future__ import annotations

import json
import random
import stat

import pytest

from bpool.pool import cooldown_file
from bpool.pool.core import SendFront, SendWorker
from bpool.protocol import (AccountState, Assign, Done, ErrorInfo, Failed, Heartbeat, Idle,
                            JobFailed, Started, StatusQuery, Usage)
from test_core import Harness, assigns, failures

A, B = "gemini-a", "gemini-b"


def limited(seconds: float | None = 30.0) -> ErrorInfo:
    return ErrorInfo("rate_limited", "You exceeded your current quota", 429, seconds)


def two_workers(**kw) -> Harness:
    h = Harness(**kw)
    h.ready(b"w1", models=[A, B])
    h.ready(b"w2", models=[A, B])
    return h


def rate_limit_w1_for_a(h: Harness, seconds: float = 30.0) -> None:
    """w1 takes a job for A and fails it as rate-limited: it moves to w2, which finishes it."""
    assert assigns(h.submit("hit", A)) == [(b"w1", "hit")]
    acts = h.w(b"w1", JobFailed("hit", limited(seconds), output_sent=False))
    assert assigns(acts) == [(b"w2", "hit")] and failures(acts) == {}
    h.w(b"w1", Idle())
    h.finish(b"w2", "hit")


def test_a_rate_limit_cools_the_account_for_that_model_only():
    h = two_workers()
    rate_limit_w1_for_a(h)
    st = h.worker("w1")
    assert st.state == "idle" and st.cooling == {A: 30.0}
    assert st.cooldown_remaining_s is None  # no account-wide rest
    assert h.worker("w2").cooling == {}
    # w1 has been idle the longest, yet A goes to w2 every time.
    for i in range(3):
        assert assigns(h.submit(f"a{i}", A)) == [(b"w2", f"a{i}")]
        h.finish(b"w2", f"a{i}")
    # For B, w1 is idle like any other worker: the longest idle first, then both.
    assert assigns(h.submit("b1", B)) == [(b"w1", "b1")]
    assert assigns(h.submit("b2", B)) == [(b"w2", "b2")]
    assert h.core.status(h.now).queue_length == 0


def test_when_every_account_for_the_model_cools_the_client_gets_a_429_at_once():
    h = two_workers(queue_timeout_s=600.0)
    rate_limit_w1_for_a(h, seconds=300.0)
    h.wait(10.0)
    assert assigns(h.submit("a1", A)) == [(b"w2", "a1")]
    h.w(b"w2", JobFailed("a1", limited(100.0), output_sent=True))
    h.w(b"w2", Idle())
    err = failures(h.submit("a2", A))["a2"]
    # The soonest reset: w2's (100 s from now), not w1's (290 s left); no queue wait.
    assert (err.kind, err.status, err.retry_after_s) == ("rate_limited", 429, 100.0)
    assert h.core.status(h.now).queue_length == 0
    h.wait(40.0)
    assert failures(h.submit("a3", A))["a3"].retry_after_s == 60.0
    # Both are idle for B all along.
    assert assigns(h.submit("b1", B)) == [(b"w1", "b1")]
    assert assigns(h.submit("b2", B)) == [(b"w2", "b2")]


def test_a_job_moved_off_a_rate_limited_account_fails_when_no_other_can_take_it():
    h = two_workers()
    rate_limit_w1_for_a(h, seconds=50.0)
    assert assigns(h.submit("a1", A)) == [(b"w2", "a1")]
    acts = h.w(b"w2", JobFailed("a1", limited(20.0), output_sent=False))
    err = failures(acts)["a1"]
    assert (err.kind, err.retry_after_s) == ("rate_limited", 20.0) and assigns(acts) == []


def test_merely_busy_workers_keep_the_queue_and_a_cool_down_end_takes_from_it():
    h = two_workers(queue_timeout_s=600.0)
    rate_limit_w1_for_a(h, seconds=30.0)
    assert assigns(h.submit("a1", A)) == [(b"w2", "a1")]
    assert h.submit("a2", A) == []  # w2 busy, w1 cooling for A: wait as before
    assert h.core.status(h.now).queue_length == 1
    assert assigns(h.wait(29.0)) == []
    # w1's cool-down for A ends while it is idle: it takes the waiting job.
    assert assigns(h.wait(1.5)) == [(b"w1", "a2")]
    assert h.worker("w1").cooling == {}


def test_queued_jobs_fail_when_the_last_account_for_their_model_starts_cooling():
    h = two_workers(queue_timeout_s=600.0)
    rate_limit_w1_for_a(h, seconds=30.0)
    assert assigns(h.submit("a1", A)) == [(b"w2", "a1")]
    h.submit("a2", A)
    h.submit("b1", B)  # w1 is idle for B: served at once
    assert h.worker("w1").job_id == "b1"
    acts = h.w(b"w2", JobFailed("a1", limited(45.0), output_sent=True))
    got = failures(acts)
    assert got["a1"].kind == "rate_limited"  # the worker's own error, after output
    assert (got["a2"].kind, got["a2"].retry_after_s) == ("rate_limited", 30.0)
    assert h.core.status(h.now).queue_length == 0


def test_account_state_with_a_model_cools_that_model_and_none_lifts_it():
    h = two_workers()
    h.w(b"w1", AccountState(limited(None), A))  # the broker's default cool-down
    assert h.worker("w1").cooling == {A: 60.0} and h.worker("w1").state == "idle"
    assert assigns(h.submit("a1", A)) == [(b"w2", "a1")]
    h.w(b"w1", AccountState(None))  # usable again, for the account: the model's quota stays
    assert h.worker("w1").cooling == {A: 60.0}
    assert h.submit("a2", A) == []  # waits for w2
    assert assigns(h.w(b"w1", AccountState(None, A))) == [(b"w1", "a2")]
    assert h.worker("w1").cooling == {}


def test_paused_and_logged_out_stay_account_wide():
    h = two_workers()
    h.w(b"w1", AccountState(ErrorInfo("paused", "bot check", 503, 50.0), A))
    assert h.worker("w1").state == "paused" and h.worker("w1").cooling == {}
    assert assigns(h.submit("b1", B)) == [(b"w2", "b1")]
    h.w(b"w2", AccountState(ErrorInfo("logged_out", "signed out", 503)))
    assert h.worker("w2").state == "busy"  # applied once it is idle
    h.finish(b"w2", "b1")
    assert h.worker("w2").state == "logged_out"


def test_a_cool_down_belongs_to_the_profile_and_survives_a_re_registration():
    h = two_workers()
    rate_limit_w1_for_a(h, seconds=30.0)
    h.wait(10.0)
    h.ready(b"w1-new", models=[A, B], profile="w1", incarnation="second")
    h.core.worker_unreachable(b"w1", h.now)
    assert h.worker("w1").cooling == {A: 20.0}
    assert assigns(h.submit("a1", A)) == [(b"w2", "a1")]
    assert h.submit("a2", A) == []  # the new registration is cooling for A too
    assert assigns(h.submit("b1", B)) == [(b"w1-new", "b1")]


def test_cool_downs_restored_into_a_new_core_before_the_workers_return():
    h = two_workers()
    rate_limit_w1_for_a(h, seconds=30.0)
    assert h.core.cooling_changed
    saved = h.core.cooldowns()
    assert saved == {"w1": {A: pytest.approx(h.now + 30.0)}} and not h.core.cooling_changed
    fresh = Harness()
    fresh.now = h.now + 5.0
    fresh.core.restore_cooldowns(saved)
    fresh.ready(b"x1", models=[A, B], profile="w1")
    fresh.ready(b"x2", models=[A, B], profile="w2")
    assert fresh.worker("w1").cooling == {A: 25.0}
    assert assigns(fresh.submit("a1", A)) == [(b"x2", "a1")]
    assert fresh.submit("a2", A) == []
    assert assigns(fresh.wait(25.5)) == [(b"x1", "a2")]


def test_cool_down_file_round_trip_in_wall_clock_time(tmp_path):
    path = tmp_path / cooldown_file.FILE_NAME
    # Saved by one process (monotonic 100 s at Unix time 1,000,000) ...
    cooldown_file.save(path, {"alice": {A: 130.0, B: 400.0}, "bob": {A: 101.0}}, 100.0, 1e6)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["cooldowns"]["alice"] == {A: 1e6 + 30, B: 1e6 + 300}
    # ... read by the next one 10 s later, on a monotonic clock at 5 s: bob's has ended.
    assert cooldown_file.load(path, 5.0, 1e6 + 10) == {"alice": {A: 25.0, B: 295.0}}
    assert cooldown_file.load(tmp_path / "missing.json", 0.0, 0.0) == {}
    path.write_text("{not json")
    assert cooldown_file.load(path, 0.0, 0.0) == {}


def test_usage_rows_per_profile_and_model():
    h = Harness()
    h.ready(b"w1", models=[A, B])
    h.submit("a1", A)
    h.w(b"w1", Started("a1"))
    h.w(b"w1", Done("a1", usage=Usage(11, 7, 18)))
    h.w(b"w1", Idle())
    h.submit("b1", B)
    h.w(b"w1", JobFailed("b1", limited(5.0), output_sent=True))
    h.w(b"w1", Idle())
    h.submit("a2", A)
    h.w(b"w1", JobFailed("a2", ErrorInfo("site", "step failed"), output_sent=False))
    (reply,) = h.f(StatusQuery(1))
    rows = {(u.profile_id, u.model): u for u in reply.msg.status.usage}
    assert set(rows) == {("w1", A), ("w1", B)}
    a, b = rows["w1", A], rows["w1", B]
    assert (a.requests, a.prompt_tokens, a.completion_tokens, a.errors) == (2, 11, 7, {"site": 1})
    assert (b.requests, b.prompt_tokens, b.errors) == (1, 0, {"rate_limited": 1})
    assert h.worker("w1").cooling == {B: 5.0}
    assert h.counters["cooldowns:w1"] == 1


@pytest.mark.parametrize("seed", range(8))
def test_random_rate_limits_never_route_a_model_to_an_account_cooling_for_it(seed):
    """Jobs for two models, accounts rate-limited and lifted per model at random: no Assign goes
    to an account cooling for its model, every job ends exactly once."""
    rng = random.Random(seed)
    h = Harness(max_queue=8, queue_timeout_s=5.0, cooldown_s=2.0)
    idents = [f"w{i}".encode() for i in range(3)]
    for ident in idents:
        h.ready(ident, models=[A, B])
    running: dict[bytes, str] = {}
    held: set[bytes] = set()
    ended: set[str] = set()
    submitted: list[str] = []

    def handle(acts):
        for a in acts:
            if isinstance(a, SendWorker) and isinstance(a.msg, Assign):
                cooling = h.worker(a.identity.decode()).cooling
                assert a.msg.spec.model not in cooling, (a.msg.spec.model, cooling)
                assert a.identity not in held
                held.add(a.identity)
                running[a.identity] = a.msg.job_id
            elif isinstance(a, SendFront) and isinstance(a.msg, Failed):
                assert a.msg.job_id not in ended
                ended.add(a.msg.job_id)

    for step in range(300):
        r = rng.random()
        ident = rng.choice(idents)
        if r < 0.35:
            job_id = f"j{step}"
            submitted.append(job_id)
            handle(h.submit(job_id, rng.choice([A, B])))
        elif r < 0.5:
            handle(h.w(ident, AccountState(limited(rng.choice([1.0, 3.0])), rng.choice([A, B]))))
        elif r < 0.55:
            handle(h.w(ident, AccountState(None, rng.choice([A, B]))))
        elif ident in running and r < 0.75:
            job = running.pop(ident)
            if rng.random() < 0.3:
                handle(h.w(ident, JobFailed(job, limited(2.0), output_sent=False)))
            else:
                handle(h.w(ident, Started(job)))
                if h.w(ident, Done(job)):
                    assert job not in ended
                    ended.add(job)
        elif ident in held and ident not in running:
            held.discard(ident)
            handle(h.w(ident, Idle()))
        for other in idents:
            h.w(other, Heartbeat())
        handle(h.tick(0.2))
    for ident in idents:  # finish what runs, then let the queue run out
        if ident in running:
            job = running.pop(ident)
            if h.w(ident, Done(job)):
                ended.add(job)
        if ident in held:
            held.discard(ident)
            handle(h.w(ident, Idle()))
    for _ in range(60):
        for ident in idents:
            if ident in running:
                job = running.pop(ident)
                if h.w(ident, Done(job)):
                    ended.add(job)
            if ident in held:
                held.discard(ident)
                handle(h.w(ident, Idle()))
            h.w(ident, Heartbeat())
        handle(h.tick(0.2))
    assert h.core.status(h.now).queue_length == 0
    assert ended == set(submitted)
