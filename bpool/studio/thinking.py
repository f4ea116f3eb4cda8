"""OpenAI `reasoning_effort` → the page's thinking controls (sans-IO).

Models show one of two controls in the run-settings panel (docs/aistudio-page.md):

- newer models: a "Thinking Level" select (options such as Minimal / Low / Medium / High);
- older models: a "Toggle thinking mode" switch (absent or disabled where thinking cannot be
  turned off) and a token budget, behind a manual/auto budget switch on some versions.

THE mapping (docs/thinking.md says the same for operators):

    effort    level select                 budget models
    -------   --------------------------   ------------------------------------------------
    (absent)  the model's default          the model's default
    none      thinking switch off where    thinking switch off; bad_request where the model
              the page has one, else       cannot turn thinking off
              bad_request
    minimal   "Minimal"                    switch on, manual budget, the page's minimum
    low       "Low"                        switch on, manual budget, 1024 tokens
    medium    "Medium"                     switch on, manual budget, 8192 tokens
    high      "High"                       switch on, manual budget, 24576 tokens

The budgets are the ones Google's own OpenAI-compatible endpoint uses for these efforts; the page
clamps a budget to what the model allows, and the driver logs both numbers when it does. A level
the select does not offer is the client's error (bad_request). A level the select offers but the
model then refuses comes back from the site as an error frame (code 3, INVALID_ARGUMENT), which
the answer reader turns into bad_request as well.
"""

from __future__ import annotations

from dataclasses import dataclass

EFFORTS = ("none", "minimal", "low", "medium", "high")
LEVEL_LABELS = {"minimal": "Minimal", "low": "Low", "medium": "Medium", "high": "High"}
BUDGETS: dict[str, int | str] = {"minimal": "min", "low": 1024, "medium": 8192, "high": 24576}


class ThinkingUnsupported(ValueError):
    """The request asks for a thinking setting this model's page cannot give (bad_request)."""


@dataclass(frozen=True)
class PageThinking:
    """The thinking controls the panel shows for the current model."""

    has_level: bool = False  # a Thinking Level select
    levels: tuple[str, ...] = ()  # its option labels, when known
    has_switch: bool = False  # a "Toggle thinking mode" switch
    switch_enabled: bool = True  # False: thinking is always on for this model
    has_budget: bool = False  # a budget input (perhaps behind the manual switch)


@dataclass(frozen=True)
class ThinkingPlan:
    """What to set: None leaves a control as it is."""

    thinking: bool | None = None  # the switch
    level: str | None = None  # a Thinking Level option label
    budget: int | str | None = None  # tokens, or "min" for the page's minimum

    @property
    def empty(self) -> bool:
        return self.thinking is None and self.level is None and self.budget is None


def plan_thinking(effort: str | None, page: PageThinking) -> ThinkingPlan:
    """The controls to set for `effort` on a page showing `page`; raises ThinkingUnsupported."""
    if effort is None:
        return ThinkingPlan()
    effort = effort.strip().lower()
    if effort not in EFFORTS:
        raise ThinkingUnsupported(f"reasoning_effort {effort!r} is not one of {', '.join(EFFORTS)}")
    if effort == "none":
        if page.has_switch and page.switch_enabled:
            return ThinkingPlan(thinking=False)
        raise ThinkingUnsupported("this model cannot turn thinking off (reasoning_effort 'none')")
    if page.has_level:
        label = LEVEL_LABELS[effort]
        if page.levels and not any(o.strip().lower() == label.lower() for o in page.levels):
            raise ThinkingUnsupported(f"thinking level {label!r} is not offered for this model "
                                      f"(offered: {', '.join(page.levels)})")
        # A level model may also have the switch (thinking off by default): turn it on.
        return ThinkingPlan(thinking=True if page.has_switch and page.switch_enabled else None,
                            level=label)
    if page.has_budget or page.has_switch:
        return ThinkingPlan(thinking=True if page.has_switch and page.switch_enabled else None,
                            budget=BUDGETS[effort] if page.has_budget else None)
    raise ThinkingUnsupported(f"this model has no thinking controls (reasoning_effort {effort!r})")
