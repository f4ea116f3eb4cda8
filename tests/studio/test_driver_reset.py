"""The reset between jobs is one page script in the usual case (New chat, the empty chat,
temporary chat back on, Google Search back off), and the page after it is what the next job
needs: the next request is temporary and ungrounded, with no history."""

from __future__ import annotations

from bpool.studio import page_js
from test_browser_worker import (  # noqa: F401  (fixtures)
    Recorder, open_page, sim, sim_server, spec)


async def test_one_page_script_per_reset_and_the_page_as_the_next_job_needs(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    await d.run(spec("warm up"), Recorder().emit, lambda: None)  # the model's first chat
    await d.reset()
    scripts: list[str] = []
    real_js = d.x.js

    async def counting(name, script, arg=None):
        scripts.append(name)
        return await real_js(name, script, arg)
    d.x.js = counting
    for prompt in ("one", "two"):
        await d.run(spec(prompt), Recorder().emit, lambda: None)
        scripts.clear()
        await d.reset()
        assert scripts == ["reset"], scripts
    probe = await real_js("test", page_js.PROBE, d._probe_args)
    assert probe["temporary"] is True and probe["turns"] == 0 and not probe["panelOpen"]
    await d.run(spec("three"), Recorder().emit, lambda: None)
    reqs = sim.requests()
    assert [r["turns"] for r in reqs[-3:]] == [1, 1, 1]
    assert [r["params"]["googleSearch"] for r in reqs] == [False] * len(reqs)
    assert [r["saved"] for r in reqs] == [False] * len(reqs)  # temporary chat each time


async def test_a_job_that_changed_settings_is_put_back_through_the_panel(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    await d.run(spec("hot", temperature=1.7), Recorder().emit, lambda: None)
    await d.reset()
    assert not d.panel.dirty
    await d.run(spec("default"), Recorder().emit, lambda: None)
    last = sim.requests()[-1]["params"]
    assert last["temperature"] != 1.7 and last["googleSearch"] is False
