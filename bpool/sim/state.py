"""The simulator's mutable state with no I/O: knobs, quota, injected failures, page tokens, stats.

Every method that depends on time takes `now` (wall-clock seconds, so that benchmark scripts in
other processes can line the recorded times up with their own `time.time()`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from bpool.sim.wire import SPLIT_MODES, Pace

FAIL_MODES = ("error", "hang", "cut")
MAX_RECORDS = 2000
MAX_PAGE_TOKENS = 10_000


@dataclass(frozen=True)
class Knobs:
    """Everything the admin API may change at runtime."""

    tokens_per_s: float = 50.0
    first_token_s: float = 0.2
    answer_s: float = 0.0
    split: str = "chars"
    quota: int = 0  # requests per account per window; 0 = unlimited
    quota_window_s: float = 60.0
    require_token: bool = True  # GenerateContent must carry a token minted by a served page
    region_blocked: bool = False  # serve the "Available regions" page instead of the studio

    @property
    def pace(self) -> Pace:
        return Pace(self.tokens_per_s, self.first_token_s, self.answer_s, self.split)

    def updated(self, changes: dict) -> Knobs:
        """A copy with `changes` applied; ValueError names the first bad field."""
        current = dataclasses.asdict(self)
        for key, value in changes.items():
            if key not in current:
                raise ValueError(f"unknown knob {key!r}")
            kind = type(current[key])
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
            elif kind in (int, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{key} must be a number >= 0")
                value = kind(value)
            elif key == "split" and value not in SPLIT_MODES:
                raise ValueError(f"split must be one of {', '.join(SPLIT_MODES)}")
            current[key] = value
        return Knobs(**current)


@dataclass
class FailRule:
    mode: str  # "error": answer `status` at once; "hang": never answer; "cut": drop mid-stream
    count: int
    status: int = 500
    account: str | None = None  # None = any account


@dataclass
class AccountStats:
    requests: int = 0
    ok: int = 0
    errors: int = 0  # error statuses, injected hangs and cuts
    aborted: int = 0  # the client went away first (the page's Stop button, a driver timeout)
    in_flight: int = 0
    max_in_flight: int = 0  # > 1 means two requests overlapped on one account


@dataclass
class Record:
    """One GenerateContent request, for benchmarks and for asserting what the driver sent."""

    id: int
    account: str
    start: float
    model: str = ""
    prompt_chars: int = 0
    turns: int = 0
    params: dict = field(default_factory=dict)
    status: int = 0
    outcome: str = "running"  # running | ok | error | aborted | hang | cut
    first_byte: float | None = None
    end: float | None = None


class SimState:
    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.fail_rules: list[FailRule] = []
        self.accounts: dict[str, AccountStats] = {}
        self.records: deque[Record] = deque(maxlen=MAX_RECORDS)
        self._next_id = 1
        self._quota: dict[str, deque[float]] = {}
        # page token -> (account, last counter used); oldest forgotten first
        self._tokens: OrderedDict[str, tuple[str, int]] = OrderedDict()

    # ------------------------------------------------------------------ page tokens (anti-replay)
    def mint_page_token(self, account: str) -> str:
        token = secrets.token_urlsafe(12)
        self._tokens[token] = (account, 0)
        while len(self._tokens) > MAX_PAGE_TOKENS:
            self._tokens.popitem(last=False)
        return token

    def check_request_token(self, account: str, value: object) -> bool:
        """`value` is "<page token>.<counter>"; counters must grow, so a request cannot be replayed."""
        if not self.knobs.require_token:
            return True
        if not isinstance(value, str) or "." not in value:
            return False
        token, _, counter = value.rpartition(".")
        owner = self._tokens.get(token)
        if owner is None or owner[0] != account or not counter.isdigit():
            return False
        if int(counter) <= owner[1]:
            return False
        self._tokens[token] = (account, int(counter))
        return True

    # ------------------------------------------------------------------ quota
    def take_quota(self, account: str, now: float) -> bool:
        """Count one request against the account's window; False = over quota (not counted)."""
        if self.knobs.quota <= 0:
            return True
        window = self._quota.setdefault(account, deque())
        while window and window[0] <= now - self.knobs.quota_window_s:
            window.popleft()
        if len(window) >= self.knobs.quota:
            return False
        window.append(now)
        return True

    # ------------------------------------------------------------------ injected failures
    def add_fail_rule(self, rule: FailRule) -> None:
        if rule.mode not in FAIL_MODES:
            raise ValueError(f"mode must be one of {', '.join(FAIL_MODES)}")
        if rule.count < 1 or not 400 <= rule.status <= 599:
            raise ValueError("count must be >= 1 and status a 4xx/5xx code")
        self.fail_rules.append(rule)

    def take_fail_rule(self, account: str) -> FailRule | None:
        for rule in self.fail_rules:
            if rule.account in (None, account):
                rule.count -= 1
                if rule.count == 0:
                    self.fail_rules.remove(rule)
                return rule
        return None

    # ------------------------------------------------------------------ stats
    def begin(self, account: str, now: float) -> Record:
        rec = Record(id=self._next_id, account=account, start=now)
        self._next_id += 1
        self.records.append(rec)
        acc = self.accounts.setdefault(account, AccountStats())
        acc.requests += 1
        acc.in_flight += 1
        acc.max_in_flight = max(acc.max_in_flight, acc.in_flight)
        return rec

    def end(self, rec: Record, status: int, outcome: str, now: float) -> None:
        if rec.end is not None:
            return
        rec.status, rec.outcome, rec.end = status, outcome, now
        acc = self.accounts[rec.account]
        acc.in_flight -= 1
        if outcome == "ok":
            acc.ok += 1
        elif outcome == "aborted":
            acc.aborted += 1
        else:
            acc.errors += 1

    def reset(self) -> None:
        """Forget stats, quota windows and pending failures (knobs and page tokens stay)."""
        self.fail_rules.clear()
        self._quota.clear()
        self.records.clear()
        self.accounts = {k: AccountStats(in_flight=v.in_flight, max_in_flight=v.in_flight)
                         for k, v in self.accounts.items() if v.in_flight}

    def snapshot(self) -> dict:
        return {
            "knobs": dataclasses.asdict(self.knobs),
            "fail_rules": [dataclasses.asdict(r) for r in self.fail_rules],
            "accounts": {k: dataclasses.asdict(v) for k, v in self.accounts.items()},
            "requests": [dataclasses.asdict(r) for r in self.records],
        }
