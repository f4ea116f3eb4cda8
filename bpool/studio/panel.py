"""The run-settings panel: model parameters, thinking, and the Google Search tool.

The panel's content is removed from the DOM while it is collapsed, and while it is open it can
cover the Run button. So it is opened only when something must be read or changed, and closed
again before Run. Every request pays for every page step, so the panel is not opened when nothing
differs from what is set: New chat puts the page back on the model's defaults, which are read
once per model (`defaults`) and compared with what a job asks for.

What a job sets is read back: a value the page clamps is logged with both numbers. Google Search
grounding is forced off (no request field asks for it yet: `search` below is the hook).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bpool.protocol import JobSpec
from bpool.studio import page_js
from bpool.studio.outcomes import StepError
from bpool.studio.steps import Steps
from bpool.studio.thinking import PageThinking, ThinkingPlan, ThinkingUnsupported, plan_thinking

log = logging.getLogger("bpool.driver")
STEP = "run settings"


def page_thinking(state: dict, levels: tuple[str, ...] = ()) -> PageThinking:
    switch = state.get("thinking")
    return PageThinking(
        has_level=state.get("level") is not None, levels=levels,
        has_switch=switch is not None, switch_enabled=bool(switch["enabled"]) if switch else True,
        has_budget=state.get("budget") is not None or state.get("manual") is not None)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


class RunSettings:
    def __init__(self, steps: Steps):
        self.x = steps
        t = steps.t
        self.args = {
            "panel": [*t.model_name, *t.temperature, *t.max_tokens, *t.thinking_switch,
                      *t.thinking_level],
            "modelName": list(t.model_name), "temperature": list(t.temperature),
            "topP": list(t.top_p), "maxTokens": list(t.max_tokens),
            "thinking": list(t.thinking_switch), "manual": list(t.budget_manual),
            "budget": list(t.budget_input), "level": list(t.thinking_level),
            "selectValue": t.select_value, "search": list(t.search_toggle),
            "toolsExpand": list(t.tools_expand), "chipRemove": t.stop_chip_remove,
            "option": t.select_option,
        }
        self.defaults: dict[str, dict] = {}  # model id -> the panel as a new chat shows it
        self.dirty = False  # a job changed something New chat has to put back
        self.search = False  # Google Search grounding wanted (no request asks for it yet)
        # Models whose grounding New chat leaves as it was (then it is not checked again).
        self._search_kept: set[str] = set()

    # ------------------------------------------------------------------ open / read / close

    async def read(self, step: str = STEP) -> dict:
        return await self.x.js(step, page_js.PANEL_READ, self.args)

    async def open(self, step: str = STEP) -> dict:
        got = await self.x.js(step, page_js.PANEL_OPEN,
                              {"s": self.args, "toggle": list(self.x.t.panel_toggle)})
        if got["state"]["open"]:
            return got["state"]
        if got["clicked"] < 0:
            raise StepError(step, "no run-settings panel and no button to open it")

        async def opened() -> dict | None:
            s = await self.read(step)
            return s if s["open"] else None
        return await self.x.until(step, "the run-settings panel did not open", opened,
                                  self.x.s.control_timeout_s)

    async def close(self, step: str = STEP) -> None:
        """Close the panel if it has a close button showing (an always-visible panel has none)."""
        got = await self.x.js(step, page_js.CLICK_GONE, list(self.x.t.panel_close))
        if not got["clicked"] or not got["showing"]:
            return

        async def closed() -> bool:
            return not await self.x.js(step, page_js.ANY_VISIBLE, list(self.x.t.panel_close))
        await self.x.until(step, "the run-settings panel did not close", closed,
                           self.x.s.control_timeout_s)

    # ------------------------------------------------------------------ deciding

    def needs_panel(self, spec: JobSpec, model: str | None) -> bool:
        """Does this job ask for anything the page does not already have? Raises StepError
        (bad_request) for a thinking setting the model cannot give, when that is known."""
        asked = (spec.temperature, spec.top_p, spec.max_tokens, spec.reasoning_effort)
        if spec.stop:
            return True
        if all(v is None for v in asked):
            return False
        d = self.defaults.get(model or "")
        if not d or self.dirty:  # not read yet, or could not be read
            return True
        for name, want in (("temperature", spec.temperature), ("top_p", spec.top_p),
                           ("max_tokens", spec.max_tokens)):
            if want is not None and not _same(d.get(name), want):
                return True
        plan = self._plan(spec, d)
        return not self._holds(plan, d)

    def _plan(self, spec: JobSpec, state: dict, levels: tuple[str, ...] = ()) -> ThinkingPlan:
        try:
            return plan_thinking(spec.reasoning_effort, page_thinking(state, levels))
        except ThinkingUnsupported as exc:
            raise StepError(STEP, str(exc), "bad_request") from None

    @staticmethod
    def _holds(plan: ThinkingPlan, state: dict) -> bool:
        sw, manual = state.get("thinking"), state.get("manual")
        if plan.thinking is not None and (sw is None or sw["on"] != plan.thinking):
            return False
        if plan.level is not None and (state.get("level") or "").lower() != plan.level.lower():
            return False
        if plan.budget is not None:
            want = state.get("budget_min") if plan.budget == "min" else plan.budget
            if manual is not None and not manual["on"]:
                return False
            if not _same(state.get("budget"), want):
                return False
        return True

    # ------------------------------------------------------------------ doing

    async def settle(self, model: str | None, step: str = STEP, loaded: bool = True) -> dict | None:
        """After a new chat (`loaded`: a page load, else New chat): grounding off and anything a
        job changed put back. Opens the panel only for a model seen for the first time, one
        whose grounding is on by default (unless New chat is known to keep it off), or when a
        job changed settings. Returns the panel state when it read it."""
        known = self.defaults.get(model or "")
        search_on = bool(known and known.get("search") and known["search"]["on"])
        kept = not loaded and (model or "") in self._search_kept
        if known is not None and not self.dirty and (search_on == self.search or kept):
            return None
        try:
            return await self._settle(step, model, None if loaded else known)
        except StepError as exc:  # a job that needs the panel fails on its own, naming it
            log.warning("could not check the run settings after a new chat: %s", exc)
            self.defaults.setdefault(model or "", {})  # not again for this model, every reset
            return None

    async def _settle(self, step: str, model: str | None, known: dict | None) -> dict:
        state = await self.open(step)
        if model and model not in self.defaults and not self.dirty:
            self.defaults[model] = state
        elif known is not None and state.get("search") and state["search"]["on"] == self.search:
            self._search_kept.add(model or "")  # set once, New chat did not undo it
        state = await self._force_search(step, state)
        if self.dirty and known is not None:
            await self._put_back(step, state, known)
        self.dirty = False
        await self.close(step)
        return state

    async def apply(self, spec: JobSpec, model: str | None, step: str = STEP) -> None:
        """Open the panel, set what the job asks for, read it back, close the panel."""
        state = await self.open(step)
        if model and model not in self.defaults and not self.dirty:
            self.defaults[model] = state
        plan = self._plan(spec, state)
        self.dirty = True
        switches: dict[str, bool] = {}
        if plan.thinking is not None:
            switches["thinking"] = plan.thinking
        if plan.budget is not None and state.get("manual") is not None:
            switches["manual"] = True
        if switches:
            await self._switches(step, switches, asked=spec.reasoning_effort is not None)
            if plan.budget is not None:
                await self.x.until(step, "the thinking budget input did not appear",
                                   self._budget_shown, self.x.s.control_timeout_s)
        inputs = {k: v for k, v in (("temperature", spec.temperature), ("topP", spec.top_p),
                                    ("maxTokens", spec.max_tokens), ("budget", plan.budget))
                  if v is not None}
        if inputs:
            missing = await self.x.js(step, page_js.SET_INPUTS, {"s": self.args, "want": inputs})
            if missing:
                log.warning("the page has no control for %s; left as is", ", ".join(missing))
            await self._set_again(step, inputs)
        if plan.level is not None:
            await self.set_level(plan.level, step)
        if spec.stop:
            await self._set_stops(spec.stop, step)
        state = await self._force_search(step, await self.read(step))
        self._report(spec, plan, state)
        await self.close(step)

    async def _set_again(self, step: str, inputs: dict) -> None:
        """A control the page re-rendered while it was being set loses the value: set what did
        not take once more. What still differs after that is the page clamping it (logged)."""
        names = {"temperature": "temperature", "topP": "top_p", "maxTokens": "max_tokens",
                 "budget": "budget"}
        state = await self.read(step)
        again = {js: v for js, v in inputs.items() if isinstance(v, (int, float))
                 and state.get(names[js]) is not None and not _same(state[names[js]], v)}
        if again:
            await asyncio.sleep(0.05)
            await self.x.js(step, page_js.SET_INPUTS, {"s": self.args, "want": again})

    async def _budget_shown(self) -> bool:
        return (await self.read()).get("budget") is not None

    async def _switches(self, step: str, want: dict[str, bool], asked: bool = True) -> None:
        missing = await self.x.js(step, page_js.SET_SWITCHES, {"s": self.args, "want": want})
        if missing and asked:
            log.warning("the page has no switch for %s; left as is", ", ".join(missing))

    async def set_level(self, label: str, step: str = STEP) -> None:
        """Pick `label` in the Thinking Level select (it opens as a listbox in an overlay)."""
        sel = ", ".join(self.x.t.thinking_level)
        async with self.x.step(step):
            await self.x.page.locator(sel).first.click(timeout=self.x.s.control_timeout_s * 1000)

        async def options() -> list[str] | None:
            return await self.x.js(step, page_js.SELECT_OPTION, {"s": self.args, "pick": ""}) or None
        offered = await self.x.until(step, "the Thinking Level options did not show", options,
                                     self.x.s.control_timeout_s)
        picked = await self.x.js(step, page_js.SELECT_OPTION, {"s": self.args, "pick": label})
        if not picked:
            async with self.x.step(step):
                await self.x.page.keyboard.press("Escape")
            raise StepError(step, f"thinking level {label!r} is not offered for this model "
                                  f"(offered: {', '.join(offered)})", "bad_request")

        async def shown() -> bool:
            return ((await self.read(step)).get("level") or "").lower() == label.lower()
        await self.x.until(step, f"the Thinking Level select did not take {label!r}", shown,
                           self.x.s.control_timeout_s)

    async def _set_stops(self, stops: tuple[str, ...], step: str) -> None:
        await self.x.js(step, page_js.CLEAR_CHIPS, self.x.t.stop_chip_remove)
        stop_input = list(self.x.t.stop_input)
        if not await self.x.js(step, page_js.ANY_VISIBLE, stop_input):
            # Typed like a user (Enter makes the chip), so it must be showing.
            if await self.x.js(step, page_js.EXPAND, list(self.x.t.advanced_expand)):
                await self.x.until(step, "the stop-sequence input did not show",
                                   lambda: self.x.js(step, page_js.ANY_VISIBLE, stop_input),
                                   self.x.s.control_timeout_s)
        async with self.x.step(step):
            box = self.x.page.locator(", ".join(self.x.t.stop_input))
            if await box.count() == 0:
                log.warning("the page has no stop-sequence input; stop sequences ignored")
                return
            for stop in stops:
                await box.first.fill(stop)
                await box.first.press("Enter")

    async def _force_search(self, step: str, state: dict) -> dict:
        """Google Search grounding as wanted (off unless a request asks for it)."""
        if state.get("search") is None and state.get("tools"):
            await self.x.js(step, page_js.CLICK_FIRST, list(self.x.t.tools_expand))
            state = await self.read(step)
        search = state.get("search")
        if search is None or search["on"] == self.search:
            return state
        await self._switches(step, {"search": self.search})
        state = await self.read(step)
        if state["search"] and state["search"]["on"] != self.search:
            log.warning("Google Search grounding stayed %s", "on" if state["search"]["on"] else "off")
        else:
            log.info("Google Search grounding turned %s", "on" if self.search else "off")
        return state

    async def _put_back(self, step: str, state: dict, d: dict) -> None:
        """Restore the defaults `d` where the page still shows a job's settings."""
        await self.x.js(step, page_js.CLEAR_CHIPS, self.x.t.stop_chip_remove)
        switches = {k: d[k]["on"] for k in ("thinking", "manual")
                    if d.get(k) and state.get(k) and state[k]["on"] != d[k]["on"]}
        if switches:
            await self._switches(step, switches)
        inputs = {js: d[k] for k, js in (("temperature", "temperature"), ("top_p", "topP"),
                                         ("max_tokens", "maxTokens"), ("budget", "budget"))
                  if d.get(k) is not None and not _same(state.get(k), d[k])}
        if inputs:
            await self.x.js(step, page_js.SET_INPUTS, {"s": self.args, "want": inputs})
        if d.get("level") and (state.get("level") or "").lower() != d["level"].lower():
            await self.set_level(d["level"], step)
        if switches or inputs:
            log.info("New chat kept a job's settings (%s); put the defaults back",
                     ", ".join([*switches, *inputs]))

    def _report(self, spec: JobSpec, plan: ThinkingPlan, state: dict) -> None:
        """Log every value the page did not take as asked (it clamps to the model's range)."""
        for name, asked in (("temperature", spec.temperature), ("top_p", spec.top_p),
                            ("max_tokens", spec.max_tokens),
                            ("budget", plan.budget if isinstance(plan.budget, int) else None)):
            got = state.get(name)
            if asked is not None and got is not None and not _same(got, asked):
                log.warning("%s: asked %s, the page took %s", name, asked, got)
        if plan.thinking is not None and state.get("thinking") and \
                state["thinking"]["on"] != plan.thinking:
            log.warning("thinking: asked %s, the page shows %s", "on" if plan.thinking else "off",
                        "on" if state["thinking"]["on"] else "off")
