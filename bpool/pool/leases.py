"""Account leases, part of the broker core (no I/O): an operator borrows one account's own
browser over CDP (docs/sessions.md "Account leases"), typically to log a logged-out account in
again on a headless server. `BrokerCore` (core.py) inherits it.

A lease holds its worker like a job does: from `Lease` until the worker's `Idle` (sent after
it reset its browser) the worker is in state "leased" and gets no job. Only a worker that holds
nothing and is idle, logged out or awaiting consent can be leased, and a profile has at most
one lease at a time. A lease ends when the front sends `LeaseEnd`, at its deadline (the broker
tells the worker and the front), or when the worker dies or leaves (the front is told).

A worker leased while out of rotation stays out after the lease unless it reports, before its
`Idle`, that the account is usable again (`AccountState(error=None)`): that is how a repaired
login brings the account back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from bpool.pool.state import ACCOUNT_STATES, SendFront, SendWorker, Worker, WorkerState
from bpool.protocol import (ErrorInfo, Failed, Lease, LeaseEnd, LeaseFailed, LeaseGranted,
                            LeaseRequest, Leased, error)

log = logging.getLogger("bpool.broker")

# A worker in one of these states (and holding nothing) may be leased.
LEASABLE: tuple[WorkerState, ...] = ("idle", "logged_out", "needs_consent")
MIN_LEASE_S = 1.0


@dataclass(slots=True, eq=False)
class LeaseRec:
    lease_id: str
    front: bytes
    deadline: float
    granted: bool = False
    over: bool = False  # the front has been told it ended (or asked for the end itself)


def _refusal(lease_id: str, status: int, kind: str, message: str) -> Failed:
    return Failed(lease_id, ErrorInfo(kind, message, status))


class LeaseBook:
    # Set by BrokerCore.__init__.
    counters: dict[str, int]
    _workers: dict[bytes, Worker]
    _idle: object  # deque[Worker]
    _set_state: Callable[[Worker, WorkerState, float], None]

    def _lease_of(self, lease_id: str) -> Worker | None:
        return next((w for w in self._workers.values()
                     if w.lease is not None and w.lease.lease_id == lease_id), None)

    def _on_lease_request(self, front: bytes, msg: LeaseRequest, now: float, acts) -> None:
        self.counters["leases_requested"] = self.counters.get("leases_requested", 0) + 1
        mine = [w for w in self._workers.values() if w.profile == msg.profile_id]
        if self._lease_of(msg.lease_id) is not None:
            acts.append(SendFront(front, _refusal(msg.lease_id, 400, "bad_request",
                                                  f"lease id {msg.lease_id!r} is already in use")))
            return
        if not mine:
            acts.append(SendFront(front, _refusal(
                msg.lease_id, 404, "no_workers",
                f"no worker of profile {msg.profile_id!r} is registered")))
            return
        if any(w.lease is not None for w in mine):
            acts.append(SendFront(front, _refusal(
                msg.lease_id, 409, "bad_request",
                f"profile {msg.profile_id!r} is already leased")))
            return
        w = next((w for w in mine if not w.held and not w.leaving and not w.broken
                  and w.state in LEASABLE), None)
        if w is None:
            states = ", ".join(sorted({w.state for w in mine}))
            acts.append(SendFront(front, _refusal(
                msg.lease_id, 409, "no_workers",
                f"profile {msg.profile_id!r} is not free to lease ({states}); "
                "only an idle or logged-out account can be leased")))
            return
        if w.state == "idle":
            self._idle.remove(w)  # type: ignore[attr-defined]
        else:
            # Still out of rotation after the lease, unless the worker says otherwise.
            w.pending = ErrorInfo(next(k for k, s in ACCOUNT_STATES.items() if s == w.state),
                                  w.last_error or f"was {w.state} before the lease", 503)
        w.held = True
        w.lease = LeaseRec(msg.lease_id, front, now + max(MIN_LEASE_S, msg.timeout_s))
        self._set_state(w, "leased", now)
        w.last_sent = now
        acts.append(SendWorker(w.identity, Lease(msg.lease_id)))
        log.info("worker %s: leased (%s) for %.0f s", w.profile, msg.lease_id, msg.timeout_s)

    def _on_lease_end(self, front: bytes, lease_id: str, acts) -> None:
        w = self._lease_of(lease_id)
        if w is None or w.lease is None or w.lease.front != front or w.lease.over:
            return
        w.lease.over = True
        acts.append(SendWorker(w.identity, LeaseEnd(lease_id)))

    def _on_leased(self, w: Worker, msg: Leased | LeaseFailed, acts) -> None:
        rec = w.lease
        if rec is None or rec.lease_id != msg.lease_id:
            self.counters["late_messages"] += 1
            return
        if isinstance(msg, Leased):
            if rec.over or rec.granted:
                return
            rec.granted = True
            acts.append(SendFront(rec.front, LeaseGranted(rec.lease_id, w.profile, msg.ws_url)))
            return
        w.last_error = f"{msg.error.kind}: {msg.error.message}"
        if not rec.over:  # the worker resets (nothing to reset, mostly) and sends Idle
            rec.over = True
            acts.append(SendFront(rec.front, Failed(rec.lease_id, msg.error)))

    def _lease_deadlines(self, now: float, acts) -> None:
        for w in self._workers.values():
            rec = w.lease
            if rec is not None and not rec.over and now >= rec.deadline:
                rec.over = True
                log.info("worker %s: lease %s timed out", w.profile, rec.lease_id)
                acts.append(SendWorker(w.identity, LeaseEnd(rec.lease_id)))
                acts.append(SendFront(rec.front, Failed(
                    rec.lease_id, error("timeout", "the lease reached its time limit"))))

    def _lease_over(self, w: Worker, why: str, acts) -> None:
        """The worker's lease ended (it went Idle, died or left): tell the front if it
        does not know yet."""
        rec, w.lease = w.lease, None
        if rec is not None and not rec.over:
            acts.append(SendFront(rec.front, Failed(rec.lease_id, error("worker_died", why))))
