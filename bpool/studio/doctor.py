"""`bpool doctor PROFILE`: one profile through every step of the page, with the real driver.

For people with a real account, when something does not work or Google has changed the page.
The profile is launched and driven against the configured site (BPOOL_STUDIO_URL,
`--studio-url`) by the same StudioDriver methods a worker uses, one named step at a time:

    launch → open → popups → run settings → model list → model switch → parameters →
    submit → tap → parse → reset

A table shows each step's time, result and a one-line detail. A failed step leaves the page's
screenshot and HTML (the driver's snapshot) and every later step is shown as skipped. Exit 0 when
every step passed, 1 on a failure, 78 for a bad profile file or a missing browser (as the worker).

`--capture DIR` also keeps what the page sent and received on ListModels and GenerateContent
(the tap sees both), with e-mail addresses, the profile's cookie values and page tokens taken out
by capture.py: one file per body (0600, in a 0700 directory) and index.json (step, URL path,
status), for handing back as fixtures when the page changes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from bpool import config
from bpool.protocol import ChatMessage, JobSpec
from bpool.studio.answer import read_answer
from bpool.studio.doctor_report import (FAIL, OK, PROG, SKIPPED, StepResult, exit_code,
                                        format_table, pick_parameters, same, save_capture)
from bpool.studio.driver import DriverSettings, StudioDriver
from bpool.studio.outcomes import BrowserGone, StepError
from bpool.studio.popups import consent_error
from bpool.studio.prompt import render_prompt
from bpool.studio.tap import TapStream
from bpool.worker.engines import (BrowserDirs, EngineChoice, EngineError, EngineSettings,
                                  LaunchedBrowser, choose_engine, launch)
from bpool.worker.profiles import Profile, ProfileError, load_profile

log = logging.getLogger("bpool.doctor")
STEPS = ("launch", "open", "popups", "run settings", "model list", "model switch", "parameters",
         "submit", "tap", "parse", "reset")
DEFAULT_PROMPT = "Say hello in one short sentence."
DEFAULT_TIMEOUT_S = 120.0
# What the run-settings step reports as found, in the order the panel shows them.
CONTROLS = (("temperature", "temperature"), ("top_p", "top-p"), ("max_tokens", "max tokens"),
            ("thinking", "thinking switch"), ("level", "thinking level"),
            ("budget", "thinking budget"), ("search", "Google Search"))


class Failed(Exception):
    """A check of the doctor's own: the driver raised nothing, but the page is not as it must be."""


def doctor_settings(base: DriverSettings, timeout_s: float) -> DriverSettings:
    """`--timeout-s` bounds every wait of a step: page loads, controls, the answer."""
    t = timeout_s
    return replace(base, step_timeout_s=t, navigation_timeout_s=t, first_chunk_timeout_s=t,
                   idle_timeout_s=t, answer_timeout_s=t,
                   send_timeout_s=min(base.send_timeout_s, t),
                   models_wait_s=min(base.models_wait_s, t),
                   popup_timeout_s=min(base.popup_timeout_s, t),
                   control_timeout_s=min(base.control_timeout_s, t),
                   tap_hello_s=min(base.tap_hello_s, t))


# ---------------------------------------------------------------------------- the run


class _StepLog(logging.Handler):
    """The driver's log lines of the current step (dismissed popups, warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@dataclass(frozen=True)
class DoctorOptions:
    model: str | None = None
    prompt: str = DEFAULT_PROMPT
    capture_dir: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


class Doctor:
    def __init__(self, profile: Profile, choice: EngineChoice, engine: EngineSettings,
                 settings: DriverSettings, home: Path, opts: DoctorOptions):
        self.profile, self.choice, self.engine, self.s = profile, choice, engine, settings
        self.home, self.opts = home, opts  # home: <run dir>/doctor (browsers, snapshots)
        self.results: list[StepResult] = []
        self.browser: LaunchedBrowser | None = None
        self.driver: StudioDriver | None = None
        self.log = _StepLog()
        self.dismissed: list[str] = []
        self.want = ""
        self.spec: JobSpec | None = None
        self.stream: TapStream | None = None
        self.captured: list[tuple[str, TapStream]] = []
        self.guard_s = 3 * opts.timeout_s + 30  # no step may hang the doctor

    @property
    def d(self) -> StudioDriver:
        assert self.driver is not None
        return self.driver

    async def run(self) -> list[StepResult]:
        """Every step in order; raises EngineError when the browser cannot be started at all."""
        driver_log = logging.getLogger("bpool.driver")
        level = driver_log.level
        driver_log.addHandler(self.log)
        driver_log.setLevel(logging.INFO)
        steps: dict[str, Callable[[], Awaitable[str]]] = {
            "launch": self._launch, "open": self._open, "popups": self._popups,
            "run settings": self._run_settings, "model list": self._model_list,
            "model switch": self._model_switch, "parameters": self._parameters,
            "submit": self._submit, "tap": self._tap, "parse": self._parse, "reset": self._reset}
        try:
            for name in STEPS:
                await self._step(name, steps[name])
        finally:
            driver_log.removeHandler(self.log)
            driver_log.setLevel(level)
            if self.opts.capture_dir is not None:
                secrets = [c.value for c in self.profile.state.cookies]
                if self.driver is not None and self.driver.account:
                    secrets.append(self.driver.account)
                save_capture(self.opts.capture_dir, self.captured, secrets)
            if self.browser is not None:
                await self.browser.close(self.engine.close_timeout_s)
        return self.results

    async def _step(self, name: str, fn: Callable[[], Awaitable[str]]) -> None:
        if any(r.result != OK for r in self.results):
            self.results.append(StepResult(name, SKIPPED))
            return
        self.log.records.clear()
        started = time.monotonic()
        result = FAIL
        try:
            async with asyncio.timeout(self.guard_s):
                detail = await fn()
            result = OK
        except EngineError:
            raise
        except StepError as exc:
            detail = f"{exc.kind}: {exc.message}" + (f" [{exc.step}]" if exc.step != name else "")
        except BrowserGone as exc:
            detail = f"the browser went away: {exc}"
        except Failed as exc:
            detail = str(exc)
        except TimeoutError:
            detail = f"timeout: the step took longer than {self.guard_s:.0f}s"
        except Exception as exc:  # a diagnosis names it rather than dying with a traceback
            log.debug("step %s", name, exc_info=True)
            detail = f"unexpected {type(exc).__name__}: " + (str(exc).strip().splitlines() or [""])[0]
        ms = round((time.monotonic() - started) * 1000)
        warnings = self.log.messages(logging.WARNING)
        if warnings:
            detail += "; warning: " + "; ".join(warnings)
        stem = None
        if result == FAIL and self.driver is not None:
            stem = await self.driver.snapshot(name)
        for stream in self.d.tap.kept[len(self.captured):] if self.driver else ():
            self.captured.append((name, stream))
        self.results.append(StepResult(name, result, ms, detail, str(stem) if stem else ""))

    # ------------------------------------------------------------------ the steps

    async def _launch(self) -> str:
        dirs = BrowserDirs.for_profile(self.home, self.profile.id)
        self.browser = await launch(self.choice, self.engine, dirs)
        async with asyncio.timeout(self.opts.timeout_s):
            await self.browser.context.set_storage_state(self.profile.storage_state())
        self.driver = StudioDriver(self.browser.context, self.s,
                                   self.home / "snapshots" / self.profile.id,
                                   engine=self.browser.engine, profile=self.profile.id)
        self.driver.tap.keep_bodies = self.opts.capture_dir is not None
        await self.driver.install()
        self.driver.watch(self.browser.gone)
        return (f"{self.choice.engine} ({self.choice.reason}); "
                f"{len(self.profile.state.cookies)} cookies loaded")

    async def _open(self) -> str:
        await self.d.open()
        self.dismissed = [m.removeprefix("dismissed a popup: ") for m in self.log.messages()
                          if m.startswith("dismissed a popup: ")]
        return (f"{self.s.new_chat_url}: account {self.d.account or '(not shown)'}, "
                f"page on model {self.d.model or '(unknown)'}")

    async def _popups(self) -> str:
        more = await self.d.popups.clear("popups")
        probe = await self.d._probe("popups")
        if probe.get("consent"):
            raise consent_error("popups", self.d.profile)
        if probe.get("popups"):
            raise Failed("a popup is still showing: it could not be dismissed")
        if not probe.get("ready"):
            raise Failed("the prompt box is not showing")
        seen = self.dismissed + more
        detail = "dismissed: " + ", ".join(seen) if seen else "none showing"
        if self.s.temporary_chat:
            on = await self.d.temporary.ensure_on("popups", probe.get("temporary"))
            detail += ("; temporary chat on" if on else
                       "; temporary chat NOT confirmed on (prompts may be saved to the account)")
        return detail

    async def _run_settings(self) -> str:
        state = await self.d.panel.open("run settings")
        await self.d.panel.close("run settings")
        probe = await self.d._probe("run settings")
        if probe.get("panelOpen") and probe.get("panelClose"):
            raise Failed("the run-settings panel did not close (it covers the Run button)")
        found = [label for key, label in CONTROLS if state.get(key) is not None]
        return (f"opened and closed; model shown: {state.get('model') or '(none)'}; "
                f"controls: {', '.join(found) or 'none'}")

    async def _model_list(self) -> str:
        models = self.d.models
        if not models:
            raise Failed(f"no model list: the page's ListModels response was not seen within "
                         f"{self.s.models_wait_s:.0f}s, or it held no models")
        more = ", ..." if len(models) > 6 else ""
        return f"{len(models)} models: {', '.join(models[:6])}{more}"

    async def _model_switch(self) -> str:
        self.want = (self.opts.model or self.d.models[0]).strip().removeprefix("models/")
        was = self.d.model
        await self.d.select_model(self.want)
        return f"the page is now on {self.want} (was on {was or 'an unknown model'})"

    async def _parameters(self) -> str:
        panel = self.d.panel
        want = pick_parameters(await panel.open("parameters"))
        if not want:
            await panel.close("parameters")
            raise Failed("the panel shows no temperature, top-p or max tokens control")
        self.spec = JobSpec(model=self.want, messages=(ChatMessage("user", self.opts.prompt),),
                            **want)  # type: ignore[arg-type]
        await panel.apply(self.spec, self.d.model, "parameters")
        back = await panel.open("parameters")
        await panel.close("parameters")
        wrong = [f"{k} set to {v} reads {back.get(k)}" for k, v in want.items()
                 if not same(back.get(k), v)]
        if wrong:
            raise Failed("the page did not keep what was set: " + "; ".join(wrong))
        return "set and read back: " + ", ".join(f"{k} {v}" for k, v in want.items())

    async def _submit(self) -> str:
        assert self.spec is not None
        self.d.tap.discard_pending()
        # Notices already showing are not this prompt's (as in StudioDriver.run).
        self.d._old_notices = set((await self.d._probe("submit")).get("notices", []))
        prompt = render_prompt(self.spec.messages)
        await self.d.submit(prompt, lambda: None)
        how = "Ctrl+Enter" if any("Ctrl+Enter" in m for m in self.log.messages()) else "Run"
        return f"prompt of {len(prompt)} characters filled, sent with {how}"

    async def _tap(self) -> str:
        self.stream = await self.d._await_request(self.want)
        if not self.stream.model:
            raise Failed("the page's GenerateContent request was seen, but its body does not "
                         "name the model ([0]): the answer's model cannot be confirmed")
        return (f"GenerateContent request seen ({urlsplit(self.stream.url).hostname}); "
                f"model {self.stream.model} confirmed")

    async def _parse(self) -> str:
        assert self.stream is not None
        text: list[str] = []
        thoughts: list[str] = []

        def emit(content: str = "", reasoning: str = "", tool_calls: tuple = ()) -> None:
            text.append(content)
            thoughts.append(reasoning)
        try:
            finish, usage = await read_answer(self.stream, emit, self.d._limits())
        except StepError as exc:
            if exc.kind == "timeout":
                await self.d.stop_generating()
            raise
        answer = "".join(text).strip()
        if not answer:
            raise Failed(f"the answer held no text (finish reason {finish})")
        extra = f", {usage.total_tokens} tokens" if usage else ""
        if "".join(thoughts):
            extra += f", {len(''.join(thoughts))} characters of thoughts"
        return f"finish {finish}{extra}: {answer!r}"

    async def _reset(self) -> str:
        await self.d.reset()
        probe = await self.d._probe("reset")
        if probe.get("consent"):
            raise consent_error("reset", self.d.profile)
        if not probe.get("ready") or probe.get("turns") or probe.get("promptLength"):
            raise Failed(f"not an empty new chat after the reset ({probe.get('turns', 0)} turns, "
                         f"{probe.get('promptLength', 0)} characters in the prompt box)")
        return "an empty new chat" + ("; temporary chat on" if probe.get("temporary") else "")


# ---------------------------------------------------------------------------- command line


def main(args: argparse.Namespace) -> int:
    """`bpool doctor` (its arguments are defined with the other commands, in bpool.ops.cli)."""
    timeout_s = DEFAULT_TIMEOUT_S if args.timeout_s is None else args.timeout_s
    try:
        if not timeout_s > 0:
            raise config.ConfigError(f"--timeout-s={args.timeout_s}: must be more than 0")
        config.setup_logging("doctor", args.profile.stem)
        if not os.environ.get("BPOOL_LOG_LEVEL"):  # the table is the output; only warnings else
            for handler in logging.getLogger().handlers:
                handler.setLevel(logging.WARNING)
        profile = load_profile(args.profile)
        config.add_secret(*(c.value for c in profile.state.cookies))
        engine = EngineSettings.from_env({"browser": args.browser,
                                          "headless": False if args.headed else None})
        base = DriverSettings.from_env({"base_url": args.studio_url})
        choice = choose_engine(engine)
    except (ProfileError, config.ConfigError, EngineError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    run_dir = (args.run_dir or config.run_dir()).resolve()
    home = config.ensure_private_dir(config.ensure_private_dir(run_dir) / "doctor")
    opts = DoctorOptions(model=args.model, prompt=args.prompt or DEFAULT_PROMPT,
                         capture_dir=args.capture, timeout_s=timeout_s)
    settings = doctor_settings(base, timeout_s)
    print(f"{PROG}: profile {profile.id} at {settings.new_chat_url} ({choice.engine})", flush=True)
    try:
        results = asyncio.run(Doctor(profile, choice, engine, settings, home, opts).run())
    except EngineError as exc:  # e.g. another doctor runs this profile right now
        print(f"{PROG}: profile {profile.id}: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    print(format_table(results), flush=True)
    if args.capture is not None:
        print(f"{PROG}: page traffic (private values removed) saved in {args.capture}")
    return exit_code(results)
