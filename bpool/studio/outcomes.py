"""What went wrong on the page, and whose fault it is (sans-IO).

Every driver step raises `StepError(step, message, kind)` naming the step; `kind` is one of
protocol.ERROR_KINDS so the worker can hand it to the broker unchanged. The classifiers here are
pure functions of what the page showed (URL, title, HTTP status, body, notices).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from bpool.protocol import ErrorInfo, error


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
    rate_limit_s: float = 300.0  # "too many requests": minutes
    quota_s: float = 4 * 3600.0  # "exceeded quota": hours (free quotas are daily)


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


def notice_problem(texts: list[str], quota_phrases: tuple[str, ...],
                   rate_phrases: tuple[str, ...], cooldowns: Cooldowns) -> tuple[str, str, float | None] | None:
    """(kind, message, retry_after_s) for a quota callout or error toast the page shows."""
    for text in texts:
        low = text.lower()
        if any(p in low for p in quota_phrases):
            return "rate_limited", f"the page says: {text.strip()[:200]}", cooldowns.quota_s
        if any(p in low for p in rate_phrases):
            return "rate_limited", f"the page says: {text.strip()[:200]}", cooldowns.rate_limit_s
    for text in texts:
        if text.strip():
            return "site", f"the page says: {text.strip()[:200]}", None
    return None


def http_problem(status: int, message: str, quota_phrases: tuple[str, ...],
                 cooldowns: Cooldowns) -> tuple[str, str, float | None]:
    """(kind, message, retry_after_s) for a non-2xx GenerateContent response."""
    detail = f"HTTP {status}" + (f": {message.strip()[:200]}" if message.strip() else "")
    if status == 429:
        low = message.lower()
        if any(p in low for p in quota_phrases):
            return "rate_limited", detail, cooldowns.quota_s
        return "rate_limited", detail, cooldowns.rate_limit_s
    if status == 401:
        return "logged_out", detail, None
    if status == 400:
        return "bad_request", detail, None
    return "site", detail, None
