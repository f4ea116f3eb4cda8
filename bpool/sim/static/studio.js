// The simulated studio page. It behaves like the real one where a driver can tell: it loads the
// model list with fetch, posts each prompt with fetch to .../GenerateContent and reads the streamed
// body with a reader, and shows the same controls, dialogs, toasts and callouts.
(() => {
  'use strict';
  const RPC = '/$rpc/google.internal.alkali.applications.makersuite.v1.MakerSuiteService/';
  const SIGNIN = '/accounts.google.com/ServiceLogin';
  const $ = (sel, root = document) => root.querySelector(sel);
  const ui = {
    textarea: $('ms-prompt-box textarea[aria-label="Enter a prompt"]'),
    run: $('ms-run-button button[type="submit"]'),
    newChat: $('button[aria-label="New chat"]'),
    temporary: $('button[aria-label="Temporary chat toggle"]'),
    modelTitle: $('.model-selector-card .title'),
    modelName: $('[data-test-id="model-name"]'),
    session: $('ms-chat-session .chat-view-container'),
    callouts: $('.callouts'),
    toasts: $('.toast-container'),
    overlay: $('.cdk-overlay-container'),
    temperature: $('ms-slider input[type="number"][max="2"]'),
    topP: $('ms-slider input[type="number"][max="1"]'),
    maxTokens: $('input[aria-label="Maximum output tokens"]'),
    stopInput: $('input[aria-label="Add stop token"]'),
    chips: $('mat-chip-grid.stop-chips'),
    thinking: $('button[role="switch"][aria-label="Toggle thinking mode"]'),
    budgetWrap: $('[data-test-id="user-setting-budget-animation-wrapper"]'),
  };
  const pageToken = $('meta[name="sim-page-token"]').content;
  let requestCounter = 0; // each request's token is "<page token>.<n>", n growing: no replays
  let model = null;
  let turns = []; // [{role: "user"|"model", text}]
  let controller = null; // AbortController of the request in flight

  // ------------------------------------------------------------------------------ model list
  function preferredModel() {
    try {
      const pref = JSON.parse(localStorage.getItem('aiStudioUserPreference') || '{}');
      return pref && typeof pref.promptModel === 'string' ? pref.promptModel : null;
    } catch (e) {
      return null;
    }
  }

  async function loadModels() {
    const resp = await fetch(RPC + 'ListModels', {
      method: 'POST', credentials: 'same-origin', body: '[]',
      headers: {'Content-Type': 'application/json+protobuf'},
    });
    if (!resp.ok) {
      toast('error', 'Failed to load the list of models.');
      return;
    }
    let text = await resp.text();
    if (text.startsWith(")]}'")) text = text.slice(text.indexOf('\n') + 1);
    const models = JSON.parse(text)[0].map(e => ({name: e[0], display: e[3], maxOut: e[6]}));
    const want = preferredModel();
    model = models.find(m => m.name === want) || models[0];
    ui.modelTitle.textContent = model.display;
    ui.modelName.textContent = model.name.replace(/^models\//, '');
    ui.maxTokens.max = String(model.maxOut);
    ui.maxTokens.value = String(model.maxOut);
    refreshRun();
  }

  // ------------------------------------------------------------------------------ run button
  function refreshRun() {
    if (controller) {
      ui.run.setAttribute('aria-label', 'Stop generating');
      ui.run.textContent = 'Stop';
      ui.run.disabled = false;
    } else {
      ui.run.setAttribute('aria-label', 'Run');
      ui.run.textContent = 'Run';
      ui.run.disabled = !model || ui.textarea.value.trim() === '';
    }
  }

  // ------------------------------------------------------------------------------ notices
  function toast(kind, message) {
    const el = document.createElement('div');
    el.className = 'toast ' + kind;
    const span = document.createElement('span');
    span.className = 'content-text';
    span.textContent = message;
    const close = document.createElement('button');
    close.type = 'button';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '\u00d7';
    close.onclick = () => el.remove();
    el.append(span, close);
    ui.toasts.append(el);
    setTimeout(() => el.remove(), 15000);
  }

  function quotaCallout() {
    const el = document.createElement('ms-callout');
    el.className = 'error-callout';
    const msg = document.createElement('div');
    msg.className = 'message';
    msg.textContent = 'Failed to generate content: user has exceeded quota. Please try again later.';
    el.append(msg);
    ui.callouts.append(el);
  }

  function clearNotices() {
    ui.toasts.replaceChildren();
    ui.callouts.replaceChildren();
  }

  async function showHttpError(resp) {
    if (resp.status === 429) return quotaCallout();
    if (resp.status === 401) {
      toast('error', 'Your session has expired. Please sign in again.');
      setTimeout(() => {
        location.href = SIGNIN + '?continue=' + encodeURIComponent(location.href);
      }, 500);
      return;
    }
    if (resp.status === 403) return toast('error', 'Failed to generate content: permission denied.');
    if (resp.status >= 500) return toast('error', 'An internal error has occurred.');
    toast('error', 'Failed to generate content. Please try again.');
  }

  // ------------------------------------------------------------------------------ conversation
  function addTurn(role, text) {
    const turn = document.createElement('ms-chat-turn');
    const box = document.createElement('div');
    box.className = 'chat-turn-container ' + role;
    turn.append(box);
    const textChunk = document.createElement('ms-text-chunk');
    if (role === 'model') {
      const thought = document.createElement('ms-thought-chunk');
      thought.hidden = true;
      box.append(thought);
    }
    textChunk.textContent = text;
    box.append(textChunk);
    ui.session.append(turn);
    return box;
  }

  // Finds each complete chunk `[...]` at depth 1 of the growing top-level array, across reads.
  class ChunkScanner {
    constructor() {
      this.buf = ''; this.pos = 0; this.depth = 0; this.start = -1;
      this.inString = false; this.escaped = false; this.finished = false;
    }
    push(text) {
      const out = [];
      this.buf += text;
      for (; this.pos < this.buf.length; this.pos++) {
        const c = this.buf[this.pos];
        if (this.inString) {
          if (this.escaped) this.escaped = false;
          else if (c === '\\') this.escaped = true;
          else if (c === '"') this.inString = false;
        } else if (c === '"') {
          this.inString = true;
        } else if (c === '[') {
          if (++this.depth === 2) this.start = this.pos;
        } else if (c === ']') {
          if (--this.depth === 1) out.push(JSON.parse(this.buf.slice(this.start, this.pos + 1)));
          else if (this.depth === 0) this.finished = true;
        }
      }
      // Keep only the unfinished chunk so long answers stay linear.
      const keep = this.depth >= 2 ? this.start : this.pos;
      this.buf = this.buf.slice(keep);
      this.pos -= keep;
      if (this.start >= 0) this.start -= keep;
      return out;
    }
  }

  function renderChunk(chunk, box, answer) {
    const candidate = chunk && chunk[0] && chunk[0][0];
    if (!candidate) return;
    const parts = (candidate[0] && candidate[0][0]) || [];
    for (const part of parts) {
      if (!Array.isArray(part) || typeof part[1] !== 'string') continue;
      if (part[12] === 1) {
        const thought = $('ms-thought-chunk', box);
        thought.hidden = false;
        thought.append(document.createTextNode(part[1]));
      } else {
        answer.push(part[1]);
        $('ms-text-chunk', box).append(document.createTextNode(part[1]));
      }
    }
  }

  async function send() {
    if (controller || !model || ui.textarea.value.trim() === '') return;
    const prompt = ui.textarea.value;
    clearNotices();
    turns.push({role: 'user', text: prompt});
    addTurn('user', prompt);
    ui.textarea.value = '';
    controller = new AbortController();
    refreshRun();
    const body = {
      model: model.name,
      contents: turns.map(t => ({role: t.role, text: t.text})),
      temperature: Number(ui.temperature.value),
      topP: Number(ui.topP.value),
      maxOutputTokens: parseInt(ui.maxTokens.value, 10) || null,
      stopSequences: [...ui.chips.querySelectorAll('mat-chip .chip-text')].map(c => c.textContent),
      thinking: ui.thinking.getAttribute('aria-checked') === 'true',
      thinkingBudget: parseInt($('input', ui.budgetWrap).value, 10) || null,
      temporary: ui.temporary.getAttribute('aria-pressed') === 'true',
      token: pageToken + '.' + (++requestCounter),
    };
    const answer = [];
    let box = null;
    try {
      const resp = await fetch(RPC + 'GenerateContent', {
        method: 'POST', credentials: 'same-origin', signal: controller.signal,
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
      });
      if (!resp.ok) {
        await showHttpError(resp);
        return;
      }
      box = addTurn('model', '');
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      const scanner = new ChunkScanner();
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        for (const chunk of scanner.push(decoder.decode(value, {stream: true}))) {
          renderChunk(chunk, box, answer);
        }
      }
      if (!scanner.finished) throw new Error('the answer stream ended early');
    } catch (e) {
      if (e.name !== 'AbortError') toast('warning', 'Failed to generate content. Please try again.');
    } finally {
      if (box) turns.push({role: 'model', text: answer.join('')});
      controller = null;
      refreshRun();
    }
  }

  // ------------------------------------------------------------------------------ new chat
  function resetChat() {
    if (controller) controller.abort();
    turns = [];
    ui.session.replaceChildren();
    ui.textarea.value = '';
    clearNotices();
    refreshRun();
  }

  function confirmDiscard() {
    const dialog = document.createElement('mat-dialog-container');
    dialog.setAttribute('role', 'dialog');
    dialog.innerHTML = '<div class="mat-mdc-dialog-inner-container">' +
      '<h2>Discard unsaved changes?</h2><p>This chat will be lost.</p><div class="actions">' +
      '<button type="button" class="cancel">Cancel</button>' +
      '<button type="button" class="discard">Discard and continue</button></div></div>';
    $('.cancel', dialog).onclick = () => dialog.remove();
    $('.discard', dialog).onclick = () => { dialog.remove(); resetChat(); };
    ui.overlay.replaceChildren(dialog);
  }

  // ------------------------------------------------------------------------------ settings
  function syncSlider(slider) {
    const [range, number] = slider.querySelectorAll('input');
    range.addEventListener('input', () => { number.value = range.value; });
    number.addEventListener('input', () => { range.value = number.value; });
    number.addEventListener('change', () => { range.value = number.value; });
  }

  function addStopChip() {
    const value = ui.stopInput.value;
    if (!value) return;
    ui.stopInput.value = '';
    const chip = document.createElement('mat-chip');
    const text = document.createElement('span');
    text.className = 'chip-text';
    text.textContent = value;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'remove-button';
    remove.setAttribute('aria-label', 'Remove ' + value);
    remove.textContent = '\u00d7';
    remove.onclick = () => chip.remove();
    chip.append(text, remove);
    ui.chips.append(chip);
  }

  // ------------------------------------------------------------------------------ wiring
  ui.textarea.addEventListener('input', refreshRun);
  ui.textarea.addEventListener('change', refreshRun);
  ui.textarea.addEventListener('keydown', e => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      send();
    }
  });
  ui.run.addEventListener('click', e => {
    e.preventDefault();
    if (controller) controller.abort();
    else send();
  });
  ui.newChat.addEventListener('click', () => {
    if (turns.length || controller) confirmDiscard();
    else resetChat();
  });
  ui.temporary.addEventListener('click', () => {
    const on = ui.temporary.getAttribute('aria-pressed') !== 'true';
    ui.temporary.setAttribute('aria-pressed', String(on));
  });
  ui.thinking.addEventListener('click', () => {
    const on = ui.thinking.getAttribute('aria-checked') !== 'true';
    ui.thinking.setAttribute('aria-checked', String(on));
    ui.budgetWrap.hidden = !on;
  });
  ui.stopInput.addEventListener('keydown', e => {
    if (e.key === 'Enter') {
      e.preventDefault();
      addStopChip();
    }
  });
  ui.stopInput.addEventListener('change', addStopChip);
  ui.stopInput.addEventListener('blur', addStopChip);
  document.querySelectorAll('ms-slider').forEach(syncSlider);
  refreshRun();
  loadModels().catch(() => toast('error', 'Failed to load the list of models.'));
})();
