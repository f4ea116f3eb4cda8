"""The small scripts the driver evaluates in the page. Selectors always come in as arguments
(from driver.STUDIO), so nothing here needs to change when the page does."""

# Everything the driver polls for in one round trip.
PROBE = """(s) => {
  const vis = (el) => !!el && !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const q = (sel) => { try { return document.querySelector(sel); } catch (e) { return null; } };
  const all = (sel) => { try { return [...document.querySelectorAll(sel)]; } catch (e) { return []; } };
  const model = q(s.modelName);
  let promptLength = 0;
  for (const sel of s.prompt) { const el = q(sel); if (el) { promptLength = el.value.length; break; } }
  const notices = [];
  for (const t of all(s.toasts)) {
    const inner = t.querySelector(s.toastText);
    notices.push(((inner || t).textContent || '').trim());
  }
  for (const c of all(s.callout)) if (vis(c)) notices.push((c.textContent || '').trim());
  return {
    ready: s.ready.some((sel) => vis(q(sel))),
    hasModelName: !!model,
    modelName: model ? (model.textContent || '').trim() : '',
    dialog: vis(q(s.dialog)),
    turns: all(s.turn).length,
    promptLength,
    notices,
  };
}"""

ACCOUNT = """(sels) => {
  const re = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+/;
  for (const sel of sels) {
    let els = [];
    try { els = [...document.querySelectorAll(sel)]; } catch (e) { continue; }
    for (const el of els) {
      const text = [el.textContent, el.getAttribute('aria-label'), el.getAttribute('alt')].join(' ');
      const m = text.match(re);
      if (m) return m[0];
    }
  }
  return '';
}"""

SET_MODEL_PREF = """([key, field, value]) => {
  let pref = {};
  try { pref = JSON.parse(localStorage.getItem(key) || '{}') || {}; } catch (e) { pref = {}; }
  pref[field] = value;
  localStorage.setItem(key, JSON.stringify(pref));
  return true;
}"""

READ_PARAMS = """(s) => {
  const q = (sel) => { try { return document.querySelector(sel); } catch (e) { return null; } };
  const num = (sel) => { const el = q(sel); return el && el.value !== '' ? Number(el.value) : null; };
  const sw = q(s.thinking);
  return {temperature: num(s.temperature), top_p: num(s.top_p),
          thinking: sw ? sw.getAttribute('aria-checked') === 'true' : null};
}"""

# Sets inputs like a user would (value, then input/change/blur events); returns missing controls.
SET_PARAMS = """({sels, values}) => {
  const q = (sel) => { try { return document.querySelector(sel); } catch (e) { return null; } };
  const missing = [];
  const setInput = (name, value) => {
    const el = q(sels[name]);
    if (!el) { missing.push(name); return; }
    if (value === 'max') { if (!el.max) return; value = el.max; }
    if (String(el.value) === String(value)) return;
    el.focus();
    el.value = String(value);
    for (const t of ['input', 'change', 'blur']) el.dispatchEvent(new Event(t, {bubbles: true}));
  };
  for (const name of ['temperature', 'top_p', 'max_tokens']) {
    if (values[name] !== null && values[name] !== undefined) setInput(name, values[name]);
  }
  if (values.thinking !== null && values.thinking !== undefined) {
    const sw = q(sels.thinking);
    if (!sw) missing.push('thinking');
    else if ((sw.getAttribute('aria-checked') === 'true') !== values.thinking) sw.click();
  }
  return missing;
}"""

CLEAR_CHIPS = """(sel) => {
  let n = 0;
  try { for (const b of [...document.querySelectorAll(sel)]) { b.click(); n++; } } catch (e) {}
  return n;
}"""

# The value goes in through JS with input/change events: typing 100k characters would take ages.
FILL_PROMPT = """([sels, value]) => {
  for (const sel of sels) {
    const el = document.querySelector(sel);
    if (!el) continue;
    el.focus();
    el.value = value;
    el.dispatchEvent(new Event('input', {bubbles: true}));
    el.dispatchEvent(new Event('change', {bubbles: true}));
    return el.value === value;
  }
  return false;
}"""

# Index of the first present and enabled Run button, or -1.
RUN_STATE = """(sels) => {
  for (let i = 0; i < sels.length; i++) {
    const b = document.querySelector(sels[i]);
    if (b && !b.disabled && b.getAttribute('aria-disabled') !== 'true') return i;
  }
  return -1;
}"""

CLICK = """(sel) => {
  const el = document.querySelector(sel);
  if (!el) return false;
  el.click();
  return true;
}"""

# Clicks "Discard and continue" in an open dialog; true if it did.
CONFIRM_DISCARD = """([dialogSel, label]) => {
  for (const d of document.querySelectorAll(dialogSel)) {
    for (const b of d.querySelectorAll('button')) {
      if ((b.textContent || '').trim().includes(label)) { b.click(); return true; }
    }
  }
  return false;
}"""
