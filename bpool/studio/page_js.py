"""The small scripts the driver evaluates in the page. Selectors always come in as arguments
(from table.STUDIO), so nothing here needs to change when the page does.

Every function script starts with the same helpers (`_H`): `q`/`qa` never throw on a selector the
browser rejects, `first` takes the first match of a candidate list, `vis` is "has a box".
"""

import json

_H = """
  const q = (sel) => { try { return document.querySelector(sel); } catch (e) { return null; } };
  const qa = (sel) => { try { return [...document.querySelectorAll(sel)]; } catch (e) { return []; } };
  const vis = (el) => !!el && !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const first = (sels) => { for (const sel of sels) { const el = q(sel); if (el) return el; } return null; };
  const firstVis = (sels) => {
    for (const sel of sels) for (const el of qa(sel)) if (vis(el)) return el;
    return null;
  };
  const text = (el) => ((el && el.textContent) || '').replace(/\\s+/g, ' ').trim();
  const lower = (t) => (t || '').toLowerCase();
  const overlayText = (s) => lower(s.overlays.map((sel) => qa(sel).map(text).join(' ')).join(' '));
  const tempState = (s) => {
    for (const sel of s.tempIndicator)
      for (const el of qa(sel)) if (vis(el) && lower(text(el)).includes(s.tempText)) return true;
    if (s.tempCheckmark.some((sel) => q(sel))) return true;
    const t = first(s.tempToggle);
    if (!t) return null;
    for (const a of ['aria-pressed', 'aria-checked']) if (t.getAttribute(a) === 'true') return true;
    return t.classList.contains(s.tempActive);
  };
  const sw = (sels) => {
    const el = first(sels);
    if (!el) return null;
    return {on: el.getAttribute('aria-checked') === 'true',
            enabled: !el.disabled && el.getAttribute('aria-disabled') !== 'true'};
  };
"""


def _fn(args: str, body: str) -> str:
    return f"({args}) => {{{_H}{body}}}"


def prefs_script(key: str, flags: dict[str, bool], origin: str) -> str:
    """An init script: merge `flags` into localStorage[key] before the page's own scripts read it,
    on the studio's origin only, keeping every other preference (promptModel, ...)."""
    return """(function (key, flags, origin) {
  if (window.top !== window || location.origin !== origin) return;
  try {
    let pref = {};
    try { pref = JSON.parse(localStorage.getItem(key) || '{}') || {}; } catch (e) { pref = {}; }
    if (typeof pref !== 'object' || Array.isArray(pref)) pref = {};
    let changed = false;
    for (const [k, v] of Object.entries(flags)) if (pref[k] !== v) { pref[k] = v; changed = true; }
    if (changed) localStorage.setItem(key, JSON.stringify(pref));
  } catch (e) { /* storage may be disabled; the popups are then dismissed instead */ }
})(%s, %s, %s);
""" % (json.dumps(key), json.dumps(flags), json.dumps(origin))


# Everything the driver checks before and between steps, in one round trip.
_PROBE = """
  const probe = (s) => {
    const ready = s.ready.some((sel) => vis(q(sel)));
    let promptLength = 0;
    for (const sel of s.prompt) { const el = q(sel); if (el) { promptLength = el.value.length; break; } }
    const notices = [];
    for (const t of qa(s.toasts)) {
      const inner = t.querySelector(s.toastText);
      notices.push(text(inner || t));
    }
    for (const c of qa(s.callout)) if (vis(c)) notices.push(text(c));
    // The consent sits in a dialog; before the chat is ready it may be the whole page.
    let consentText = overlayText(s);
    if (!ready && document.body) consentText += ' ' + lower(document.body.innerText);
    const consent = s.consent.some((p) => consentText.includes(p));
    const popups = s.welcome.some((sel) => vis(q(sel))) || !!firstVis(s.cookie)
      || s.overlays.some((sel) => qa(sel).some((root) => [...root.querySelectorAll('button')].some(
        (b) => vis(b) && s.labels.includes(text(b)))));
    let prefModel = '';
    try { prefModel = (JSON.parse(localStorage.getItem(s.prefKey) || '{}') || {})[s.prefField] || ''; }
    catch (e) { prefModel = ''; }
    return {
      ready, consent, popups, promptLength, notices,
      panelOpen: s.panel.some((sel) => !!q(sel)),
      panelClose: !!firstVis(s.panelClose),
      temporary: tempState(s),
      prefModel: typeof prefModel === 'string' ? prefModel : '',
      dialog: vis(q(s.dialog)),
      turns: qa(s.turn).length,
    };
  };
"""
PROBE = _fn("s", _PROBE + "return probe(s);")

ACCOUNT = _fn("sels", """
  const re = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+/;
  for (const sel of sels) {
    for (const el of qa(sel)) {
      const t = [el.textContent, el.getAttribute('aria-label'), el.getAttribute('alt')].join(' ');
      const m = t.match(re);
      if (m) return m[0];
    }
  }
  return '';
""")

SET_MODEL_PREF = _fn("[key, field, value]", """
  let pref = {};
  try { pref = JSON.parse(localStorage.getItem(key) || '{}') || {}; } catch (e) { pref = {}; }
  pref[field] = value;
  localStorage.setItem(key, JSON.stringify(pref));
  return true;
""")

# Dismisses first-run popups; returns what it dismissed. Buttons are only clicked inside
# overlays and dialogs, and never inside the terms-of-service consent.
DISMISS = _fn("s", """
  const done = [];
  if (s.consent.some((p) => overlayText(s).includes(p))) return done;
  for (const sel of s.welcome) for (const dlg of qa(sel)) {
    if (!vis(dlg)) continue;
    let b = null;
    for (const c of s.welcomeClose) { b = [...dlg.querySelectorAll(c)].find(vis); if (b) break; }
    if (b) { b.click(); done.push('welcome dialog'); }
  }
  const cookie = firstVis(s.cookie);
  if (cookie) { cookie.click(); done.push('cookie bar'); }
  for (const sel of s.overlays) for (const root of qa(sel)) {
    for (const b of root.querySelectorAll('button')) {
      const t = text(b);
      if (vis(b) && s.labels.includes(t)) { b.click(); done.push('"' + t + '" button'); }
    }
  }
  // A backdrop left behind with no dialog swallows every click on the page.
  if (!s.welcome.some((sel) => vis(q(sel))) && !qa(s.panes).some(vis)) {
    for (const bd of qa(s.backdrop)) if (vis(bd)) { bd.remove(); done.push('overlay backdrop'); }
  }
  return done;
""")

TEMP_STATE = _fn("s", """
  return {on: tempState(s), toggle: !!firstVis(s.tempToggle), menu: !!firstVis(s.moreActions)};
""")

# The same, and with `click`, a click on a showing toggle when the page shows it off.
TEMP_TURN_ON = _fn("s", """
  const on = tempState(s);
  const toggle = firstVis(s.tempToggle);
  const clicked = on === false && !!toggle;
  if (clicked) toggle.click();
  return {on, toggle: !!toggle, menu: !!firstVis(s.moreActions), clicked};
""")

# Clicks the first visible candidate; its index, or -1.
CLICK_FIRST = _fn("sels", """
  for (let i = 0; i < sels.length; i++) {
    const el = qa(sels[i]).find(vis);
    if (el) { el.click(); return i; }
  }
  return -1;
""")

ANY_VISIBLE = _fn("sels", "return !!firstVis(sels);")

# Clicks the first visible candidate, then says whether any candidate still shows (a control
# the page removes at once needs no second look).
CLICK_GONE = _fn("sels", """
  const el = firstVis(sels);
  if (el) el.click();
  return {clicked: !!el, showing: !!firstVis(sels)};
""")

CLICK = _fn("sel", """
  const el = q(sel);
  if (!el) return false;
  el.click();
  return true;
""")

# The run-settings panel as the page shows it; `open` is false when its content is not in the DOM.
_PANEL = """
  const panelRead = (s) => {
    const num = (el) => el && el.value !== '' && !isNaN(Number(el.value)) ? Number(el.value) : null;
    const attr = (el, a) => el && el.getAttribute(a) !== null && el.getAttribute(a) !== ''
      && !isNaN(Number(el.getAttribute(a))) ? Number(el.getAttribute(a)) : null;
    const level = first(s.level);
    const budget = first(s.budget);
    return {
      open: s.panel.some((sel) => !!q(sel)),
      model: text(first(s.modelName)),
      temperature: num(first(s.temperature)),
      top_p: num(first(s.topP)),
      max_tokens: num(first(s.maxTokens)),
      thinking: sw(s.thinking),
      manual: sw(s.manual),
      budget: num(budget),
      budget_min: attr(budget, 'min'),
      level: level ? text(level.querySelector(s.selectValue) || level) : null,
      search: sw(s.search),
      tools: !!firstVis(s.toolsExpand),
      chips: qa(s.chipRemove).length,
    };
  };
"""
PANEL_READ = _fn("s", _PANEL + "return panelRead(s);")

# Opens the panel unless it is open: {state, clicked} (clicked: -1 when there is no toggle).
PANEL_OPEN = _fn("{s, toggle}", _PANEL + """
  const st = panelRead(s);
  if (st.open) return {state: st, clicked: 0};
  const t = firstVis(toggle);
  if (!t) return {state: st, clicked: -1};
  t.click();
  return {state: panelRead(s), clicked: 1};
""")

# Flips the named switches to the wanted state; returns the names of the missing ones.
SET_SWITCHES = _fn("{s, want}", """
  const missing = [];
  for (const [name, on] of Object.entries(want)) {
    const el = first(s[name]);
    if (!el) { missing.push(name); continue; }
    if ((el.getAttribute('aria-checked') === 'true') !== on) el.click();
  }
  return missing;
""")

# Sets number inputs like a user would (value, then input/change/blur events); "min" / "max" take
# the input's own bound. Returns the names of the missing inputs.
SET_INPUTS = _fn("{s, want}", """
  const missing = [];
  for (const [name, wanted] of Object.entries(want)) {
    const el = first(s[name]);
    if (!el) { missing.push(name); continue; }
    let value = wanted;
    if (value === 'max' || value === 'min') { value = el[value]; if (value === '') continue; }
    if (String(el.value) === String(value)) continue;
    el.focus();
    el.value = String(value);
    for (const t of ['input', 'change', 'blur']) el.dispatchEvent(new Event(t, {bubbles: true}));
  }
  return missing;
""")

# The visible options of an open select (listbox) as labels; with `pick`, clicks that one.
SELECT_OPTION = _fn("{s, pick}", """
  const opts = qa(s.option).filter(vis);
  if (pick) {
    const o = opts.find((el) => lower(text(el)) === lower(pick));
    if (o) { o.click(); return [text(o)]; }
    return [];
  }
  return opts.map(text);
""")

# Expands collapsed sections (aria-expanded="false"); returns how many it opened.
EXPAND = _fn("sels", """
  let n = 0;
  for (const sel of sels) for (const b of qa(sel)) {
    if (vis(b) && b.getAttribute('aria-expanded') === 'false') { b.click(); n++; }
  }
  return n;
""")

CLEAR_CHIPS = _fn("sel", """
  let n = 0;
  for (const b of qa(sel)) { b.click(); n++; }
  return n;
""")

# The first present and enabled Run candidate: {i: candidate, k: which match, exists: any match,
# x, y: its centre in the viewport, scrolled into view if need be (null: it has no box)}.
_RUN = """
  const runState = (sels) => {
    let exists = false;
    for (let i = 0; i < sels.length; i++) {
      const all = qa(sels[i]);
      for (let k = 0; k < all.length; k++) {
        exists = true;
        const b = all[k];
        if (b.disabled || b.getAttribute('aria-disabled') === 'true') continue;
        let r = b.getBoundingClientRect();
        if (r.bottom < 0 || r.right < 0 || r.top > innerHeight || r.left > innerWidth) {
          b.scrollIntoView({block: 'center', inline: 'center'});
          r = b.getBoundingClientRect();
        }
        const boxed = r.width > 0 && r.height > 0;
        return {i, k, exists, x: boxed ? r.left + r.width / 2 : null,
                y: boxed ? r.top + r.height / 2 : null};
      }
    }
    return {i: -1, k: -1, exists};
  };
"""
RUN_STATE = _fn("sels", _RUN + "return runState(sels);")

# The value goes in through JS with input/change events (typing 100k characters would take
# ages); the autosize wrapper mirrors it in data-value. Returns whether it took, and Run's state.
# With `check` (probe arguments) it first probes, and fills only when nothing stands in the way
# (the job's fast path: one round trip for both). A Run button that the page enables a moment
# after the input event is waited for here, up to `runWaitMs`, not by more round trips.
FILL_PROMPT = "async " + _fn("{sels, value, wrapper, run, check, temporary, runWaitMs}",
                             _PROBE + _RUN + """
  let p = null;
  if (check) {
    p = probe(check);
    if (!p.ready || p.consent || p.popups || (p.panelOpen && p.panelClose)
        || (temporary && p.temporary === false)) return {probe: p, filled: false, ok: false};
  }
  for (const sel of sels) {
    const el = q(sel);
    if (!el) continue;
    el.focus();
    el.value = value;
    const box = el.closest(wrapper);
    if (box) box.setAttribute('data-value', value);
    el.dispatchEvent(new Event('input', {bubbles: true}));
    el.dispatchEvent(new Event('change', {bubbles: true}));
    let rs = runState(run);
    const end = performance.now() + (runWaitMs || 0);
    while (rs.i < 0 && rs.exists && performance.now() < end) {
      await new Promise((r) => setTimeout(r, 8));
      rs = runState(run);
    }
    return {probe: p, filled: true, ok: el.value === value, run: rs};
  }
  return {probe: p, filled: true, ok: false, run: runState(run)};
""")
