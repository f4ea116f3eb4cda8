"""Account health, part of the broker core (no I/O): what an account's trouble does to its
worker, rate-limit cool-downs keyed by (profile, model) and usage counters per profile and
model. `BrokerCore` (core.py) inherits it.

Free quotas are per account AND per model: an account rate-limited for one model still serves
the others, so a rate limit never changes the worker's state; it puts an end time in the
profile's cool-down dict, which routing and the queue consult. That dict belongs to the profile,
not to one registration: a worker that re-registers (after its own restart or the broker's) is
still cooling. Deadlines here are monotonic; the shell turns them into wall-clock times when it
saves them (pool/cooldown_file.py) and back when a new broker starts.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Callable

from bpool.pool.state import (
    ACCOUNT_STATES, OUT_STATES, Job, UsageRow, Worker, WorkerState, can_take, nobody_in_time,
)
from bpool.protocol import ErrorInfo, ModelUsage

log = logging.getLogger("bpool.broker")

# A worker with no model list serves any model name a client sends: past this many rows a
# profile's further models are counted together, so clients cannot grow the status without end.
MAX_USAGE_MODELS = 64
OTHER_MODELS = "other"


class AccountHealth:
    # Set by BrokerCore.__init__.
    counters: dict[str, int]
    cooldown_s: float
    _workers: dict[bytes, Worker]
    _idle: deque[Worker]
    _queue: deque[Job]
    _cool: dict[str, dict[str, float]]  # profile -> model -> end of its cool-down
    _usage: dict[str, dict[str, UsageRow]]  # profile -> model -> what it did
    _next_cool_end: float  # the earliest end in _cool (inf: none), so tick stays one comparison
    cooling_changed: bool  # a cool-down began or was lifted since the shell last saved them

    # From JobBook (jobs.py), later in BrokerCore's bases: annotations only, so as not to
    # shadow them.
    _assign: Callable[[Worker, Job, float, list], None]
    _fail: Callable[[Job, ErrorInfo, list], None]
    # From BrokerCore.
    pause_s: float
    _set_state: Callable[[Worker, WorkerState, float], None]
    _make_available: Callable[[Worker, float, list], None]

    # ------------------------------------------------------------------ account states

    def _on_account_state(self, w: Worker, err: ErrorInfo | None, model: str | None,
                          now: float, acts) -> None:
        if model is not None and (err is None or err.kind == "rate_limited"):
            if err is None:
                self._lift_cooldown(w, model, now, acts)
            elif not (w.broken or w.leaving):
                w.last_error = f"{err.kind}: {err.message}"
                self._cool_model(w, model, err, now, acts)
            return
        if err is None:
            w.pending = None
            if not w.held and w.state in OUT_STATES:
                self._make_available(w, now, acts)
            return
        w.last_error = f"{err.kind}: {err.message}"
        if w.broken or w.leaving:
            return  # on its way out already
        if err.kind == "broken":
            w.broken = True
            w.pending = None
            if w.state == "idle":
                self._idle.remove(w)
            self._set_state(w, "draining", now)
            return
        if w.held:
            w.pending = err  # applied when the worker reports Idle
            return
        was_idle = w.state == "idle"
        if was_idle:
            self._idle.remove(w)
        if not self._apply_account(w, err, now) and (was_idle or w.state == "busy"):
            self._make_available(w, now, acts)  # an error kind with no account effect

    def _apply_account(self, w: Worker, err: ErrorInfo, now: float) -> bool:
        """Account trouble on a worker that is not in the idle deque and holds no job; False
        when the error kind has no effect on the account."""
        w.last_error = f"{err.kind}: {err.message}"
        state = ACCOUNT_STATES.get(err.kind)
        if state == "cooling":
            w.cooldown_until = now + (err.retry_after_s or self.cooldown_s)
        elif state == "paused":
            w.cooldown_until = now + (err.retry_after_s or self.pause_s)
        if state is not None:
            self._set_state(w, state, now)
        elif err.kind == "broken":
            w.broken = True
            self._set_state(w, "draining", now)
        else:
            return False
        return True

    # ------------------------------------------------------------------ cool-downs

    def _profile_books(self, w: Worker) -> None:
        """Point a new registration at its profile's cool-downs and usage rows."""
        w.cooling = self._cool.setdefault(w.profile, {})
        w.usage = self._usage.setdefault(w.profile, {})

    def _cool_model(self, w: Worker, model: str, err: ErrorInfo, now: float, acts) -> None:
        """w's account is rate-limited for `model` (the newest report sets the end)."""
        seconds = err.retry_after_s or self.cooldown_s
        until = now + seconds
        w.cooling[model] = until
        self.cooling_changed = True
        self._next_cool_end = min(self._next_cool_end, until)
        key = f"cooldowns:{w.profile}"  # per profile, for /metrics (profiles are few)
        self.counters[key] = self.counters.get(key, 0) + 1
        log.info("worker %s: rate-limited for %s, cooling %.0f s", w.profile, model, seconds)
        self._fail_resting(model, now, acts)

    def _lift_cooldown(self, w: Worker, model: str, now: float, acts) -> None:
        """The worker says the account may use `model` again before its cool-down ended."""
        if w.cooling.pop(model, None) is None:
            return
        self.cooling_changed = True
        log.info("worker %s: %s usable again", w.profile, model)
        for other in list(self._idle):  # every registration of the profile may take its jobs
            if other.cooling is w.cooling:
                self._offer_queue(other, now, acts)

    def _fail_resting(self, model: str, now: float, acts) -> None:
        """Queued jobs for `model` fail at once (429 with the soonest reset) when no account can
        take them now because the ones for it are rate-limited or resting."""
        if not any(job.spec.model == model for job in self._queue):
            return
        err = nobody_in_time(self._workers.values(), model, now, math.inf)
        if err is None or err.kind != "rate_limited":
            return
        for job in [job for job in self._queue if job.spec.model == model]:
            self._queue.remove(job)  # its deadline entry is skipped once the job has ended
            self._fail(job, err, acts)

    def _expire_cooldowns(self, now: float, acts) -> None:
        """Cool-downs that ended; an idle worker whose ended may take what waited for it."""
        ended: set[str] = set()
        next_end = math.inf
        for profile, models in self._cool.items():
            for model, end in list(models.items()):
                if end <= now:
                    del models[model]
                    ended.add(profile)
                    log.info("profile %s: cool-down for %s over", profile, model)
                elif end < next_end:
                    next_end = end
        self._next_cool_end = next_end
        if ended and self._queue:
            for w in list(self._idle):
                if w.profile in ended:
                    self._offer_queue(w, now, acts)

    def _offer_queue(self, w: Worker, now: float, acts) -> None:
        """An idle worker that may serve more models than before: the oldest job it can take."""
        for i, job in enumerate(self._queue):
            if can_take(w, job.spec.model):
                del self._queue[i]
                self._idle.remove(w)
                self._assign(w, job, now, acts)
                return

    def restore_cooldowns(self, saved: dict[str, dict[str, float]]) -> None:
        """Cool-downs an earlier broker saved, as monotonic ends on this process's clock."""
        for profile, models in saved.items():
            self._cool.setdefault(profile, {}).update(models)
            for end in models.values():
                self._next_cool_end = min(self._next_cool_end, end)

    def cooldowns(self) -> dict[str, dict[str, float]]:
        """Every running cool-down (profile -> model -> monotonic end), to be saved; marks
        them saved."""
        self.cooling_changed = False
        return {profile: dict(models) for profile, models in self._cool.items() if models}

    # ------------------------------------------------------------------ usage

    def _usage_row(self, w: Worker, model: str) -> UsageRow:
        row = w.usage.get(model)
        if row is None:
            if len(w.usage) >= MAX_USAGE_MODELS and model not in w.models:
                model = OTHER_MODELS
            row = w.usage.setdefault(model, UsageRow())
        return row

    def _count_error(self, w: Worker, model: str, kind: str) -> None:
        row = self._usage_row(w, model)
        row.requests += 1
        row.errors[kind] = row.errors.get(kind, 0) + 1

    def usage_rows(self) -> tuple[ModelUsage, ...]:
        return tuple(
            ModelUsage(profile, model, r.requests, r.prompt_tokens, r.completion_tokens,
                       dict(r.errors))
            for profile, rows in sorted(self._usage.items())
            for model, r in sorted(rows.items())
        )
