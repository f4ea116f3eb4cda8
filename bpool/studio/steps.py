"""The rules every page step follows, shared by the driver and its helpers (panel, popups).

A step runs under a timeout and fails with a `StepError` naming the step and whose fault it is;
the page, context or browser going away is `BrowserGone`. `Steps` holds the page, the settings,
the selector table and the tap, so the driver's helpers need nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar, TypeVar

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bpool import config
from bpool.studio.outcomes import BrowserGone, Cooldowns, StepError
from bpool.studio.snapshots import save_snapshot
from bpool.studio.table import STUDIO, StudioTable
from bpool.studio.tap import Tap, TapClosed

T = TypeVar("T")


@dataclass(frozen=True)
class DriverSettings:
    ENV: ClassVar[dict[str, str]] = {
        "base_url": "BPOOL_STUDIO_URL", "step_timeout_s": "BPOOL_STEP_TIMEOUT_S",
        "navigation_timeout_s": "BPOOL_NAVIGATION_TIMEOUT_S",
        "first_chunk_timeout_s": "BPOOL_FIRST_CHUNK_TIMEOUT_S",
        "idle_timeout_s": "BPOOL_STREAM_IDLE_TIMEOUT_S",
        "answer_timeout_s": "BPOOL_ANSWER_TIMEOUT_S", "temporary_chat": "BPOOL_TEMPORARY_CHAT",
    }
    base_url: str = config.default("BPOOL_STUDIO_URL")
    step_timeout_s: config.Positive = config.default("BPOOL_STEP_TIMEOUT_S")
    navigation_timeout_s: config.Positive = config.default("BPOOL_NAVIGATION_TIMEOUT_S")
    send_timeout_s: float = 20.0  # Run clicked → the page's request must start
    first_chunk_timeout_s: config.Positive = config.default("BPOOL_FIRST_CHUNK_TIMEOUT_S")
    idle_timeout_s: config.Positive = config.default("BPOOL_STREAM_IDLE_TIMEOUT_S")
    answer_timeout_s: config.Positive = config.default("BPOOL_ANSWER_TIMEOUT_S")
    models_wait_s: float = 10.0  # how long to wait for the page's own ListModels
    temporary_chat: bool = config.default("BPOOL_TEMPORARY_CHAT")
    popup_timeout_s: float = 5.0  # dismissing first-run popups, all of them together
    control_timeout_s: float = 5.0  # a panel, menu or select reacting to a click
    tap_hello_s: float = 5.0  # a new document's tap reporting in
    cooldowns: Cooldowns = field(default_factory=Cooldowns)
    snapshots_kept: int = 20

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> "DriverSettings":
        """From the registry's variables; `overrides` (flags) win. ConfigError if invalid."""
        s = config.build(cls, {
            "cooldowns": Cooldowns(config.value("BPOOL_RATE_LIMIT_COOLDOWN_S"),
                                   config.value("BPOOL_QUOTA_COOLDOWN_S")),
            **(overrides or {})})
        return dataclasses.replace(s, base_url=s.base_url.rstrip("/"))

    @property
    def new_chat_url(self) -> str:
        return self.base_url.rstrip("/") + STUDIO.new_chat_path


class Steps:
    """One page and the way to act on it. Not safe for concurrent use (nor is the page)."""

    def __init__(self, settings: DriverSettings, table: StudioTable, tap: Tap, snapshot_dir: Path):
        self.s = settings
        self.t = table
        self.tap = tap
        self.snapshot_dir = snapshot_dir
        self.page: Any = None

    @contextlib.asynccontextmanager
    async def step(self, name: str, timeout_s: float | None = None) -> AsyncIterator[None]:
        """Run a block as the named step: timeout, and every failure said in our own terms."""
        limit = timeout_s or self.s.step_timeout_s
        try:
            async with asyncio.timeout(limit):
                yield
        except (StepError, BrowserGone):
            raise
        except TapClosed:
            raise BrowserGone(f"{name}: the page closed") from None
        except (TimeoutError, PlaywrightTimeout):
            raise StepError(name, f"timed out after {limit:.0f}s", "timeout") from None
        except PlaywrightError as exc:
            first = (exc.message or str(exc)).strip().splitlines()[0][:300]
            if self.tap.closed or "has been closed" in first or "crashed" in first.lower():
                raise BrowserGone(f"{name}: {first}") from None
            raise StepError(name, first, "site") from None
        except Exception as exc:  # Playwright raises a bare Exception when its driver is gone
            if "connection closed" in str(exc).lower():
                raise BrowserGone(f"{name}: {exc}") from None
            raise

    async def js(self, name: str, script: str, arg: Any = None) -> Any:
        async with self.step(name):
            return await self.page.evaluate(script, arg)

    async def until(self, name: str, what: str, check: Callable[[], Awaitable[T | None]],
                    timeout_s: float, interval_s: float = 0.02) -> T:
        """Poll `check` until it returns something truthy; StepError(kind "timeout") naming
        `what` did not happen when `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise StepError(name, f"{what} (waited {timeout_s:.1f}s)", "timeout")
            await asyncio.sleep(interval_s)

    async def snapshot(self, step: str) -> Path | None:
        """Screenshot + HTML of the page for the operator; never raises."""
        if self.page is None or self.tap.closed:
            return None
        return await save_snapshot(self.page, self.snapshot_dir, step, self.s.snapshots_kept)
