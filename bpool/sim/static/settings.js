// The run-settings panel of the simulated page and the parameter state behind it.
// Collapsible variant (the current page): the panel exists in the DOM only while open, is opened
// with "Toggle run settings panel", closed with "Close run settings panel", and lies over the Run
// button while open. Values live in `state`, so they survive closing and reopening; New chat and a
// model switch reset them to the model's defaults.
(() => {
  'use strict';
  const S = window.SimStudio;
  const {el, $, prefs, open: openOverlay} = S.ui;
  const LEVEL_CODES = {minimal: 4, low: 1, medium: 2, high: 3};
  const SAFETY = [[null, null, 7, 4], [null, null, 8, 4], [null, null, 9, 4], [null, null, 10, 4]];
  const GOOGLE_SEARCH = [null, null, null, [null, [[]]]];
  const title = s => s.charAt(0).toUpperCase() + s.slice(1);
  let caps = null;  // the current model's capabilities (boot data)
  let state = {};
  let panel = null;
  const collapsible = () => S.boot.knobs.settings_panel !== 'always';

  function defaults(c) {
    return {
      temperature: 1, topP: 0.95, maxTokens: c.maxOut, stops: [],
      thinkingOn: c.thinking === 'budget' && (c.thinkingDefault || c.thinkingLocked),
      manualBudget: false, budget: Math.min(Math.max(8192, c.budgetMin), c.budgetMax),
      level: c.defaultLevel, search: c.search, urlContext: false,
    };
  }

  function setModel(name) {
    caps = S.boot.caps[name];
    state = defaults(caps);
    render();
  }

  function reset() {
    state = defaults(caps);
    render();
  }

  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

  // A number input whose value the page clamps: the state at once, the field when it is left.
  function numberInput(attrs, get, set, {lo, hi, integer}) {
    const input = el('input', {type: 'number', min: lo, max: hi, ...attrs});
    input.value = String(get());
    const read = () => {
      const raw = integer ? parseInt(input.value, 10) : Number(input.value);
      return Number.isFinite(raw) && input.value !== '' ? clamp(raw, lo, hi) : get();
    };
    input.addEventListener('input', () => set(read()));
    const commit = () => { set(read()); input.value = String(get()); };
    input.addEventListener('change', commit);
    input.addEventListener('blur', commit);
    return input;
  }

  function slider(label, key, lo, hi, step) {
    const range = el('input', {type: 'range', min: lo, max: hi, step, 'aria-label': label + ' slider'});
    range.value = String(state[key]);
    const num = numberInput({step, class: 'slider-number-input'}, () => state[key],
      v => { state[key] = v; range.value = String(v); }, {lo, hi, integer: false});
    range.addEventListener('input', () => { state[key] = Number(range.value); num.value = range.value; });
    return el('ms-slider', {}, range, num);
  }

  function toggle(label, checked, onFlip, disabled = false) {
    const btn = el('button', {type: 'button', role: 'switch', 'aria-label': label,
      'aria-checked': String(checked), disabled,
      class: 'mdc-switch' + (checked ? ' mdc-switch--selected' : '')
        + (disabled ? ' mdc-switch--disabled' : '')},
      el('span', {class: 'knob'}));
    btn.addEventListener('click', () => { if (!disabled) { onFlip(!checked); } });
    return el('mat-slide-toggle', {}, btn);
  }

  function levelSelect() {
    const value = el('span', {class: 'mat-mdc-select-min-line', text: title(state.level)});
    const select = el('mat-select', {role: 'combobox', 'aria-label': 'Thinking Level',
      'aria-haspopup': 'listbox', 'aria-expanded': 'false', tabindex: '0', class: 'mat-mdc-select'},
      el('div', {class: 'mat-mdc-select-value'}, el('span', {class: 'mat-mdc-select-value-text'}, value)));
    select.addEventListener('click', () => {
      let h = null;
      const close = () => { h.close(); select.setAttribute('aria-expanded', 'false'); };
      const list = el('div', {role: 'listbox', 'aria-label': 'Thinking Level', class: 'mat-mdc-select-panel'},
        ...caps.levels.map(lv => el('mat-option', {role: 'option', class: 'mat-mdc-option',
          'aria-selected': String(lv === state.level),
          onclick: () => { state.level = lv; value.textContent = title(lv); close(); }},
          el('span', {class: 'mdc-list-item__primary-text', text: title(lv)}))));
      h = openOverlay({backdrop: 'transparent', pane: list, onBackdrop: close, onEscape: close,
                       position: 'top-right'});
      select.setAttribute('aria-expanded', 'true');
    });
    return select;
  }

  function thinkingSection() {
    if (caps.thinking === 'level') {
      return el('div', {class: 'setting thinking'}, el('h3', {text: 'Thinking level'}), levelSelect());
    }
    if (caps.thinking !== 'budget') return null;
    const parts = [el('h3', {text: 'Thinking mode'}),
      toggle('Toggle thinking mode', state.thinkingOn, on => { state.thinkingOn = on; render(); },
             caps.thinkingLocked)];
    if (state.thinkingOn) {
      parts.push(el('h3', {text: 'Set thinking budget'}),
        toggle('Toggle thinking budget between auto and manual', state.manualBudget,
               on => { state.manualBudget = on; render(); }));
      if (state.manualBudget) {
        parts.push(el('div', {'data-test-id': 'user-setting-budget-animation-wrapper'},
          slider('Thinking budget', 'budget', caps.budgetMin, caps.budgetMax, 1)));
      }
    }
    return el('div', {class: 'setting thinking'}, ...parts);
  }

  // A section whose body is hidden until expanded, remembered in the preferences (CJack forces
  // isAdvancedOpen / areToolsOpen, so a fresh profile starts with both collapsed: assumption).
  function section(name, pref, label, ...body) {
    const expanded = prefs.get()[pref] === true;
    const group = el('div', {class: name + '-group' + (expanded ? ' expanded' : '')},
      el('div', {class: 'section-header'},
        el('button', {type: 'button', 'aria-label': label, 'aria-expanded': String(expanded),
          text: name === 'tools' ? 'Tools' : 'Advanced settings',
          onclick: () => { prefs.set({[pref]: !expanded}); render(); }})),
      el('div', {class: 'section-body'}, ...body));
    return group;
  }

  function stopChips() {
    const chips = el('mat-chip-grid', {class: 'stop-chips'}, ...state.stops.map((s, i) =>
      el('mat-chip', {}, el('span', {class: 'chip-text', text: s}),
        el('button', {type: 'button', class: 'remove-button', 'aria-label': 'Remove ' + s, text: '\u00d7',
          onclick: () => { state.stops.splice(i, 1); render(); }}))));
    const input = el('input', {type: 'text', 'aria-label': 'Add stop token', placeholder: 'Add stop...'});
    const add = () => {
      if (!input.value) return;
      state.stops.push(input.value);
      input.value = '';
      render();
      const again = $('input[aria-label="Add stop token"]');
      if (again) again.focus();
    };
    input.addEventListener('keydown', e => { if (e.key === 'Enter') { e.preventDefault(); add(); } });
    input.addEventListener('change', add);
    return el('div', {class: 'setting'}, el('h3', {text: 'Add stop sequence'}), chips, input);
  }

  function build() {
    const header = el('div', {class: 'panel-header'}, el('h2', {text: 'Run settings'}),
      collapsible() ? el('button', {type: 'button', class: 'close', 'aria-label': 'Close run settings panel',
                                    text: '\u00d7', onclick: close}) : null);
    const model = el('ms-model-selector', {}, el('div', {class: 'model-selector-card'},
      el('span', {class: 'title', text: caps.display}),
      el('span', {class: 'subtitle', 'data-test-id': 'model-name', text: caps.id})));
    const temperature = caps.sampling
      ? el('div', {class: 'setting'}, el('h3', {text: 'Temperature'}),
           slider('Temperature', 'temperature', 0, 2, 0.05))
      : null;
    const tools = section('tools', 'areToolsOpen', 'Expand or collapse tools',
      caps.search ? el('div', {class: 'setting', 'data-test-id': 'searchAsAToolTooltip'},
        el('h3', {text: 'Grounding with Google Search'}),
        toggle('Grounding with Google Search', state.search, on => { state.search = on; render(); })) : null,
      el('div', {class: 'setting'}, el('h3', {text: 'URL context'}),
        el('button', {type: 'button', role: 'switch', 'aria-label': 'Browse the url context',
          'aria-checked': String(state.urlContext), class: 'mdc-switch',
          onclick: () => { state.urlContext = !state.urlContext; render(); }})));
    const maxTokens = numberInput({'aria-label': 'Maximum output tokens'}, () => state.maxTokens,
      v => { state.maxTokens = v; }, {lo: 1, hi: caps.maxOut, integer: true});
    const advanced = section('advanced', 'isAdvancedOpen', 'Expand or collapse advanced settings',
      stopChips(),
      el('div', {class: 'setting'}, el('h3', {text: 'Output length'}), maxTokens),
      caps.sampling ? el('div', {class: 'setting'}, el('h3', {text: 'Top P'}),
                         slider('Top P', 'topP', 0, 1, 0.05)) : null);
    return el('ms-run-settings', {class: 'run-settings' + (collapsible() ? ' overlay' : ''),
      role: 'complementary', 'aria-label': 'Run settings'},
      header, model, temperature, thinkingSection(), tools, advanced);
  }

  function render() {
    if (!caps) return;
    const host = collapsible() ? document.body : $('.settings-host');
    const focusedLabel = document.activeElement && document.activeElement.getAttribute('aria-label');
    if (collapsible() && !panel) return;  // collapsed: nothing in the DOM
    const fresh = build();
    if (panel) panel.replaceWith(fresh); else host.append(fresh);
    panel = fresh;
    if (focusedLabel) {
      const again = panel.querySelector(`[aria-label="${CSS.escape(focusedLabel)}"]`);
      if (again) again.focus();
    }
  }

  function open() {
    if (panel || !caps) return;
    panel = build();
    document.body.append(panel);
  }

  function close() {
    if (!collapsible() || !panel) return;
    panel.remove();
    panel = null;
  }

  function toggleOpen() { if (panel) close(); else open(); }

  function generationConfig() {
    const g = [];
    g[1] = state.stops.length ? state.stops.slice() : null;
    g[3] = state.maxTokens;
    if (caps.sampling) { g[4] = state.temperature; g[5] = state.topP; g[6] = 64; }
    if (caps.thinking === 'budget') {
      g[16] = state.thinkingOn ? (state.manualBudget ? [1, state.budget] : [1, -1]) : [0, 0];
      g[17] = 1;
    } else if (caps.thinking === 'level') {
      g[16] = [1, null, null, LEVEL_CODES[state.level]];
      g[17] = 1;
    }
    return Array.from(g, v => (v === undefined ? null : v));
  }

  // The positional request body (README.md; nexus-studio tests/test_input.json).
  function requestBody(modelName, turns, token) {
    // Files first, inline (nexus wire_codec/wire_types); no empty text part after files.
    const contents = turns.map(t => {
      const files = (t.files || []).map(f => [null, null, [f.mime, f.b64]]);
      return [files.length && !t.text ? files : [...files, [null, t.text]], t.role];
    });
    const tools = state.search && caps.search ? [GOOGLE_SEARCH] : null;
    const body = [modelName, contents, SAFETY, generationConfig(), token, null, tools,
                  null, null, null, 1];
    if (tools) {
      const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
      body.push(null, null, [[null, null, tz], null, 1]);
    }
    return body;
  }

  S.settings = {setModel, reset, open, close, toggleOpen, requestBody, render,
                isOpen: () => !!panel, values: () => ({...state})};
  if (!collapsible()) document.body.classList.add('settings-always');
})();
