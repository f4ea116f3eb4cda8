"""The simulator's mutable state with no I/O: knobs, quota, injected failures, page tokens, stats.

Every method that depends on time takes `now` (wall-clock seconds, so that benchmark scripts in
other processes can line the recorded times up with their own `time.time()`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from bpool.sim.knobs import Knobs

FAIL_MODES = ("error", "hang", "cut", "frame", "safety")
MAX_RECORDS = 2000
MAX_PAGE_TOKENS = 10_000


@dataclass
class FailRule:
    """One injected failure for the next `count` GenerateContent requests (of `account`)."""

    mode: str  # "error": HTTP `status` at once; "hang": never answer; "cut": drop mid-stream;
    #            "frame": an error frame (`code`, `message`) after `after` answer chunks;
    #            "safety": a SAFETY finish with no content
    count: int = 1
    status: int = 500
    account: str | None = None  # None = any account (an email)
    code: int = 13
    message: str | None = None
    after: int = 0


@dataclass
class AccountStats:
    requests: int = 0
    ok: int = 0
    errors: int = 0  # error statuses and error frames, injected hangs and cuts
    aborted: int = 0  # the client went away first (the page's Stop button, a driver timeout)
    in_flight: int = 0
    max_in_flight: int = 0  # > 1 means two requests overlapped on one account
    saved: int = 0  # prompts saved to the account (CreatePrompt/UpdatePrompt): not temporary


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
    error_code: int | None = None  # the google.rpc code of an error frame or error body
    finish: int | None = None  # 1 STOP, 2 MAX_TOKENS, 3 SAFETY
    response_id: str | None = None
    saved: bool = False  # the page saved this turn to the account (the chat was not temporary)
    origin: str | None = None  # the request's Origin header (the page's origin)


class SimState:
    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.fail_rules: list[FailRule] = []
        self.accounts: dict[str, AccountStats] = {}
        self.records: deque[Record] = deque(maxlen=MAX_RECORDS)
        self.rpcs: Counter[str] = Counter()  # calls per RPC method ("OPTIONS" = preflights)
        self._next_id = 1
        self._quota: dict[tuple[str, str], deque[float]] = {}
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
        """`value` is "!<page token>.<counter>"; counters must grow, so a request cannot be replayed."""
        if not self.knobs.require_token:
            return True
        if not isinstance(value, str) or not value.startswith("!") or "." not in value:
            return False
        token, _, counter = value[1:].rpartition(".")
        owner = self._tokens.get(token)
        if owner is None or owner[0] != account or not counter.isdigit():
            return False
        if int(counter) <= owner[1]:
            return False
        self._tokens[token] = (account, int(counter))
        return True

    # ------------------------------------------------------------------ quota
    def take_quota(self, account: str, model: str, now: float) -> bool:
        """Count one request against the account's window for this model (free quotas are per
        account AND per model, docs/aistudio-page.md); False = over quota (not counted)."""
        if self.knobs.quota <= 0:
            return True
        window = self._quota.setdefault((account, model), deque())
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
        if rule.count < 1 or not 400 <= rule.status <= 599 or rule.after < 0:
            raise ValueError("count must be >= 1, status a 4xx/5xx code and after >= 0")
        if not 1 <= rule.code <= 16:
            raise ValueError("code must be a google.rpc code, 1..16")
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

    def mark_saved(self, account: str, response_id: object) -> bool:
        """The page saved the turn that `response_id` answered; False if no such request."""
        acc = self.accounts.setdefault(account, AccountStats())
        acc.saved += 1
        for rec in reversed(self.records):
            if rec.account == account and rec.response_id == response_id:
                rec.saved = True
                return True
        return False

    def reset(self) -> None:
        """Forget stats, quota windows and pending failures (knobs and page tokens stay)."""
        self.fail_rules.clear()
        self._quota.clear()
        self.records.clear()
        self.rpcs.clear()
        self.accounts = {k: AccountStats(in_flight=v.in_flight, max_in_flight=v.in_flight)
                         for k, v in self.accounts.items() if v.in_flight}

    def snapshot(self) -> dict:
        return {
            "knobs": dataclasses.asdict(self.knobs),
            "fail_rules": [dataclasses.asdict(r) for r in self.fail_rules],
            "accounts": {k: dataclasses.asdict(v) for k, v in self.accounts.items()},
            "requests": [dataclasses.asdict(r) for r in self.records],
            "rpcs": dict(self.rpcs),
        }
