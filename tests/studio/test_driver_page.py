"""The driver in real Chromium against the realistic simulator, one page behaviour at a time, each
in the real page's setting (the sim's default) and in the older one it replaced (a sim knob):
the tap on XHR or fetch and on a nested or flat body, the collapsible or always-visible run
settings, the current or legacy Run button, parameters read back, thinking levels and budgets.
"""

from __future__ import annotations

import logging

import pytest

from bpool.studio.outcomes import StepError
from test_browser_worker import (  # noqa: F401  (fixtures)
    DEFAULT_KNOBS, Recorder, open_page, sim, sim_server, spec)

pytestmark = pytest.mark.chromium

ANSWER = "Hello from alice@sim.test. You said: "


async def opened(open_page, **settings):
    page = await open_page("alice", **settings)
    await page.driver.open()
    return page.driver


def count_calls(monkeypatch, obj, name: str) -> list:
    calls: list = []
    original = getattr(obj, name)

    async def spy(*a, **k):
        calls.append(a)
        return await original(*a, **k)
    monkeypatch.setattr(obj, name, spy)
    return calls


# ---------------------------------------------------------------------------- the tap


@pytest.mark.parametrize("knobs", [{}, {"transport": "fetch"}, {"nesting": "flat"},
                                   {"per_user_quota": False, "count_tokens": False}])
async def test_only_the_answer_is_read_whatever_else_the_page_sends(sim, open_page, knobs):
    sim.admin("config", knobs)
    d = await opened(open_page)
    rec = Recorder()
    finish, usage = await d.run(spec("tapped"), rec.emit, lambda: None)
    assert rec.content == ANSWER + "tapped" and finish == "stop" and usage is not None
    stats = sim.admin("stats")
    side = stats["rpcs"].get("StreamGenerateContentPerUserQuota", 0)
    assert (side > 0) == knobs.get("per_user_quota", True)  # it was there, and not taken
    [req] = stats["requests"]
    assert req["outcome"] == "ok" and req["model"] == "models/gemini-2.5-flash"


async def test_the_model_is_confirmed_from_the_request(sim, open_page):
    d = await opened(open_page)
    await d.run(spec("one"), Recorder().emit, lambda: None)
    await d.reset()
    # The page moves to another model behind the driver's back (as another tab would do).
    await d.page.evaluate("""() => {
        const p = JSON.parse(localStorage.getItem('aiStudioUserPreference') || '{}');
        p.promptModel = 'models/gemini-2.5-pro';
        localStorage.setItem('aiStudioUserPreference', JSON.stringify(p));
    }""")
    await d.page.goto(d.s.new_chat_url)
    await d._wait_ready("test")
    assert d.model == "gemini-2.5-flash"
    with pytest.raises(StepError) as ei:
        await d.run(spec("two"), Recorder().emit, lambda: None)
    err = ei.value
    assert err.step == "send prompt" and "'gemini-2.5-pro'" in err.message \
        and "'gemini-2.5-flash'" in err.message
    await d.reset()
    rec = Recorder()
    await d.run(spec("three"), rec.emit, lambda: None)  # selects the model again
    assert rec.content == ANSWER + "three"
    assert sim.requests()[-1]["model"] == "models/gemini-2.5-flash"


# ---------------------------------------------------------------------------- the run-settings panel


@pytest.mark.parametrize("panel", ["collapsible", "always"])
async def test_parameters_reach_the_request_and_the_panel_is_closed_before_run(
        sim, open_page, monkeypatch, caplog, panel):
    sim.admin("config", {"settings_panel": panel})
    d = await opened(open_page)
    probe = await d._probe("test")
    assert probe["ready"]
    if panel == "collapsible":
        assert not probe["panelOpen"]  # ready without the model name: the panel is collapsed
    await d.run(spec("warm up: the page opened on another model"), Recorder().emit, lambda: None)
    await d.reset()
    opens = count_calls(monkeypatch, d.panel, "open")
    with caplog.at_level(logging.WARNING, logger="bpool.driver"):
        finish, _ = await d.run(spec("a b c d e f g h", temperature=0.3, top_p=0.5,
                                     max_tokens=100000, stop=("never-there", "zzz")),
                                Recorder().emit, lambda: None)
    assert finish == "stop" and len(opens) == 1
    first = sim.requests()[-1]["params"]
    assert (first["temperature"], first["topP"]) == (0.3, 0.5)
    assert first["stopSequences"] == ["never-there", "zzz"]
    assert first["maxOutputTokens"] == 65536  # the model's limit: the page clamped it ...
    assert any("max_tokens: asked 100000, the page took 65536" in r.getMessage()
               for r in caplog.records)  # ... and both numbers were logged
    if panel == "collapsible":
        assert not (await d._probe("test"))["panelOpen"]
    await d.reset()
    opens.clear()
    await d.run(spec("plain"), Recorder().emit, lambda: None)
    assert opens == []  # nothing asked, nothing differs: the panel stays shut
    second = sim.requests()[-1]["params"]
    assert (second["temperature"], second["topP"], second["maxOutputTokens"]) == (1, 0.95, 65536)
    assert not second["stopSequences"]
    await d.reset()
    opens.clear()
    await d.run(spec("same as default", temperature=1.0), Recorder().emit, lambda: None)
    assert opens == []  # asked, but the page already has it


async def test_search_grounding_is_off_in_every_request(sim, open_page):
    d = await opened(open_page)
    for prompt in ("one", "two"):
        await d.run(spec(prompt), Recorder().emit, lambda: None)
        await d.reset()
    await d.run(spec("three", model="gemini-2.5-pro"), Recorder().emit, lambda: None)
    reqs = sim.requests()
    assert len(reqs) == 3 and not any(r["params"]["googleSearch"] for r in reqs)


# ---------------------------------------------------------------------------- Run


@pytest.mark.parametrize("button", ["current", "legacy"])
async def test_run_button_current_and_legacy(sim, open_page, button):
    sim.admin("config", {"run_button": button, "prompt_box": "legacy" if button == "legacy"
                         else "current"})
    d = await opened(open_page)
    rec = Recorder()
    await d.run(spec("run"), rec.emit, lambda: None)
    assert rec.content == ANSWER + "run"


async def test_no_run_button_at_all_sends_with_ctrl_enter_at_once(sim, open_page, monkeypatch, caplog):
    d = await opened(open_page)
    await d.run(spec("warm up: the page opened on another model"), Recorder().emit, lambda: None)
    await d.reset()
    await d.page.evaluate("() => document.querySelectorAll('ms-run-button').forEach(e => e.remove())")
    polls = count_calls(monkeypatch, d.x, "js")
    rec = Recorder()
    with caplog.at_level(logging.INFO, logger="bpool.driver"):
        await d.run(spec("keys"), rec.emit, lambda: None)
    assert rec.content == ANSWER + "keys"
    assert not [c for c in polls if c[0] == "click run"]  # no waiting for a button to enable
    assert any("no Run button" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


# ---------------------------------------------------------------------------- thinking


@pytest.mark.parametrize("model, effort, expect", [
    ("gemini-3.8-flash", "low", {"thinkingLevel": "low"}),
    ("gemini-3.8-flash", "medium", {"thinkingLevel": "medium"}),
    ("gemini-3-pro-preview", "high", {"thinkingLevel": "high"}),
    ("gemini-2.5-flash", "low", {"thinking": True, "thinkingBudget": 1024}),
    ("gemini-2.5-flash", "none", {"thinking": False}),
    ("gemini-2.5-pro", "high", {"thinking": True, "thinkingBudget": 24576}),
])
async def test_reasoning_effort_reaches_the_request(sim, open_page, model, effort, expect):
    d = await opened(open_page)
    await d.run(spec("think", model=model, reasoning_effort=effort), Recorder().emit, lambda: None)
    params = sim.requests()[-1]["params"]
    assert {k: params[k] for k in expect} == expect, params
    await d.reset()
    await d.run(spec("plain", model=model), Recorder().emit, lambda: None)
    back = sim.requests()[-1]["params"]
    if (model, effort) != ("gemini-3-pro-preview", "high"):  # High is that model's default
        assert {k: back[k] for k in expect} != expect, back  # the defaults came back


async def test_unsupported_thinking_is_the_clients_error(sim, open_page):
    d = await opened(open_page)
    # 3 Pro offers no Minimal: refused before anything is sent
    with pytest.raises(StepError) as ei:
        await d.run(spec("x", model="gemini-3-pro-preview", reasoning_effort="minimal"),
                    Recorder().emit, lambda: None)
    assert ei.value.kind == "bad_request" and "Low, High" in ei.value.message
    await d.reset()
    # 2.5 Pro always thinks
    with pytest.raises(StepError) as ei:
        await d.run(spec("x", model="gemini-2.5-pro", reasoning_effort="none"),
                    Recorder().emit, lambda: None)
    assert ei.value.kind == "bad_request" and "cannot turn thinking off" in ei.value.message
    await d.reset()
    assert sim.requests() == []
    # 3.8 Flash offers Minimal, then the service refuses it (error frame, code 3)
    with pytest.raises(StepError) as ei:
        await d.run(spec("x", model="gemini-3.8-flash", reasoning_effort="minimal"),
                    Recorder().emit, lambda: None)
    assert ei.value.kind == "bad_request" and "MINIMAL" in ei.value.message
    assert sim.requests()[-1]["params"]["thinkingLevel"] == "minimal"
    await d.reset()
    rec = Recorder()
    await d.run(spec("after", model="gemini-3.8-flash"), rec.emit, lambda: None)
    assert rec.content == ANSWER + "after"
