"""The simulated studio page in real Chromium, measured against the evidence: a cross-origin XHR to
the RPC host with CORS and cookies, the real request layout, the collapsible run settings, the
fresh-profile popups, temporary chat, the thinking controls, errors on the page, and the knobs
that bring back the older variants. One browser (Playwright's private temporary profile, a private
HOME) and one simulator serve the whole module; each test gets a fresh browser context, so no
cookie, localStorage or CORS preflight cache carries over from another test."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.request

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from bpool.sim import NEW_CHAT_PATH, cli
from bpool.sim.knobs import Knobs
from bpool.sim.server import ThreadedSim
from bpool.sim.settings import SimSettings
from sim_evidence import GOOGLE_SEARCH_TOOL, REAL_REQUEST, THINKING_INDEX, skeleton

pytestmark = pytest.mark.chromium

TRICKY = 'héllo 日本語 🙂 [x]]","model"] {"a": [1]} back\\slash "dq"\nline2'
QUIET = {"tokens_per_s": 0, "first_token_s": 0, "welcome_dialog": False, "cookie_bar": False,
         "got_it": False}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPT = 'ms-prompt-input-wrapper textarea[aria-label="Enter a prompt"]'
RUN = "ms-run-button button.ctrl-enter-submits"
PANEL_TOGGLE = 'button[aria-label="Toggle run settings panel"]'
PANEL_CLOSE = 'button[aria-label="Close run settings panel"]'


def admin(sim, path: str, body: dict | None = None):
    req = urllib.request.Request(f"{sim.url}/__sim/{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def poll(check, what: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("simpage")
    for extra in (["--names", "alice,bob"], ["--names", "terry", "--needs-tos"]):
        assert cli.main(["make-profiles", "--dir", str(base / "sim"), "--out", str(base / "cookies"),
                         *extra]) == 0
    home = base / "home"
    home.mkdir()
    with ThreadedSim(SimSettings(port=0, dir=base / "sim", knobs=Knobs().updated(QUIET))) as sim:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
                                         env={**os.environ, "HOME": str(home)})
            try:
                yield sim, browser, base / "cookies"
            finally:
                browser.close()


class Studio:
    """One browser context logged in as one account, and the page in it."""

    def __init__(self, sim, browser, cookies) -> None:
        self.sim, self.browser, self.cookies = sim, browser, cookies
        self.requests: list = []
        self.ctx = self.page = None

    def login(self, name: str) -> None:
        """A fresh context (no localStorage, no preflight cache) with `name`'s cookie file."""
        self.close()
        self.ctx = self.browser.new_context(storage_state=str(self.cookies / f"{name}.json"))
        self.page = self.ctx.new_page()
        self.page.on("request", lambda r: self.requests.append(r))

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
        self.ctx = self.page = None

    def open(self, query: str = ""):
        self.page.goto(self.sim.url + NEW_CHAT_PATH + query)
        self.page.locator('ms-prompt-input-wrapper textarea, ms-prompt-box textarea').wait_for()
        return self.page

    def rpc_requests(self) -> list[tuple[str, str]]:
        return [(r.url.rsplit("/", 1)[-1], r.resource_type) for r in self.requests if "/$rpc/" in r.url]

    def body_of(self, method: str) -> list:
        return json.loads([r for r in self.requests if r.url.endswith("/" + method)][-1].post_data)

    def ask(self, text: str, submit: str = "ctrl-enter"):
        p = self.page
        p.fill(PROMPT if p.locator(PROMPT).count() else "ms-prompt-box textarea", text)
        if submit == "ctrl-enter":
            p.press("textarea[aria-label='Enter a prompt']", "Control+Enter")
        else:
            p.click(submit)
        self.wait_idle()

    def wait_idle(self) -> None:
        self.page.wait_for_function("() => !document.querySelector('button[aria-label=\"Stop generating\"]')"
                                    " && !!document.querySelector('ms-chat-turn')")

    def answer(self) -> str:
        return self.page.locator(".chat-turn-container.model ms-text-chunk").last.inner_text()

    def covered_by(self, selector: str) -> str:
        """What a click at the centre of `selector` lands on (its closest known container)."""
        return self.page.evaluate("""sel => {
            const r = document.querySelector(sel).getBoundingClientRect();
            const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            const c = hit.closest('ms-run-settings, .cdk-overlay-backdrop, .glue-cookie-notification-bar');
            if (c) return c.tagName.toLowerCase() + '.' + c.className;
            return hit.closest(sel) ? 'itself' : hit.tagName;
        }""", selector)


@pytest.fixture
def studio(world):
    sim, ctx, cookies = world
    admin(sim, "reset", {})
    admin(sim, "config", {**dataclasses.asdict(Knobs()), **QUIET})
    admin(sim, "tos", {"account": "terry", "required": True})
    s = Studio(sim, ctx, cookies)
    s.login("alice")
    yield s
    s.close()


def expected(prompt: str, who: str = "alice") -> str:
    return f"Hello from {who}@sim.test. You said: {prompt}"


# ------------------------------------------------------------------------------ transport and layout

def test_a_run_is_a_cross_origin_xhr_with_the_real_request_layout(studio):
    sim = studio.sim
    page = studio.open()
    page.fill(PROMPT, TRICKY)
    page.locator(".token-count", has_text="tokens").wait_for()  # CountTokens while editing
    page.press(PROMPT, "Control+Enter")  # Ctrl+Enter in the textarea submits
    studio.wait_idle()
    assert studio.answer() == expected(TRICKY)

    calls = studio.rpc_requests()
    assert all(r.url.startswith(sim.rpc_url + "/$rpc/") for r in studio.requests if "/$rpc/" in r.url)
    methods = [m for m, _ in calls]
    assert methods.index("CountTokens") < methods.index("GenerateContent")
    assert methods[methods.index("GenerateContent") - 1] == "StreamGenerateContentPerUserQuota"
    assert ("GenerateContent", "xhr") in calls and ("ListModels", "xhr") in calls

    body = studio.body_of("GenerateContent")
    for i in (0, 1, 2, 4, 10, 13):
        assert skeleton(body[i]) == skeleton(REAL_REQUEST[i]), i
    assert body[0] == "models/gemini-2.5-pro" and body[1] == [[[[None, TRICKY]], "user"]]
    assert skeleton(body[3][THINKING_INDEX]) == skeleton([1, -1])  # 2.5 Pro thinks, auto budget
    assert body[3][3] == 65536 and body[3][4] == 1 and body[3][5] == 0.95
    assert GOOGLE_SEARCH_TOOL in body[6]  # Google Search is on until turned off
    assert body[4].startswith("!")
    assert studio.body_of("StreamGenerateContentPerUserQuota") == body

    stats = admin(sim, "stats")
    rec = stats["requests"][-1]
    assert rec["origin"] == sim.url and rec["outcome"] == "ok" and rec["params"]["googleSearch"]
    assert stats["rpcs"]["OPTIONS"] >= 1  # preflighted: the page's headers are not simple ones
    sent = [r for r in studio.requests if r.url.endswith("/GenerateContent")][-1].headers
    assert sent["content-type"] == "application/json+protobuf" and "x-goog-api-key" in sent
    assert rec["saved"] and "/prompts/new_chat" not in page.url  # saved to the account (not temporary)


def test_the_run_settings_panel_exists_only_while_open_and_covers_run(studio):
    page = studio.open()
    for sel in ('[data-test-id="model-name"]', "ms-run-settings", 'input[aria-label="Maximum output tokens"]',
                'button[aria-label="Toggle thinking mode"]', "ms-slider"):
        assert page.locator(sel).count() == 0, sel  # removed from the DOM, not hidden
    page.fill(PROMPT, "covered")
    page.click(PANEL_TOGGLE)
    assert page.locator('[data-test-id="model-name"]').inner_text() == "gemini-2.5-pro"
    assert studio.covered_by(RUN).startswith("ms-run-settings")
    with pytest.raises(PlaywrightTimeout):
        page.click(RUN, timeout=400)
    temperature = page.locator('ms-slider input[type="number"][max="2"]')
    temperature.fill("0.3")
    page.click('button[aria-label="Expand or collapse advanced settings"]')
    max_tokens = page.locator('input[aria-label="Maximum output tokens"]')
    max_tokens.fill("999999")
    max_tokens.press("Tab")
    assert max_tokens.input_value() == "65536"  # the page clamps to the model's limit
    page.click(PANEL_CLOSE)
    assert page.locator("ms-run-settings").count() == 0
    page.click(PANEL_TOGGLE)
    assert temperature.input_value() == "0.3" and max_tokens.input_value() == "65536"
    page.click(PANEL_CLOSE)
    assert studio.covered_by(RUN) == "itself"
    page.click(RUN)
    studio.wait_idle()
    params = admin(studio.sim, "stats")["requests"][-1]["params"]
    assert (params["temperature"], params["maxOutputTokens"]) == (0.3, 65536)

    page.click('button[aria-label="New chat"]')
    page.locator(".mat-mdc-dialog-inner-container").get_by_role("button", name="Discard and continue").click()
    assert page.locator("ms-chat-turn").count() == 0
    page.click(PANEL_TOGGLE)
    assert temperature.input_value() == "1"  # New chat restores the model's defaults
    assert page.locator('button[aria-label="New chat"]').is_disabled()  # nothing to discard

    admin(studio.sim, "config", {"settings_panel": "always"})
    page = studio.open()
    assert page.locator('[data-test-id="model-name"]').is_visible()
    assert page.locator(PANEL_TOGGLE).count() == 0 and page.locator(PANEL_CLOSE).count() == 0
    page.fill(PROMPT, "x")
    assert studio.covered_by(RUN) == "itself"


def test_fresh_profile_popups_swallow_clicks_until_dismissed_and_are_remembered(studio):
    admin(studio.sim, "config", {"welcome_dialog": True, "cookie_bar": True, "got_it": True})
    page = studio.open()
    page.locator("ms-g1-welcome-dialog").wait_for()
    assert studio.covered_by(PANEL_TOGGLE).startswith("div.cdk-overlay-backdrop")
    with pytest.raises(PlaywrightTimeout):
        page.click(PANEL_TOGGLE, timeout=400)
    page.locator("ms-g1-welcome-dialog").get_by_role("button", name="Got it", exact=True).click()
    tip = page.locator(".feature-tip")
    tip.wait_for()  # then a feature tip, whose transparent backdrop also takes the clicks
    assert "cdk-overlay-transparent-backdrop" in studio.covered_by(PANEL_TOGGLE)
    tip.get_by_role("button", name="Got it", exact=True).click()
    assert studio.covered_by(RUN).startswith("div.glue-cookie-notification-bar")  # over the prompt box
    page.click(".glue-cookie-notification-bar__accept")
    assert page.locator(".cdk-overlay-backdrop").count() == 0
    page.fill(PROMPT, "x")
    assert studio.covered_by(RUN) == "itself" and studio.covered_by(PANEL_TOGGLE) == "itself"
    prefs = json.loads(page.evaluate("() => localStorage.getItem('aiStudioUserPreference')"))
    assert prefs["warmWelcomeDisplayed"] is True

    page = studio.open()  # remembered
    assert page.locator("ms-g1-welcome-dialog, .feature-tip, .glue-cookie-notification-bar").count() == 0

    studio.login("alice")  # a fresh profile again; CJack's way: the preference set before loading
    page = studio.open()
    page.evaluate("""() => localStorage.setItem('aiStudioUserPreference',
        JSON.stringify({warmWelcomeDisplayed: true}))""")
    page = studio.open()
    assert page.locator("ms-g1-welcome-dialog").count() == 0 and page.locator(".feature-tip").count() == 1

    admin(studio.sim, "config", {"welcome_dialog": False, "cookie_bar": False, "got_it": False})
    studio.login("alice")
    page = studio.open()
    assert page.locator("ms-g1-welcome-dialog, .feature-tip, .glue-cookie-notification-bar, "
                        ".cdk-overlay-backdrop").count() == 0


# ------------------------------------------------------------------------------ temporary chat

def test_a_temporary_chat_is_not_saved_and_new_chat_turns_it_off(studio):
    page = studio.open()
    toggle = page.locator('button[aria-label="Temporary chat toggle"]')
    indicator = page.locator("ms-incognito-mode-indicator [data-test-id='main-text']")
    assert "ms-button-active" not in toggle.get_attribute("class") and not indicator.is_visible()
    toggle.click()
    assert "ms-button-active" in toggle.get_attribute("class") and indicator.inner_text() == "Temporary chat"
    studio.ask("keep this off the record")
    assert studio.answer() == expected("keep this off the record")
    stats = admin(studio.sim, "stats")
    assert [r["saved"] for r in stats["requests"]] == [False]
    assert "CreatePrompt" not in stats["rpcs"] and "/prompts/new_chat" in page.url
    page.click('button[aria-label="New chat"]')
    page.get_by_role("button", name="Discard and continue").click()
    assert "ms-button-active" not in toggle.get_attribute("class") and not indicator.is_visible()
    studio.ask("saved one")
    poll(lambda: admin(studio.sim, "stats")["requests"][-1]["saved"], "the second chat to be saved")


@pytest.mark.parametrize("variant", ["legacy", "menu"])
def test_older_temporary_chat_controls(studio, variant):
    admin(studio.sim, "config", {"temp_chat": variant})
    page = studio.open()
    assert page.locator('button[aria-label="Temporary chat toggle"]').count() == 0
    if variant == "legacy":
        old = page.locator("button[data-test-incognito-toggle]")
        old.click()
        assert old.get_attribute("aria-pressed") == "true"
    else:
        page.click('button[aria-label="View more actions"]')
        page.get_by_role("menuitem", name="Temporary chat toggle").click()
        page.click('button[aria-label="View more actions"]')
        assert page.locator("[data-test-incognito-checkmark]").count() == 1
        page.keyboard.press("Escape")
    assert page.locator("ms-incognito-mode-indicator").is_visible()
    studio.ask("off the record")
    assert [r["saved"] for r in admin(studio.sim, "stats")["requests"]] == [False]


# ------------------------------------------------------------------------------ thinking and tools

def test_budget_thinking_and_search_controls_reach_the_request(studio):
    page = studio.open("?model=gemini-2.5-flash")
    page.click(PANEL_TOGGLE)
    assert page.locator('[data-test-id="model-name"]').inner_text() == "gemini-2.5-flash"
    switch = page.locator('button[role="switch"][aria-label="Toggle thinking mode"]')
    budget = page.locator('[data-test-id="user-setting-budget-animation-wrapper"] input[type="number"]')
    assert switch.get_attribute("aria-checked") == "true" and budget.count() == 0
    page.click('button[role="switch"][aria-label="Toggle thinking budget between auto and manual"]')
    budget.fill("2048")
    budget.press("Tab")
    page.click('button[aria-label="Expand or collapse tools"]')
    search = page.locator('div[data-test-id="searchAsAToolTooltip"] mat-slide-toggle button')
    assert search.get_attribute("aria-checked") == "true"  # on by default: a driver must turn it off
    search.click()
    assert search.get_attribute("aria-checked") == "false"
    page.click(PANEL_CLOSE)
    studio.ask("think a little")
    assert page.locator("ms-thought-chunk").last.is_visible()
    body = studio.body_of("GenerateContent")
    assert body[3][THINKING_INDEX] == [1, 2048] and len(body) == 11 and body[6] is None

    page.click(PANEL_TOGGLE)
    switch.click()
    assert switch.get_attribute("aria-checked") == "false" and budget.count() == 0
    page.click(PANEL_CLOSE)
    studio.ask("no thinking")
    params = [r["params"] for r in admin(studio.sim, "stats")["requests"]]
    assert [(p["thinking"], p["thinkingBudget"], p["googleSearch"]) for p in params] == [
        (True, 2048, False), (False, 0, False)]


def test_thinking_level_select_and_a_refused_level(studio):
    page = studio.open()
    page.evaluate("""() => localStorage.setItem('aiStudioUserPreference',
        JSON.stringify({promptModel: 'models/gemini-3.8-flash'}))""")  # preference + reload
    page = studio.open()
    page.click(PANEL_TOGGLE)
    assert page.locator('[data-test-id="model-name"]').inner_text() == "gemini-3.8-flash"
    assert page.locator('ms-slider input[type="number"][max="2"]').count() == 0  # no temperature
    select = page.locator('mat-select[aria-label="Thinking Level"]')
    assert select.locator(".mat-mdc-select-value-text .mat-mdc-select-min-line").inner_text() == "High"
    select.click()
    options = page.locator('.cdk-overlay-container [role="listbox"][aria-label="Thinking Level"] mat-option')
    assert options.all_inner_texts() == ["Minimal", "Low", "Medium", "High"]
    options.filter(has_text="Minimal").click()
    assert page.locator('[role="listbox"]').count() == 0
    assert select.inner_text() == "Minimal"
    page.click(PANEL_CLOSE)
    studio.ask("think minimally")
    page.locator("div.toast.error", has_text="Thinking level MINIMAL is not supported").wait_for()
    rec = admin(studio.sim, "stats")["requests"][-1]
    assert (rec["status"], rec["error_code"], rec["params"]["thinkingLevel"]) == (200, 3, "minimal")
    assert studio.body_of("GenerateContent")[3][THINKING_INDEX] == [1, None, None, 4]


# ------------------------------------------------------------------------------ errors and stop

def test_errors_show_on_the_page(studio):
    sim = studio.sim
    admin(sim, "config", {"quota": 1})
    page = studio.open()
    studio.ask("first")
    studio.ask("over quota")
    page.locator("ms-callout.error-callout .message", has_text="user has exceeded quota").wait_for()
    page.locator("div.toast.error", has_text="You exceeded your current quota").wait_for()
    admin(sim, "config", {"quota": 0})
    admin(sim, "fail", {"mode": "frame", "code": 7})
    studio.ask("denied")
    page.locator("div.toast.error", has_text="Failed to generate content: permission denied").wait_for()
    assert studio.answer() == "An internal error has occurred."
    studio.ask("blocked [[sim:safety]]")
    page.locator(".blocked-content").wait_for()
    assert [r["error_code"] for r in admin(sim, "stats")["requests"]] == [None, 8, 7, None]


def test_an_account_without_consent_sees_the_terms_and_cannot_run(studio):
    studio.login("terry")
    page = studio.open()
    dialog = page.locator("mat-dialog-container", has_text="I consent to the Google APIs Terms of Service")
    dialog.wait_for()
    go = dialog.get_by_role("button", name="Continue")
    assert go.is_disabled() and studio.covered_by(PANEL_TOGGLE).startswith("div.cdk-overlay-backdrop")
    page.evaluate("""() => { const t = document.querySelector('textarea[aria-label="Enter a prompt"]');
        t.value = 'sneak'; t.dispatchEvent(new Event('input', {bubbles: true})); t.dispatchEvent(
        new KeyboardEvent('keydown', {key: 'Enter', ctrlKey: true, bubbles: true})); }""")
    page.locator("div.toast.error", has_text="permission denied").wait_for()  # the RPC refuses: 7
    assert admin(studio.sim, "stats")["requests"][-1]["error_code"] == 7
    dialog.locator("input[type=checkbox]").check()
    go.click()
    page.locator("mat-dialog-container").wait_for(state="detached")
    studio.ask("now allowed")
    assert studio.answer() == expected("now allowed", "terry")


def test_stop_aborts_the_request(studio):
    admin(studio.sim, "config", {"tokens_per_s": 5})
    page = studio.open()
    page.fill(PROMPT, "stop me please, this answer is slow")
    page.click(RUN)
    page.locator(".chat-turn-container.model ms-thought-chunk").wait_for()  # streaming
    page.click('button[aria-label="Stop generating"]')
    studio.wait_idle()
    rec = poll(lambda: admin(studio.sim, "stats")["requests"][-1]["end"] and
               admin(studio.sim, "stats")["requests"][-1], "the server to see the stop")
    assert rec["outcome"] == "aborted"


# ------------------------------------------------------------------------------ older page variants

def test_the_older_page_variants_still_run(studio):
    admin(studio.sim, "config", {"run_button": "legacy", "prompt_box": "legacy", "transport": "fetch",
                                 "nesting": "flat", "metadata_chunk": False, "settings_panel": "always",
                                 "per_user_quota": False, "count_tokens": False, "autosave": False})
    page = studio.open()
    assert page.locator(RUN).count() == 0 and page.locator(PROMPT).count() == 1
    assert page.locator('ms-prompt-box textarea[aria-label="Enter a prompt"]').count() == 1
    studio.ask("old page", submit='ms-run-button button[type="submit"][aria-label="Run"]')
    assert studio.answer() == expected("old page")
    calls = studio.rpc_requests()
    assert ("GenerateContent", "fetch") in calls
    assert {m for m, _ in calls} == {"ListModels", "GenerateContent"}
