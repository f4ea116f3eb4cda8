"""What went wrong on the page, and whose fault it is (sans-IO).

Every driver step raises `StepError(step, message, kind)` naming the step; `kind` is one of
protocol.ERROR_KINDS so the worker can hand it to the broker unchanged. The classifiers here are
pure functions of what the page showed (URL, title, HTTP status, body, notices).

Account trouble and the kind it becomes (the broker takes such a worker out of rotation):

    quota / too many requests (HTTP 429, frame 8)       rate_limited, for `retry_after_s`: until
        the daily reset (midnight America/Los_Angeles) when the message names a per-day quota,
        `Cooldowns.quota_s` for an "exceeded quota" phrase, else `Cooldowns.rate_limit_s`
    permission denied / bot check (403 + frame 7)        paused (the broker's BPOOL_PAUSE_S)
    not signed in (HTTP 401, frame 16, sign-in page)     logged_out
    the terms of service must be accepted (driver)       needs_consent
A request the site rejects (HTTP 400, frame 3) is the client's: bad_request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Callable
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bpool import config
from bpool.protocol import ErrorInfo, error
from bpool.studio.stream_parser import (RPC_INVALID_ARGUMENT, RPC_NAMES, RPC_PERMISSION_DENIED,
                                        RPC_RESOURCE_EXHAUSTED, RPC_UNAUTHENTICATED)

Clock = Callable[[], datetime]  # an aware "now"
QUOTA_RESET_ZONE = "America/Los_Angeles"  # the free daily quota resets at midnight there
# "...PerDay..." quota ids, "per day", "daily": a quota that only the daily reset lifts.
_DAILY = re.compile(r"per[\s_-]?day|daily")
PAUSE_PHRASES = ("permission denied",)  # e.g. "Failed to generate content: permission denied"


class StepError(Exception):
    """A driver step failed. `kind` says whose fault it is (protocol.ERROR_KINDS)."""

    def __init__(self, step: str, message: str, kind: str = "site",
                 retry_after_s: float | None = None):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.kind = kind
        self.retry_after_s = retry_after_s

    def to_error(self) -> ErrorInfo:
        return error(self.kind, str(self), retry_after_s=self.retry_after_s)


class BrowserGone(Exception):
    """The page, context or browser closed under the driver: the worker cannot go on."""


@dataclass(frozen=True)
class Cooldowns:
    rate_limit_s: float = config.default("BPOOL_RATE_LIMIT_COOLDOWN_S")  # burst: minutes
    quota_s: float = config.default("BPOOL_QUOTA_COOLDOWN_S")  # exceeded quota: hours


def location_problem(url: str, title: str, *, signin_hosts: tuple[str, ...],
                     signin_path_markers: tuple[str, ...], signin_title: str,
                     region_title: str) -> tuple[str, str] | None:
    """(kind, message) when the page is not the studio: signed out, or region not supported."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in signin_hosts or any(m.lower() in parts.path.lower() for m in signin_path_markers):
        return "logged_out", f"the session is not logged in (redirected to {host}{parts.path})"
    if signin_title and signin_title.lower() in title.lower():
        return "logged_out", f"the session is not logged in (page title {title!r})"
    if region_title and region_title.lower() in title.lower():
        return "site", "AI Studio is not available in this region (page title says so)"
    return None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _reset_zone() -> tzinfo:
    try:
        return ZoneInfo(QUOTA_RESET_ZONE)
    except ZoneInfoNotFoundError:  # no tz database (install tzdata): Pacific standard time
        return timezone(timedelta(hours=-8), "PST")


def seconds_until_quota_reset(now: datetime) -> float:
    """Seconds from `now` (aware) to the next midnight in America/Los_Angeles, when the free
    daily quota resets (23 or 25 hours apart on the days the clocks change)."""
    zone = _reset_zone()
    local = now.astimezone(zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
    # Subtract in UTC: aware datetimes sharing a tzinfo subtract as wall times (DST ignored).
    left = (midnight.astimezone(timezone.utc) - now.astimezone(timezone.utc)).total_seconds()
    return max(1.0, left)


def quota_retry_after(message: str, quota_phrases: tuple[str, ...], cooldowns: Cooldowns,
                      now: datetime | None = None) -> float:
    """How long an account that hit a limit should rest, from what the message says."""
    low = message.lower()
    if _DAILY.search(low):
        return seconds_until_quota_reset(now or utc_now())
    if any(p in low for p in quota_phrases):
        return cooldowns.quota_s
    return cooldowns.rate_limit_s


def notice_problem(texts: list[str], quota_phrases: tuple[str, ...],
                   rate_phrases: tuple[str, ...], cooldowns: Cooldowns,
                   pause_phrases: tuple[str, ...] = PAUSE_PHRASES,
                   ) -> tuple[str, str, float | None] | None:
    """(kind, message, retry_after_s) for a quota callout or error toast the page shows."""
    for text in texts:
        low = text.lower()
        said = f"the page says: {text.strip()[:200]}"
        if any(p in low for p in quota_phrases):
            return "rate_limited", said, cooldowns.quota_s
        if any(p in low for p in rate_phrases):
            return "rate_limited", said, cooldowns.rate_limit_s
        if any(p in low for p in pause_phrases):
            return "paused", said, None
    for text in texts:
        if text.strip():
            return "site", f"the page says: {text.strip()[:200]}", None
    return None


def http_problem(status: int, message: str, quota_phrases: tuple[str, ...],
                 cooldowns: Cooldowns, code: int | None = None,
                 now: datetime | None = None) -> tuple[str, str, float | None]:
    """(kind, message, retry_after_s) for a non-2xx GenerateContent response; `code` is the
    error frame's code when the body had one (a 403 body `[,[7,"..."]]` says 7)."""
    detail = f"HTTP {status}" + (f": {message.strip()[:200]}" if message.strip() else "")
    if status == 429 or code == RPC_RESOURCE_EXHAUSTED:
        return "rate_limited", detail, quota_retry_after(message, quota_phrases, cooldowns, now)
    if status == 401 or code == RPC_UNAUTHENTICATED:
        return "logged_out", detail, None
    if code == RPC_PERMISSION_DENIED:
        return "paused", detail, None
    if status == 400 or code == RPC_INVALID_ARGUMENT:
        return "bad_request", detail, None
    return "site", detail, None


def status_problem(code: int, message: str, quota_phrases: tuple[str, ...],
                   cooldowns: Cooldowns, now: datetime | None = None,
                   ) -> tuple[str, str, float | None]:
    """(kind, message, retry_after_s) for an error frame `[code, message]` inside a 2xx body."""
    detail = f"error {code} {RPC_NAMES.get(code, 'CODE_%d' % code)}" + (
        f": {message.strip()[:300]}" if message.strip() else "")
    if code == RPC_RESOURCE_EXHAUSTED:
        return "rate_limited", detail, quota_retry_after(message, quota_phrases, cooldowns, now)
    if code == RPC_INVALID_ARGUMENT:  # e.g. "Thinking level MINIMAL is not supported"
        return "bad_request", detail, None
    if code == RPC_PERMISSION_DENIED:
        return "paused", detail, None
    if code == RPC_UNAUTHENTICATED:
        return "logged_out", detail, None
    return "site", detail, None
