"""The AI Studio page driver: open the page, pick the model, set parameters, submit, stream, reset.

Every selector and URL pattern lives in table.STUDIO and nowhere else (tap.js and the page
scripts get theirs from it). Every step runs under a timeout and fails with a `StepError` naming
the step and whose fault it is; unexpected failures leave a screenshot and an HTML snapshot under
`<run dir>/snapshots/<profile>/` for the operator.

The answer is read from the page's own GenerateContent response as it streams (tap.js + Tap),
never from the DOM; the model that answered is the one the tapped request body names.

Per job the page pays for one probe, the prompt and the click; the run-settings panel is opened
only when the job asks for something the page does not have (panel.py). After the answer, New
chat puts the page back on the model's defaults, with temporary chat on again (temporary.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit

from bpool.protocol import Attachment, JobSpec, Usage
from bpool.studio import page_js
from bpool.studio.answer import AnswerLimits, Emit, read_answer
from bpool.worker.engines import main_world_prefix
from bpool.studio.outcomes import BrowserGone, StepError, location_problem, notice_problem
from bpool.studio.panel import RunSettings
from bpool.studio.popups import NEEDS_CONSENT, Popups, consent_error, prefs_init_script
from bpool.studio.prompt import render_prompt
from bpool.studio.reset import PageReset
from bpool.studio.steps import DriverSettings, Steps
from bpool.studio.stream_parser import parse_models
from bpool.studio.table import STUDIO, StudioTable
from bpool.studio.tap import Tap, TapClosed, TapStream, raw_binding, tap_scripts
from bpool.studio.temporary import TemporaryChat, temp_args
from bpool.studio.upload import Uploads, attachments_of

__all__ = ["STUDIO", "DriverSettings", "StudioDriver", "StudioTable"]

log = logging.getLogger("bpool.driver")
TAP_STEP = "install tap"


class StudioDriver:
    """One page of one browser context. Not safe for concurrent jobs (nor is the page)."""

    def __init__(self, context: Any, settings: DriverSettings, snapshot_dir: Path,
                 table: StudioTable = STUDIO, *, engine: str = "chromium", profile: str = ""):
        self.context = context
        self.s = settings
        self.t = table
        self.engine = engine
        self.profile = profile or snapshot_dir.name
        self.tap = Tap(table.generate_method, table.models_method)
        self.x = Steps(settings, table, self.tap, snapshot_dir)
        self.popups = Popups(self.x)
        self.panel = RunSettings(self.x)
        self.temporary = TemporaryChat(self.x)
        self.uploads = Uploads(self.x)
        self.account = ""
        self.models: tuple[str, ...] = ()
        self.model_names: dict[str, str] = {}
        self.model: str | None = None  # the model the page is on, as far as we know
        self._watcher: asyncio.Task | None = None
        self._cdp_session: Any = None  # the tap's raw binding's session (Chromium)
        self._old_notices: set[str] = set()
        self._probe_args = {
            "ready": list(table.ready), "prompt": list(table.prompt_textarea),
            "dialog": table.dialog, "turn": table.chat_turn, "toasts": table.toasts,
            "toastText": table.toast_text, "callout": table.quota_callout,
            "prefKey": table.pref_key, "prefField": table.pref_model_field,
            "panel": self.panel.args["panel"], "panelClose": list(table.panel_close),
            **self.popups.args, **temp_args(self.x),
        }
        self.resetter = PageReset(self.x, self._probe_args, self.panel, self.temporary)

    @property
    def page(self) -> Any:
        return self.x.page

    # ------------------------------------------------------------------ plumbing

    async def install(self) -> None:
        """Expose the tap binding and the init scripts; must run before the first navigation."""
        async with self.x.step(TAP_STEP):
            pages = self.context.pages
            self.x.page = pages[0] if pages else await self.context.new_page()
            for extra in pages[1:]:
                await extra.close()
            raw = self.engine == "chromium" and await self._cdp_binding()
            if not raw:
                await self.context.expose_binding(self.t.binding, self.tap.on_message)
            methods = (self.t.generate_method, self.t.models_method)
            for script in tap_scripts(self.t.binding, methods, main_world_prefix(self.engine),
                                      bodies=self.tap.keep_bodies, as_json=raw):
                await self.context.add_init_script(script=script)
            await self.context.add_init_script(script=prefs_init_script(self.x))
        self.context.on("close", lambda *_: self.tap.close())
        self.page.on("close", lambda *_: self.tap.close())
        self.page.on("crash", lambda *_: self.tap.close())

    async def _cdp_binding(self) -> bool:
        """Chromium: the tap posts to a raw CDP binding on the page's own session. Each message
        is then one event to the driver, where Playwright's binding answers every call with a
        reply evaluated back in the page: the tap costs about a third of the CPU it did
        (`bench page-cpu`, docs/benchmarks.md). The binding lives on through navigations; it
        needs Runtime enabled on that session. The page's console messages then also reach this
        session. False (use Playwright's binding) where no CDP session can be had."""
        try:
            self._cdp_session = await raw_binding(self.context, self.page, self.tap,
                                                  self.t.binding)
        except Exception as exc:  # noqa: BLE001 - any refusal means: the portable way
            log.info("no CDP binding for the tap (%s); using Playwright's", exc)
            return False
        return True

    def watch(self, gone: asyncio.Event) -> None:
        """Treat `gone` (the browser or its driver exited) like the page closing."""
        async def wait() -> None:
            await gone.wait()
            self.tap.close()
        self._watcher = asyncio.create_task(wait())

    async def snapshot(self, step: str) -> Path | None:
        return await self.x.snapshot(step)

    # ------------------------------------------------------------------ page state

    async def _probe(self, name: str) -> dict:
        return await self.x.js(name, page_js.PROBE, self._probe_args)

    async def _check_location(self, name: str) -> None:
        async with self.x.step(name):
            url, title = self.page.url, await self.page.title()
        host = (urlsplit(url).hostname or "").lower()
        if host in self.t.unavailable_hosts:
            raise StepError(name, f"this account cannot use AI Studio (redirected to {host})",
                            "logged_out")
        problem = location_problem(
            url, title, signin_hosts=self.t.signin_hosts,
            signin_path_markers=self.t.signin_path_markers, signin_title=self.t.signin_title,
            region_title=self.t.region_title)
        if problem:
            raise StepError(name, problem[1], problem[0])

    async def _goto(self, name: str, url: str) -> None:
        self.tap.hello.clear()
        async with self.x.step(name, self.s.navigation_timeout_s):
            await self.page.goto(url, wait_until="domcontentloaded")

    async def _wait_ready(self, name: str) -> dict:
        """Poll until the prompt box is visible; spot sign-in and the consent on the way."""
        deadline = time.monotonic() + self.s.navigation_timeout_s
        while True:
            await self._check_location(name)
            try:
                probe = await self._probe(name)
            except StepError:  # e.g. "execution context was destroyed" while navigating
                probe = {}
            if probe.get("consent"):
                raise consent_error(name, self.profile)
            if probe.get("ready"):
                return probe
            if time.monotonic() > deadline:
                raise StepError(name, "the prompt box did not appear", "timeout")
            await asyncio.sleep(0.1)

    async def _check_tap(self) -> None:
        """The new document's tap reported in, from the page's own world."""
        try:
            await asyncio.wait_for(self.tap.hello.wait(), self.s.tap_hello_s)
        except asyncio.TimeoutError:
            raise StepError(TAP_STEP, "the page tap did not start in the new page", "broken") from None
        if self.tap.hello_world != "page":
            raise StepError(TAP_STEP, f"the tap runs in an {self.tap.hello_world or 'unknown'} "
                                      "world and cannot see the page's requests (Camoufox needs "
                                      "main-world init scripts: daijro/camoufox#745)", "broken")

    async def _settle(self, name: str, probe: dict, loaded: bool = True) -> None:
        """A fresh chat (after a page load, or New chat) as every job expects it: no popups,
        temporary chat on, grounding off."""
        if probe.get("popups"):
            await self.popups.clear(name)
        if self.s.temporary_chat:
            await self.temporary.ensure_on(name, probe.get("temporary"))
        state = await self.panel.settle(self.model, name, loaded)
        if state is not None and self.model is None:
            self.model = self._model_id(state.get("model", ""))

    def _model_id(self, shown: str) -> str | None:
        """A model id from what the page shows ("models/<id>", an id or a display name)."""
        shown = (shown or "").strip().removeprefix("models/")
        if not shown:
            return None
        if shown in self.models or not self.models:
            return shown
        return next((mid for mid, name in self.model_names.items() if name == shown), None)

    async def open(self) -> None:
        """Open a new chat: logged out → StepError(kind="logged_out"); region → kind "site";
        terms not accepted → kind "needs_consent"."""
        self.tap.models_changed.clear()
        try:
            await self._goto("open page", self.s.new_chat_url)
            probe = await self._wait_ready("wait ready")
            await self._check_tap()
            self.account = await self.x.js("read account", page_js.ACCOUNT,
                                           list(self.t.account_email))
            await self._read_models()
            self.model = self._model_id(probe.get("prefModel", ""))
            await self._settle("open page", probe)
        except StepError as exc:
            if exc.kind in ("site", "timeout") and "region" not in exc.message:
                await self.snapshot(exc.step)
            raise

    async def _read_models(self) -> None:
        try:
            await asyncio.wait_for(self.tap.models_changed.wait(), self.s.models_wait_s)
        except asyncio.TimeoutError:
            log.warning("the page did not load its model list; any model will be tried")
            return
        entries = parse_models(self.tap.models_body or "")
        self.models = tuple(mid for mid, _ in entries)
        self.model_names = dict(entries)

    async def select_model(self, want: str) -> dict:
        """Open a new chat on `want` (preference + `?model=`, then a reload); the fresh probe.
        The request body confirms it later."""
        if self.models and want not in self.models:
            raise StepError("select model", f"model {want!r} is not offered to this account "
                                            f"(has: {', '.join(self.models)})", "bad_request")
        await self.x.js("select model", page_js.SET_MODEL_PREF,
                        [self.t.pref_key, self.t.pref_model_field, "models/" + want])
        url = f"{self.s.new_chat_url}?{self.t.model_query}={quote(want, safe='')}"
        await self._goto("select model", url)
        probe = await self._wait_ready("select model")
        await self._check_tap()
        log.info("switched the page to model %s (was %s)", want, self.model or "unknown")
        self.model = want
        await self._settle("select model", probe)
        return probe

    # ------------------------------------------------------------------ one job

    async def run(self, spec: JobSpec, emit: Emit, on_submit: Callable[[], None]) -> tuple[str, Usage | None]:
        """Answer one job, streaming through `emit`. `on_submit` runs right before the click that
        sends the prompt (the point of no return). Cancellation clicks Stop, then re-raises."""
        prompt = render_prompt(spec.messages)
        files = attachments_of(spec)
        want = spec.model.strip().removeprefix("models/")
        try:
            self.tap.discard_pending()
            probe = None
            if self.model == want and not self.panel.needs_panel(spec, self.model):
                probe = await self.submit(prompt, on_submit, check=True, files=files)
            if probe is None:
                probe = await self._prepare(spec, want)
                await self.submit(prompt, on_submit, files=files)
            # Notices already on screen belong to an earlier job, not to this one.
            self._old_notices = set(probe.get("notices", []))
            stream = await self._await_request(want)
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

    async def _prepare(self, spec: JobSpec, want: str) -> dict:
        """The page ready for this job's prompt: model, settings, panel closed, no popups."""
        probe = await self._probe("prepare")
        if probe.get("consent"):
            raise consent_error("prepare", self.profile)
        if self.model != want:
            probe = await self.select_model(want)
        elif probe.get("popups"):
            await self.popups.clear("prepare")
        if self.panel.needs_panel(spec, self.model):
            await self.panel.apply(spec, self.model)
        elif probe.get("panelOpen") and probe.get("panelClose"):
            await self.panel.close("prepare")  # it covers Run
        if self.s.temporary_chat and probe.get("temporary") is False:
            await self.temporary.ensure_on("prepare", False)
        return probe

    def _limits(self) -> AnswerLimits:
        return AnswerLimits(self.s.first_chunk_timeout_s, self.s.idle_timeout_s,
                            self.s.answer_timeout_s, self.t.quota_phrases, self.s.cooldowns)

    async def submit(self, prompt: str, on_submit: Callable[[], None],
                     check: bool = False, files: tuple[Attachment, ...] = ()) -> dict | None:
        """Fill the prompt, attach `files` and press Run (Ctrl+Enter when the page has no Run
        button at all). With `check`, the page is probed in the same round trip and nothing is
        done when it needs preparing first; returns that probe (None then)."""
        filled = await self.x.js("fill prompt", page_js.FILL_PROMPT, {
            "sels": list(self.t.prompt_textarea), "value": prompt,
            "wrapper": self.t.autosize_wrapper, "run": list(self.t.run_button),
            "check": self._probe_args if check else None, "temporary": self.s.temporary_chat,
            # Files come next and enable Run themselves; else Run is waited for in the page.
            "runWaitMs": 0 if files else 1000})
        if not filled["filled"]:
            return None
        if not filled["ok"]:
            raise StepError("fill prompt", "no prompt box found, or it did not take the text")
        run = filled["run"]
        if files:
            run = await self.uploads.attach(files, self.s.navigation_timeout_s)
        deadline = time.monotonic() + min(10.0, self.s.step_timeout_s)
        # Wait only while a Run button exists but is disabled (the page enables it once it has
        # processed the input event).
        while run["i"] < 0 and run["exists"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            run = await self.x.js("click run", page_js.RUN_STATE, list(self.t.run_button))
        on_submit()
        if run["i"] >= 0:
            async with self.x.step("click run"):
                # The page script has just seen it enabled and where it is: a real, trusted
                # mouse click right there, without Playwright's actionability round trips.
                if run.get("x") is not None:
                    await self.page.mouse.click(run["x"], run["y"])
                else:
                    button = self.page.locator(self.t.run_button[run["i"]]).nth(run["k"])
                    await button.click(timeout=5000, force=True)
            return filled["probe"] or {}
        if run["exists"]:
            log.warning("the Run button stayed disabled; sending with Ctrl+Enter")
        else:
            log.info("no Run button on the page; sending with Ctrl+Enter")
        async with self.x.step("click run"):
            await self.page.locator(", ".join(self.t.prompt_textarea)).first.press("Control+Enter")
        return filled["probe"] or {}

    async def _notices(self, name: str) -> None:
        probe = await self._probe(name)
        fresh = [n for n in probe.get("notices", []) if n not in self._old_notices]
        problem = notice_problem(fresh, self.t.quota_phrases, self.t.rate_phrases, self.s.cooldowns)
        if problem:
            raise StepError(name, problem[1], problem[0], problem[2])

    async def _await_request(self, want: str) -> TapStream:
        """The page's GenerateContent request for our prompt, on the model asked for, or what the
        page showed instead."""
        deadline = time.monotonic() + self.s.send_timeout_s
        while True:
            try:
                stream = await self.tap.next_generate(0.25)
                break
            except asyncio.TimeoutError:
                pass
            except TapClosed:
                raise BrowserGone("send prompt: the page closed") from None
            await self._check_location("send prompt")
            await self._notices("send prompt")
            if time.monotonic() > deadline:
                raise StepError("send prompt", "the page sent no GenerateContent request")
        sent = stream.model.strip().removeprefix("models/")
        if not sent:
            log.warning("could not read which model the page's request is for")
        elif sent != want:
            self.model = sent  # the next job selects again
            await self.stop_generating()
            raise StepError("send prompt", f"the page sent the prompt to model {sent!r}, "
                                           f"not to {want!r}")
        return stream

    async def stop_generating(self) -> None:
        """Click Stop if the page is generating; best effort (used on cancel and timeouts)."""
        with contextlib.suppress(StepError, BrowserGone):
            await self.x.js("stop generating", page_js.CLICK, self.t.stop_button)

    async def reset(self) -> None:
        """Back to an empty new chat: New chat (+ confirm discarding), else navigate there."""
        self.tap.discard_pending()
        try:
            await self._reset()
        except StepError as exc:
            if exc.kind != NEEDS_CONSENT:
                raise
            # The account is out of rotation; the next job fails at once, naming the consent.
            log.warning("page not reset: %s", exc)

    async def _reset(self) -> None:
        try:
            # Stop, New chat, the empty chat, temporary chat and Search: one page script.
            done = await self.resetter.run(self.model)
            if done is not None:
                probe, settled = done
                if probe.get("consent"):
                    raise consent_error("reset", self.profile)
                if not settled:
                    await self._settle("reset", probe, loaded=False)
                return
            log.info("no New chat button; reloading the new-chat page")
        except StepError as exc:
            if exc.kind == NEEDS_CONSENT or exc.step == TAP_STEP:
                raise
            log.info("reset by New chat failed (%s); reloading the new-chat page", exc)
        await self._goto("reset", self.s.new_chat_url)
        probe = await self._wait_ready("reset")
        await self._check_tap()
        await self._settle("reset", probe)
