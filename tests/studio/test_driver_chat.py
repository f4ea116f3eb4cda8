"""The driver against the realistic simulator: first-run popups, the terms-of-service consent and
temporary chat, each in the real page's setting and in the older ones (sim knobs)."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from bpool.studio.outcomes import StepError
from bpool.studio.table import STUDIO
from test_browser_worker import (  # noqa: F401  (fixtures)
    Recorder, open_page, sim, sim_server, spec)

ANSWER = "Hello from alice@sim.test. You said: "


def dismissed(caplog) -> list[str]:
    return [r.getMessage().removeprefix("dismissed a popup: ") for r in caplog.records
            if r.getMessage().startswith("dismissed a popup")]


# ---------------------------------------------------------------------------- first-run popups


async def test_fresh_profile_popups_are_prevented_or_dismissed(sim, open_page, caplog):
    page = await open_page("alice")
    with caplog.at_level(logging.INFO, logger="bpool.driver"):
        await page.driver.open()
    got = dismissed(caplog)
    assert "cookie bar" in got and '"Got it" button' in got
    assert "welcome dialog" not in got  # the preference set before the page ran prevented it
    probe = await page.driver._probe("test")
    assert not probe["popups"]
    rec = Recorder()
    await page.driver.run(spec("past the popups"), rec.emit, lambda: None)
    assert rec.content == ANSWER + "past the popups"


async def test_welcome_dialog_is_dismissed_when_it_shows(sim, open_page, caplog):
    page = await open_page("alice", table=dataclasses.replace(STUDIO, pref_flags=()))
    with caplog.at_level(logging.INFO, logger="bpool.driver"):
        await page.driver.open()
    assert "welcome dialog" in dismissed(caplog)
    rec = Recorder()
    await page.driver.run(spec("after the welcome"), rec.emit, lambda: None)
    assert rec.content == ANSWER + "after the welcome"


async def test_no_popups_nothing_dismissed(sim, open_page, caplog):
    sim.admin("config", {"welcome_dialog": False, "cookie_bar": False, "got_it": False})
    page = await open_page("alice")
    with caplog.at_level(logging.INFO, logger="bpool.driver"):
        await page.driver.open()
    assert dismissed(caplog) == []


# ---------------------------------------------------------------------------- consent


async def test_consent_at_open_is_its_own_kind_naming_the_profile(sim, open_page):
    page = await open_page("carol")
    with pytest.raises(StepError) as ei:
        await page.driver.open()
    assert ei.value.kind == "needs_consent" and "carol" in ei.value.message
    assert sim.requests() == []


async def test_consent_before_a_job(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    await d.run(spec("fine"), Recorder().emit, lambda: None)
    try:
        sim.admin("tos", {"account": "alice", "required": True})
        await d.page.reload()  # the page shows the consent from now on
        with pytest.raises(StepError) as ei:
            await d.run(spec("not sent"), Recorder().emit, lambda: None)
        assert ei.value.kind == "needs_consent" and ei.value.step == "prepare"
        await d.reset()  # leaves the page as it is; no error, no loop
        assert len(sim.requests()) == 1
    finally:
        sim.admin("tos", {"account": "alice", "required": False})


# ---------------------------------------------------------------------------- temporary chat


@pytest.mark.parametrize("variant", ["toggle", "legacy", "menu"])
async def test_temporary_chat_is_on_for_every_request(sim, open_page, variant):
    sim.admin("config", {"temp_chat": variant})
    page = await open_page("alice")
    d = page.driver
    await d.open()
    for prompt, model in (("one", "gemini-2.5-flash"), ("two", "gemini-2.5-flash"),
                          ("three", "gemini-2.5-pro")):  # after New chat, after a model switch
        rec = Recorder()
        await d.run(spec(prompt, model=model), rec.emit, lambda: None)
        assert rec.content == ANSWER + prompt
        await d.reset()
    reqs = sim.requests()
    assert [r["saved"] for r in reqs] == [False, False, False]
    assert sim.admin("stats")["rpcs"].get("CreatePrompt", 0) == 0


async def test_temporary_chat_can_be_left_off(sim, open_page):
    page = await open_page("alice", temporary_chat=False)
    d = page.driver
    await d.open()
    await d.run(spec("kept"), Recorder().emit, lambda: None)
    await d.reset()
    assert [r["saved"] for r in sim.requests()] == [True]
