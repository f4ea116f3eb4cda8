"""The AI Studio page driver: open the page, pick the model, set parameters, submit, stream, reset.

Google changes the page without notice, so every selector and URL pattern lives in `STUDIO`
below and nowhere else (tap.js gets its URL markers from it too). Every step runs under a timeout
and fails with a `StepError` naming the step and whose fault it is; unexpected failures leave a
screenshot and an HTML snapshot under `<run dir>/snapshots/<profile>/` for the operator.

The answer is read from the page's own GenerateContent response as it streams (tap.js + Tap),
never from the DOM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bpool import config
from bpool.protocol import JobSpec, Usage
from bpool.studio import page_js
from bpool.studio.answer import AnswerLimits, Emit, read_answer
from bpool.studio.outcomes import (BrowserGone, Cooldowns, StepError, location_problem,
                                   notice_problem)
from bpool.studio.prompt import render_prompt
from bpool.studio.snapshots import save_snapshot
from bpool.studio.stream_parser import parse_models
from bpool.studio.tap import Tap, TapClosed, TapStream, tap_script

log = logging.getLogger("bpool.driver")


@dataclass(frozen=True)
class StudioTable:
    """THE table of page facts (AISTUDIO.md). Update here when the page changes."""

    # URLs and page states
    new_chat_path: str = "/prompts/new_chat"
    generate_marker: str = "GenerateContent"  # substring of the streamed answer's RPC URL
    models_marker: str = "ListModels"
    signin_hosts: tuple[str, ...] = ("accounts.google.com",)
    signin_path_markers: tuple[str, ...] = ("/signin", "ServiceLogin")
    signin_title: str = "Sign in"
    region_title: str = "Available regions"
    ready: tuple[str, ...] = ("ms-prompt-box", "ms-prompt-input-wrapper", "ms-chunk-editor")
    model_name: str = '[data-test-id="model-name"]'
    model_pref_key: str = "aiStudioUserPreference"
    model_pref_field: str = "promptModel"
    account_email: tuple[str, ...] = (
        '[data-test-id="account-email"]',
        'a[aria-label^="Google Account"]',
        '[aria-label*="@"]',
        'img[alt*="@"]',
    )
    # submitting
    prompt_textarea: tuple[str, ...] = (
        'ms-prompt-box textarea[aria-label="Enter a prompt"]',
        "ms-prompt-input-wrapper textarea",
        "textarea.textarea",
    )
    run_button: tuple[str, ...] = ('ms-run-button button[type="submit"]', 'button[aria-label="Run"]')
    stop_button: str = 'button[aria-label="Stop generating"]'
    new_chat_button: str = 'button[aria-label="New chat"]'
    dialog: str = ".mat-mdc-dialog-inner-container"
    discard_label: str = "Discard and continue"
    chat_turn: str = "ms-chat-turn"
    # notices
    toasts: str = "div.toast.warning, div.toast.error"
    toast_text: str = "span.content-text"
    quota_callout: str = "ms-callout.error-callout .message"
    quota_phrases: tuple[str, ...] = ("exceeded quota", "quota exceeded", "out of free generations")
    rate_phrases: tuple[str, ...] = ("too many requests", "rate limit")
    # parameters (right-hand panel)
    temperature: str = 'ms-slider input[type="number"][max="2"]'
    top_p: str = 'ms-slider input[type="number"][max="1"]'
    max_tokens: str = 'input[aria-label="Maximum output tokens"]'
    stop_input: str = 'input[aria-label="Add stop token"]'
    stop_chip_remove: str = 'mat-chip button.remove-button[aria-label*="Remove"]'
    thinking_toggle: str = 'button[role="switch"][aria-label="Toggle thinking mode"]'
    # our own name on the page (the exposed binding tap.js posts to)
    binding: str = "__bpoolTap"


STUDIO = StudioTable()


@dataclass(frozen=True)
class DriverSettings:
    base_url: str = "https://aistudio.google.com"  # BPOOL_STUDIO_URL
    step_timeout_s: float = 30.0  # BPOOL_STEP_TIMEOUT_S
    navigation_timeout_s: float = 60.0  # BPOOL_NAVIGATION_TIMEOUT_S
    send_timeout_s: float = 20.0  # Run clicked → the page's request must start
    first_chunk_timeout_s: float = 180.0  # BPOOL_FIRST_CHUNK_TIMEOUT_S (thinking takes a while)
    idle_timeout_s: float = 120.0  # BPOOL_STREAM_IDLE_TIMEOUT_S: silence between pieces
    answer_timeout_s: float = 900.0  # BPOOL_ANSWER_TIMEOUT_S: the whole answer
    models_wait_s: float = 10.0  # how long to wait for the page's own ListModels
    cooldowns: Cooldowns = field(default_factory=Cooldowns)
    snapshots_kept: int = 20

    @classmethod
    def from_env(cls) -> "DriverSettings":
        f = config.env_float
        return cls(
            base_url=config.env_str("BPOOL_STUDIO_URL", cls.base_url).rstrip("/"),
            step_timeout_s=f("BPOOL_STEP_TIMEOUT_S", cls.step_timeout_s),
            navigation_timeout_s=f("BPOOL_NAVIGATION_TIMEOUT_S", cls.navigation_timeout_s),
            first_chunk_timeout_s=f("BPOOL_FIRST_CHUNK_TIMEOUT_S", cls.first_chunk_timeout_s),
            idle_timeout_s=f("BPOOL_STREAM_IDLE_TIMEOUT_S", cls.idle_timeout_s),
            answer_timeout_s=f("BPOOL_ANSWER_TIMEOUT_S", cls.answer_timeout_s),
            cooldowns=Cooldowns(f("BPOOL_RATE_LIMIT_COOLDOWN_S", 300.0),
                                f("BPOOL_QUOTA_COOLDOWN_S", 4 * 3600.0)),
        )

    @property
    def new_chat_url(self) -> str:
        return self.base_url.rstrip("/") + STUDIO.new_chat_path


class StudioDriver:
    """One page of one browser context. Not safe for concurrent jobs (nor is the page)."""

    def __init__(self, context: Any, settings: DriverSettings, snapshot_dir: Path,
                 table: StudioTable = STUDIO):
        self.context = context
        self.page: Any = None
        self.s = settings
        self.t = table
        self.snapshot_dir = snapshot_dir
        self.tap = Tap(table.generate_marker, table.models_marker)
        self.account = ""
        self.models: tuple[str, ...] = ()
        self.model_names: dict[str, str] = {}
        self.defaults: dict[str, Any] = {}  # the page's own parameter values, restored per job
        self._watcher: asyncio.Task | None = None
        self._old_notices: set[str] = set()

    # ------------------------------------------------------------------ plumbing

    async def install(self) -> None:
        """Expose the tap binding and its init script; must run before the first navigation."""
        async with self.step("install tap"):
            await self.context.expose_binding(self.t.binding, self.tap.on_message)
            await self.context.add_init_script(
                script=tap_script(self.t.binding, self.t.generate_marker, self.t.models_marker))
            pages = self.context.pages
            self.page = pages[0] if pages else await self.context.new_page()
            for extra in pages[1:]:
                await extra.close()
        self.context.on("close", lambda *_: self.tap.close())
        self.page.on("close", lambda *_: self.tap.close())
        self.page.on("crash", lambda *_: self.tap.close())

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

    def watch(self, gone: asyncio.Event) -> None:
        """Treat `gone` (the browser or its driver exited) like the page closing."""
        async def wait() -> None:
            await gone.wait()
            self.tap.close()
        self._watcher = asyncio.create_task(wait())

    async def _js(self, name: str, script: str, arg: Any = None) -> Any:
        async with self.step(name):
            return await self.page.evaluate(script, arg)

    async def snapshot(self, step: str) -> Path | None:
        """Screenshot + HTML of the page for the operator; never raises."""
        if self.page is None or self.tap.closed:
            return None
        return await save_snapshot(self.page, self.snapshot_dir, step, self.s.snapshots_kept)

    # ------------------------------------------------------------------ page state

    async def _probe(self, name: str) -> dict:
        return await self._js(name, page_js.PROBE, {
            "ready": list(self.t.ready), "modelName": self.t.model_name,
            "prompt": list(self.t.prompt_textarea), "dialog": self.t.dialog,
            "turn": self.t.chat_turn, "toasts": self.t.toasts, "toastText": self.t.toast_text,
            "callout": self.t.quota_callout,
        })

    async def _check_location(self, name: str) -> None:
        async with self.step(name):
            url, title = self.page.url, await self.page.title()
        problem = location_problem(
            url, title, signin_hosts=self.t.signin_hosts,
            signin_path_markers=self.t.signin_path_markers, signin_title=self.t.signin_title,
            region_title=self.t.region_title)
        if problem:
            raise StepError(name, problem[1], problem[0])

    async def _goto_new_chat(self, name: str) -> None:
        async with self.step(name, self.s.navigation_timeout_s):
            await self.page.goto(self.s.new_chat_url, wait_until="domcontentloaded")

    async def _wait_ready(self, name: str) -> dict:
        """Poll until the prompt box is visible and the model is shown; spot sign-in on the way."""
        deadline = time.monotonic() + self.s.navigation_timeout_s
        while True:
            await self._check_location(name)
            try:
                probe = await self._probe(name)
            except StepError:  # e.g. "execution context was destroyed" while navigating
                probe = {}
            if probe.get("ready") and (probe.get("modelName") or not probe.get("hasModelName")):
                return probe
            if time.monotonic() > deadline:
                raise StepError(name, "the prompt box did not appear", "timeout")
            await asyncio.sleep(0.2)

    async def open(self) -> None:
        """Open a new chat: logged out → StepError(kind="logged_out"); region → kind "site"."""
        self.tap.models_changed.clear()
        try:
            await self._goto_new_chat("open page")
            await self._wait_ready("wait ready")
        except StepError as exc:
            if exc.kind in ("site", "timeout") and "region" not in exc.message:
                await self.snapshot(exc.step)
            raise
        self.account = await self._js("read account", page_js.ACCOUNT, list(self.t.account_email))
        await self._read_models()
        if not self.defaults:
            self.defaults = await self._js("read parameters", page_js.READ_PARAMS, self._param_sels())

    async def _read_models(self) -> None:
        try:
            await asyncio.wait_for(self.tap.models_changed.wait(), self.s.models_wait_s)
        except asyncio.TimeoutError:
            log.warning("the page did not load its model list; any model will be tried")
            return
        entries = parse_models(self.tap.models_body or "")
        self.models = tuple(mid for mid, _ in entries)
        self.model_names = dict(entries)

    def _shows(self, shown: str, want: str) -> bool:
        shown = shown.strip().removeprefix("models/")
        return bool(shown) and shown in (want, self.model_names.get(want, want))

    async def select_model(self, model: str) -> None:
        want = model.strip().removeprefix("models/")
        if self.models and want not in self.models:
            raise StepError("select model", f"model {want!r} is not offered to this account "
                                            f"(has: {', '.join(self.models)})", "bad_request")
        probe = await self._probe("select model")
        if self._shows(probe.get("modelName", ""), want):
            return
        # The page picks its model from this preference on load (AISTUDIO.md).
        await self._js("select model", page_js.SET_MODEL_PREF,
                       [self.t.model_pref_key, self.t.model_pref_field, "models/" + want])
        await self._goto_new_chat("select model")
        probe = await self._wait_ready("select model")
        if not self._shows(probe.get("modelName", ""), want):
            raise StepError("select model", f"the page shows {probe.get('modelName')!r} after "
                                            f"selecting {want!r}")

    def _param_sels(self) -> dict:
        return {"temperature": self.t.temperature, "top_p": self.t.top_p,
                "max_tokens": self.t.max_tokens, "thinking": self.t.thinking_toggle}

    async def set_parameters(self, spec: JobSpec) -> None:
        """Set what the request asks for and restore the page defaults for the rest; controls
        that this page version lacks are skipped."""
        want = {
            "temperature": spec.temperature if spec.temperature is not None
            else self.defaults.get("temperature"),
            "top_p": spec.top_p if spec.top_p is not None else self.defaults.get("top_p"),
            "max_tokens": spec.max_tokens if spec.max_tokens is not None else "max",
            "thinking": (spec.reasoning_effort not in ("none", "minimal"))
            if spec.reasoning_effort is not None else self.defaults.get("thinking"),
        }
        missing = await self._js("set parameters", page_js.SET_PARAMS,
                                 {"sels": self._param_sels(), "values": want})
        asked = {k for k, v in (("temperature", spec.temperature), ("top_p", spec.top_p),
                                ("max_tokens", spec.max_tokens),
                                ("thinking", spec.reasoning_effort)) if v is not None}
        if asked & set(missing):
            log.warning("page has no control for %s; left as is", ", ".join(sorted(asked & set(missing))))
        await self._set_stops(spec.stop)

    async def _set_stops(self, stops: tuple[str, ...]) -> None:
        await self._js("set stop sequences", page_js.CLEAR_CHIPS, self.t.stop_chip_remove)
        if not stops:
            return
        async with self.step("set stop sequences"):
            box = self.page.locator(self.t.stop_input)
            if await box.count() == 0:
                log.warning("page has no stop-sequence input; stop sequences ignored")
                return
            for stop in stops:
                await box.first.fill(stop)
                await box.first.press("Enter")

    # ------------------------------------------------------------------ one job

    async def run(self, spec: JobSpec, emit: Emit, on_submit: Callable[[], None]) -> tuple[str, Usage | None]:
        """Answer one job, streaming through `emit`. `on_submit` runs right before the click that
        sends the prompt (the point of no return). Cancellation clicks Stop, then re-raises."""
        prompt = render_prompt(spec.messages)
        try:
            await self.select_model(spec.model)
            await self.set_parameters(spec)
            self.tap.discard_pending()
            # Notices already on screen belong to an earlier job, not to this one.
            self._old_notices = set((await self._probe("fill prompt")).get("notices", []))
            await self.submit(prompt, on_submit)
            stream = await self._await_request()
            try:
                return await read_answer(stream, emit, self._limits())
            except StepError as exc:
                if exc.kind == "timeout":
                    await self.stop_generating()
                elif exc.kind == "site":
                    await self._notices("read answer")  # a toast may say more than a cut stream
                raise
        except asyncio.CancelledError:
            await self.stop_generating()
            raise
        except StepError as exc:
            if exc.kind in ("site", "timeout"):
                await self.snapshot(exc.step)
            raise

    def _limits(self) -> AnswerLimits:
        return AnswerLimits(self.s.first_chunk_timeout_s, self.s.idle_timeout_s,
                            self.s.answer_timeout_s, self.t.quota_phrases, self.s.cooldowns)

    async def submit(self, prompt: str, on_submit: Callable[[], None]) -> None:
        ok = await self._js("fill prompt", page_js.FILL_PROMPT,
                            [list(self.t.prompt_textarea), prompt])
        if not ok:
            raise StepError("fill prompt", "no prompt box found, or it did not take the text")
        on_submit()
        deadline = time.monotonic() + min(10.0, self.s.step_timeout_s)
        while True:  # the page enables Run once it has processed the input event
            idx = await self._js("click run", page_js.RUN_STATE, list(self.t.run_button))
            if idx >= 0:
                async with self.step("click run"):
                    # RUN_STATE has just seen it enabled: skip the actionability waits (two
                    # animation frames for "stable") but keep a real, trusted mouse click.
                    await self.page.locator(self.t.run_button[idx]).first.click(timeout=5000,
                                                                                  force=True)
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        log.warning("no enabled Run button; sending with Ctrl+Enter")
        async with self.step("click run"):
            sel = ", ".join(self.t.prompt_textarea)
            await self.page.locator(sel).first.press("Control+Enter")

    async def _notices(self, name: str) -> None:
        probe = await self._probe(name)
        fresh = [n for n in probe.get("notices", []) if n not in self._old_notices]
        problem = notice_problem(fresh, self.t.quota_phrases, self.t.rate_phrases, self.s.cooldowns)
        if problem:
            raise StepError(name, problem[1], problem[0], problem[2])

    async def _await_request(self) -> TapStream:
        """The page's GenerateContent request for our prompt, or what the page showed instead."""
        deadline = time.monotonic() + self.s.send_timeout_s
        while True:
            try:
                return await self.tap.next_generate(0.25)
            except asyncio.TimeoutError:
                pass
            except TapClosed:
                raise BrowserGone("send prompt: the page closed") from None
            await self._check_location("send prompt")
            await self._notices("send prompt")
            if time.monotonic() > deadline:
                raise StepError("send prompt", "the page sent no GenerateContent request")

    async def stop_generating(self) -> None:
        """Click Stop if the page is generating; best effort (used on cancel and timeouts)."""
        with contextlib.suppress(StepError, BrowserGone):
            await self._js("stop generating", page_js.CLICK, self.t.stop_button)

    async def reset(self) -> None:
        """Back to an empty new chat: New chat (+ confirm discarding), else navigate there."""
        self.tap.discard_pending()
        try:
            await self.stop_generating()
            if await self._js("reset", page_js.CLICK, self.t.new_chat_button):
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline:
                    # Short polls: this sits between a finished answer and the next job.
                    if await self._js("reset", page_js.CONFIRM_DISCARD,
                                      [self.t.dialog, self.t.discard_label]):
                        await asyncio.sleep(0.01)
                        continue
                    probe = await self._probe("reset")
                    if probe.get("ready") and not probe.get("turns") and not probe.get("promptLength"):
                        return
                    await asyncio.sleep(0.02)
            log.info("New chat did not give an empty chat; reloading the new-chat page")
        except StepError as exc:
            log.info("reset by New chat failed (%s); reloading the new-chat page", exc)
        await self._goto_new_chat("reset")
        await self._wait_ready("reset")

