"""The worker's half of an account lease (LinkCore, fake clock): Lease -> Leased, no job while
leased, LeaseEnd -> reset -> the account's state -> Idle, and a lost broker ends the lease."""

from __future__ import annotations

from bpool.protocol import (AccountState, Assign, Disconnect, Idle, JobFailed, Lease, LeaseEnd,
                            LeaseFailed, Leased, Ready, error)
from bpool.worker.link_core import EndLease, StartLease, StartRun
from tests.worker.test_link_core import READY, SPEC, registered, sent

WS = "ws://127.0.0.1:41234/devtools/browser/abc"


def test_lease_is_granted_blocks_jobs_and_ends_with_the_account_state_then_idle() -> None:
    c = registered()
    assert c.on_message(Lease("l1"), 0.1) == [StartLease("l1")]
    assert sent(c.lease_started("l1", WS, None, 0.2)) == [Leased("l1", WS)]
    acts = c.on_message(Assign("j1", SPEC), 0.3)
    assert not any(isinstance(a, StartRun) for a in acts)
    assert isinstance(sent(acts)[0], JobFailed)
    (refused,) = sent(c.on_message(Lease("l2"), 0.4))
    assert isinstance(refused, LeaseFailed) and refused.lease_id == "l2"
    assert c.on_message(LeaseEnd("l1"), 0.5) == [EndLease("l1")]
    assert c.on_message(LeaseEnd("l1"), 0.6) == []  # already being taken back
    assert sent(c.lease_finished("l1", True, None, 0.7)) == [AccountState(None), Idle()]
    assert c.on_message(Assign("j1", SPEC), 0.8) == [StartRun("j1", SPEC)]


def test_a_browser_without_cdp_refuses_and_is_taken_back_at_once() -> None:
    c = registered()
    c.on_message(Lease("l1"), 0.1)
    err = error("bad_request", "camoufox cannot be leased")
    acts = c.lease_started("l1", None, err, 0.2)
    assert sent(acts) == [LeaseFailed("l1", err)]
    assert EndLease("l1") in acts
    out = error("logged_out", "still signed out")
    assert sent(c.lease_finished("l1", True, out, 0.3)) == [AccountState(out), Idle()]


def test_disconnect_while_leased_takes_the_browser_back_and_registers_afterwards() -> None:
    c = registered()
    c.on_message(Lease("l1"), 0.1)
    c.lease_started("l1", WS, None, 0.2)
    assert c.on_message(Disconnect("broker restarted"), 0.3) == [EndLease("l1")]
    assert sent(c.tick(0.4)) == []  # no Ready while the browser is still leased out
    assert sent(c.lease_finished("l1", True, None, 0.5)) == []  # the broker forgot the lease
    assert sent(c.tick(0.6)) == [READY]
    assert isinstance(READY, Ready)


def test_a_failed_reset_after_a_lease_ends_the_worker() -> None:
    c = registered()
    c.on_message(Lease("l1"), 0.1)
    c.on_message(LeaseEnd("l1"), 0.2)
    assert sent(c.lease_finished("l1", False, None, 0.3)) == []
    assert c.dead
