"""reasoning_effort → the page's thinking controls (bpool/studio/thinking.py, docs/thinking.md)."""

from __future__ import annotations

import pytest

from bpool.protocol import ChatMessage, JobSpec
from bpool.studio.panel import RunSettings, page_thinking
from bpool.studio.thinking import PageThinking, ThinkingPlan, ThinkingUnsupported, plan_thinking

LEVELS = PageThinking(has_level=True, levels=("Minimal", "Low", "Medium", "High"))
LEVELS_TWO = PageThinking(has_level=True, levels=("Low", "High"))
FLASH = PageThinking(has_switch=True, switch_enabled=True, has_budget=True)
PRO = PageThinking(has_switch=True, switch_enabled=False, has_budget=True)


@pytest.mark.parametrize("effort, page, plan", [
    (None, LEVELS, ThinkingPlan()),
    (None, FLASH, ThinkingPlan()),
    ("minimal", LEVELS, ThinkingPlan(level="Minimal")),
    ("low", LEVELS, ThinkingPlan(level="Low")),
    ("MEDIUM", LEVELS, ThinkingPlan(level="Medium")),
    ("high", LEVELS_TWO, ThinkingPlan(level="High")),
    ("high", PageThinking(has_level=True), ThinkingPlan(level="High")),  # options not read yet
    ("none", FLASH, ThinkingPlan(thinking=False)),
    ("minimal", FLASH, ThinkingPlan(thinking=True, budget="min")),
    ("low", FLASH, ThinkingPlan(thinking=True, budget=1024)),
    ("medium", FLASH, ThinkingPlan(thinking=True, budget=8192)),
    ("high", FLASH, ThinkingPlan(thinking=True, budget=24576)),
    ("high", PRO, ThinkingPlan(budget=24576)),  # always thinking: the switch is left alone
    ("low", PageThinking(has_level=True, has_switch=True), ThinkingPlan(thinking=True, level="Low")),
])
def test_mapping(effort, page, plan):
    assert plan_thinking(effort, page) == plan


@pytest.mark.parametrize("effort, page, says", [
    ("none", PRO, "cannot turn thinking off"),
    ("none", LEVELS, "cannot turn thinking off"),
    ("minimal", LEVELS_TWO, "offered: Low, High"),
    ("extreme", FLASH, "not one of"),
    ("low", PageThinking(), "no thinking controls"),
])
def test_what_a_model_cannot_do_is_the_clients_error(effort, page, says):
    with pytest.raises(ThinkingUnsupported, match=says):
        plan_thinking(effort, page)


def test_page_state_to_controls():
    assert page_thinking({"level": "High", "thinking": None, "budget": None, "manual": None}) == \
        PageThinking(has_level=True)
    state = {"level": None, "thinking": {"on": True, "enabled": False}, "budget": None,
             "manual": {"on": False, "enabled": True}}
    assert page_thinking(state) == PageThinking(has_switch=True, switch_enabled=False,
                                                has_budget=True)


def spec(**kw) -> JobSpec:
    return JobSpec(model="m", messages=(ChatMessage("user", "x"),), **kw)


def test_the_panel_is_opened_only_when_a_job_asks_for_something_new():
    rs = RunSettings.__new__(RunSettings)  # the decision needs no page
    rs.defaults, rs.dirty = {}, False
    assert not rs.needs_panel(spec(), "m")
    assert rs.needs_panel(spec(temperature=1.0), "m")  # defaults not read yet
    rs.defaults["m"] = {"temperature": 1, "top_p": 0.95, "max_tokens": 65536, "level": None,
                        "thinking": {"on": True, "enabled": True}, "budget": 1024,
                        "budget_min": 0, "manual": {"on": True, "enabled": True}}
    assert not rs.needs_panel(spec(temperature=1.0, top_p=0.95, max_tokens=65536), "m")
    assert not rs.needs_panel(spec(reasoning_effort="low"), "m")  # 1024 is what it has
    assert rs.needs_panel(spec(reasoning_effort="high"), "m")
    assert rs.needs_panel(spec(temperature=0.5), "m")
    assert rs.needs_panel(spec(stop=("x",)), "m")
    assert rs.needs_panel(spec(temperature=1.0), "other")
    rs.dirty = True
    assert rs.needs_panel(spec(temperature=1.0), "m")
    rs.dirty = False
    rs.defaults["pro"] = {"level": None, "thinking": {"on": True, "enabled": False},
                          "budget": None, "manual": None}
    from bpool.studio.outcomes import StepError

    with pytest.raises(StepError) as ei:  # known without opening anything
        rs.needs_panel(spec(reasoning_effort="none"), "pro")
    assert ei.value.kind == "bad_request"
