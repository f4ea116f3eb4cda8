"""First-run popups and the terms-of-service consent, in real Chromium against a small local page.

The page shows what docs/aistudio-page.md lists for fresh accounts, on request (query string): the welcome
dialog `ms-g1-welcome-dialog` over a click-swallowing `.cdk-overlay-backdrop` (unless the
preference says it was shown), the cookie bar, "Got it" / "Dismiss" / "Not now" / "Skip" buttons
in overlays, and the consent. It counts every click it receives.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web

from bpool.protocol import ChatMessage, JobSpec
from bpool.worker import engines
from bpool.studio.driver import DriverSettings, StudioDriver
from bpool.studio.outcomes import StepError

HAVE_CHROMIUM = Path(engines.DEFAULT_CHROMIUM).exists()

PAGE = """<!doctype html><title>popups</title><body>
<ms-prompt-box><textarea aria-label="Enter a prompt"></textarea></ms-prompt-box>
<button id="page-got-it">Got it</button>
<div class="cdk-overlay-container"></div>
<script>
const opts = new URLSearchParams(location.search);
const pref = JSON.parse(localStorage.getItem('aiStudioUserPreference') || 'null');
window.prefAtLoad = pref;
window.clicks = [];
document.addEventListener('click', (e) => {
  const b = e.target.closest('button');
  if (b) window.clicks.push(b.id || b.textContent.trim());
}, true);
const overlay = document.querySelector('.cdk-overlay-container');
const add = (html) => { const d = document.createElement('div'); d.innerHTML = html; overlay.append(d); return d; };
const showWelcome = () => {
  const bd = add('<div class="cdk-overlay-backdrop" style="position:fixed;inset:0"></div>');
  const dlg = add('<ms-g1-welcome-dialog style="display:block"><h2>Go further</h2>'
    + '<button aria-label="Close dialog" id="welcome-close">x</button></ms-g1-welcome-dialog>');
  dlg.querySelector('#welcome-close').onclick = () => {
    dlg.remove();
    if (!opts.has('linger')) bd.remove();
  };
};
if (opts.has('welcome') && (opts.get('welcome') === 'force' || !(pref && pref.warmWelcomeDisplayed))) showWelcome();
if (opts.has('cookie')) {
  const bar = document.createElement('div');
  bar.className = 'glue-cookie-notification-bar';
  bar.innerHTML = '<button class="glue-cookie-notification-bar__accept" id="cookie-ok">OK, got it</button>';
  bar.querySelector('button').onclick = () => bar.remove();
  document.body.append(bar);
}
for (const label of (opts.get('buttons') || '').split(',').filter(Boolean)) {
  const d = add('<mat-snack-bar-container><button id="snack-' + label + '">' + label + '</button></mat-snack-bar-container>');
  d.querySelector('button').onclick = () => { if (!opts.has('stubborn')) d.remove(); };
}
if (opts.has('consent')) {
  add('<mat-dialog-container role="dialog"><label><input type="checkbox" id="consent-box">'
    + 'I consent to the Google APIs Terms of Service and the Gemini API Additional Terms of Service'
    + '</label><button id="consent-got-it">Got it</button><button id="consent-go">Continue</button>'
    + '</mat-dialog-container>');
}
</script></body>"""


@pytest.fixture
async def site(aiohttp_server):
    async def page(request):
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/prompts/new_chat", page)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/")).rstrip("/")


@pytest.fixture
async def driver(site, tmp_path):
    if not HAVE_CHROMIUM:
        pytest.skip("no system Chromium")
    s = engines.EngineSettings()
    browser = await engines.launch(engines.EngineChoice("chromium", s.chromium_path, "t"), s,
                                   engines.BrowserDirs.for_profile(tmp_path, "pop"))
    try:
        d = StudioDriver(browser.context, DriverSettings(base_url=site, popup_timeout_s=2.0),
                         tmp_path / "snap", profile="carol")
        await d.install()
        yield d
    finally:
        await browser.close()


async def goto(d: StudioDriver, query: str = "") -> dict:
    await d.page.goto(d.s.new_chat_url + query)
    return await d._probe("test")


async def clicks(d: StudioDriver) -> list[str]:
    return await d.page.evaluate("window.clicks")


async def test_preferences_are_set_before_the_page_reads_them_and_keep_the_rest(driver):
    d = driver
    await goto(d)
    await d.page.evaluate("""() => localStorage.setItem('aiStudioUserPreference',
        JSON.stringify({promptModel: 'models/gemini-2.5-pro', theme: 'dark'}))""")
    probe = await goto(d, "?welcome=1")
    pref = await d.page.evaluate("window.prefAtLoad")
    assert pref == {"promptModel": "models/gemini-2.5-pro", "theme": "dark",
                    "warmWelcomeDisplayed": True, "fileCopyrightAcknowledged": True}
    assert probe["ready"] and not probe["popups"]  # the welcome dialog never showed
    assert probe["prefModel"] == "models/gemini-2.5-pro"


async def test_popups_are_dismissed_and_each_dismissal_logged(driver, caplog):
    d = driver
    probe = await goto(d, "?welcome=force&linger=1&cookie=1&buttons=Got%20it,Not%20now,Skip,Dismiss")
    assert probe["popups"]
    with caplog.at_level(logging.INFO, logger="bpool.driver"):
        done = await d.popups.clear("test")
    probe = await d._probe("test")
    assert not probe["popups"]
    assert {"welcome dialog", "cookie bar", '"Got it" button', '"Not now" button',
            '"Skip" button', '"Dismiss" button', "overlay backdrop"} <= set(done)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dismissed")]
    assert len(logged) == len(done)
    assert "page-got-it" not in await clicks(d)  # a page button is never clicked
    assert await d.page.evaluate("document.querySelectorAll('.cdk-overlay-backdrop').length") == 0
    # the backdrop no longer swallows clicks: a trusted click reaches the page
    await d.page.locator("#page-got-it").click(timeout=3000)
    assert (await clicks(d))[-1] == "page-got-it"


async def test_a_popup_that_keeps_coming_back_does_not_hold_the_driver_forever(driver):
    d = driver
    await goto(d, "?buttons=Got%20it&stubborn=1")
    done = await asyncio.wait_for(d.popups.clear("test"), 30)
    assert done and set(done) == {'"Got it" button'}
    assert (await d._probe("test"))["popups"]  # still there: logged, left to the next step


async def test_consent_is_its_own_failure_and_is_never_clicked_through(driver):
    d = driver
    probe = await goto(d, "?consent=1")
    assert probe["consent"]
    assert await d.popups.clear("test") == []
    assert await clicks(d) == []
    with pytest.raises(StepError) as ei:
        await d._wait_ready("wait ready")
    assert ei.value.kind == "needs_consent" and "carol" in ei.value.message
    d.model = "gemini-2.5-flash"
    spec = JobSpec(model="gemini-2.5-flash", messages=(ChatMessage("user", "hi"),))
    with pytest.raises(StepError) as ei:
        await d.run(spec, lambda **_: None, lambda: None)
    assert ei.value.kind == "needs_consent" and ei.value.step == "prepare"
    assert await clicks(d) == []
