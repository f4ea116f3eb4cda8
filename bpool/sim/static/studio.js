// The simulated studio page: prompt box, Run/Stop, chat turns, New chat, temporary chat, and the
// calls around each run (StreamGenerateContentPerUserQuota, GenerateContent, CreatePrompt /
// UpdatePrompt, CountTokens while typing). Page variants come from the boot data's knobs.
(() => {
  'use strict';
  const S = window.SimStudio;
  const {el, $, prefs, toast, callout, clearNotices} = S.ui;
  const boot = S.boot;
  const knobs = boot.knobs;
  const SIGNIN = '/accounts.google.com/ServiceLogin';
  let requestCounter = 0;  // each request's token is "!<page token>.<n>", n growing: no replays
  let model = null;  // {name, display, maxOut}
  let turns = [];  // [{role: "user"|"model", text}]
  let current = null;  // the run in flight: {abort()}
  let temporary = false;
  let promptId = null;  // set once a non-temporary chat was saved
  let chatId = 0;  // grows with each New chat, so a run that outlives its chat leaves it alone

  // ------------------------------------------------------------------------------ layout variants
  const textarea = el('textarea', {class: 'textarea', 'aria-label': 'Enter a prompt', rows: '3',
                                   placeholder: 'Start typing a prompt'});
  const run = knobs.run_button === 'legacy'
    ? el('button', {type: 'submit', class: 'run-button', 'aria-label': 'Run'})
    : el('button', {type: 'button', class: 'run-button ms-button-primary ctrl-enter-submits'});
  const tokenCount = el('span', {class: 'token-count'});
  const wrapper = el('ms-prompt-input-wrapper', {},
    el('div', {class: 'prompt-row'}, el('ms-autosize-textarea', {}, textarea), el('ms-run-button', {}, run)),
    tokenCount);
  $('footer.prompt-footer').append(knobs.prompt_box === 'legacy' ? el('ms-prompt-box', {}, wrapper) : wrapper);

  const toolbar = $('.toolbar');
  const newChat = el('button', {type: 'button', class: 'new-chat', 'aria-label': 'New chat', text: 'New chat'});
  const indicator = $('ms-incognito-mode-indicator');
  let tempButton = null;
  let moreActions = null;
  if (knobs.temp_chat === 'legacy') {
    tempButton = el('button', {type: 'button', 'data-test-incognito-toggle': true,
                               'aria-pressed': 'false', text: 'Temporary chat'});
  } else if (knobs.temp_chat === 'menu') {
    moreActions = el('button', {type: 'button', 'aria-label': 'View more actions',
                                'aria-expanded': 'false', text: '\u22ee'});
  } else {
    tempButton = el('button', {type: 'button', 'aria-label': 'Temporary chat toggle',
                               class: 'ms-button-borderless', text: 'Temporary chat'});
  }
  const settingsToggle = knobs.settings_panel === 'always' ? null
    : el('button', {type: 'button', 'aria-label': 'Toggle run settings panel', text: 'Run settings'});
  toolbar.append(...[newChat, tempButton, moreActions, settingsToggle].filter(Boolean));

  // ------------------------------------------------------------------------------ state display
  let shownBusy = null;
  function refresh() {
    // Children change only when the button turns into Stop or back: replacing them on every
    // keystroke would drop a click whose mousedown landed on a replaced node.
    if (shownBusy !== !!current) {
      shownBusy = !!current;
      if (current) {
        run.setAttribute('aria-label', 'Stop generating');
        run.replaceChildren('Stop');
      } else {
        if (knobs.run_button === 'legacy') run.setAttribute('aria-label', 'Run');
        else run.removeAttribute('aria-label');
        run.replaceChildren('Run', el('span', {class: 'shortcut', text: ' Ctrl \u23ce'}));
      }
    }
    const up = S.uploads;
    run.disabled = !current && (!model || (textarea.value.trim() === '' && !(up && up.count()))
                                || !!(up && up.busy()));
    newChat.disabled = !current && turns.length === 0;  // CJack: not enabled on an empty new chat
    indicator.hidden = !temporary;
    if (tempButton) {
      tempButton.classList.toggle('ms-button-active', temporary);
      if (knobs.temp_chat === 'legacy') tempButton.setAttribute('aria-pressed', String(temporary));
    }
  }

  function setTemporary(on) {
    temporary = on;
    refresh();
  }

  function openMoreActions() {
    let h = null;
    const close = () => { h.close(); moreActions.setAttribute('aria-expanded', 'false'); };
    const item = el('button', {type: 'button', role: 'menuitem', 'aria-label': 'Temporary chat toggle',
      onclick: () => { setTemporary(!temporary); close(); }}, 'Temporary chat',
      temporary ? el('span', {'data-test-incognito-checkmark': true, text: ' \u2713'}) : null);
    h = S.ui.open({backdrop: 'transparent', pane: el('div', {role: 'menu', class: 'mat-mdc-menu-panel'}, item),
                   onBackdrop: close, onEscape: close, position: 'top-right'});
    moreActions.setAttribute('aria-expanded', 'true');
  }

  // ------------------------------------------------------------------------------ conversation
  function turnBox(role, text) {
    const box = el('div', {class: 'chat-turn-container ' + role});
    if (role === 'model') box.append(el('ms-thought-chunk', {hidden: true}));
    box.append(el('ms-text-chunk', {}, el('ms-cmark-node', {class: 'cmark-node', text})));
    return box;
  }

  function addTurn(role, text) {
    const box = turnBox(role, text);
    $('ms-chat-session .chat-view-container').append(el('ms-chat-turn', {}, box));
    return box;
  }

  function render(chunk, view) {
    const cand = Array.isArray(chunk) && Array.isArray(chunk[0]) ? chunk[0][0] : null;
    if (!Array.isArray(cand)) return;
    if (chunk[7]) view.responseId = chunk[7];
    if (cand[1] === 3) view.blocked = true;
    const parts = Array.isArray(cand[0]) && Array.isArray(cand[0][0]) ? cand[0][0] : [];
    for (const part of parts) {
      if (!Array.isArray(part) || typeof part[1] !== 'string') continue;
      const box = view.box();
      if (part[12] === 1) {
        const thought = $('ms-thought-chunk', box);
        thought.hidden = false;
        thought.append(document.createTextNode(part[1]));
      } else {
        view.answer.push(part[1]);
        $('ms-text-chunk ms-cmark-node', box).append(document.createTextNode(part[1]));
      }
    }
  }

  function showFailure(code, message, httpStatus, view) {
    if (code === 16 || httpStatus === 401) {
      toast('error', 'Your session has expired. Please sign in again.');
      setTimeout(() => { location.href = SIGNIN + '?continue=' + encodeURIComponent(location.href); }, 500);
    } else if (code === 8 || httpStatus === 429) {
      callout('error', 'Failed to generate content: user has exceeded quota. Please try again later.');
      toast('error', message || 'You exceeded your current quota.');
    } else if (code === 7 || httpStatus === 403) {
      toast('error', 'Failed to generate content: permission denied.');
      $('ms-cmark-node', view.box()).textContent = 'An internal error has occurred.';
    } else if (code === 3 || httpStatus === 400) {
      toast('error', 'Failed to generate content: ' + (message || 'invalid argument.'));
    } else {
      toast('error', 'An internal error has occurred.');
    }
  }

  async function save(responseId) {
    const method = promptId ? 'UpdatePrompt' : 'CreatePrompt';
    const body = [promptId, turns.map(t => [[[null, t.text]], t.role]), model.name, responseId];
    const res = await S.rpc.call(method, JSON.stringify(body)).catch(() => null);
    if (!res || res.status !== 200) return;
    promptId = JSON.parse(res.text)[0];
    if (!temporary) history.replaceState(null, '', '/' + promptId);
  }

  async function send() {
    if (current || !model || run.disabled) return;
    if (S.settings.isOpen() && knobs.settings_panel !== 'always') S.settings.close();
    const prompt = textarea.value;
    clearNotices();
    turns.push({role: 'user', text: prompt, files: S.uploads ? S.uploads.take() : []});
    addTurn('user', prompt);
    textarea.value = '';
    tokenCount.textContent = '';
    const ctl = current = {abort() { this.aborted = true; if (this.cancel) this.cancel(); }};
    const myChat = chatId;
    refresh();
    const payload = JSON.stringify(S.settings.requestBody(model.name, turns,
      '!' + boot.pageToken + '.' + (++requestCounter)));
    let modelBox = null;
    const newBox = () => (myChat === chatId ? addTurn('model', '') : turnBox('model', ''));
    const view = {answer: [], responseId: null, blocked: false,
                  box: () => (modelBox = modelBox || newBox())};
    try {
      if (knobs.per_user_quota) {
        await S.rpc.call('StreamGenerateContentPerUserQuota', payload, {ctl}).catch(e => {
          if (e.name === 'AbortError') throw e;
        });
      }
      const scanner = new S.rpc.ChunkScanner(knobs.nesting);
      const res = await S.rpc.call('GenerateContent', payload, {ctl, onText: text => {
        for (const chunk of scanner.push(text)) render(chunk, view);
      }});
      if (res.status !== 200) {
        showFailure(S.rpc.httpErrorCode(res.text), null, res.status, view);
        return;
      }
      const frame = S.rpc.errorFrame(res.text);
      if (frame) {
        showFailure(frame.code, frame.message, 200, view);
        return;
      }
      if (view.blocked) $('ms-cmark-node', view.box()).append(el('span', {class: 'blocked-content',
        text: 'Content blocked: the response was flagged for safety.'}));
      if (!modelBox) view.box();
      if (myChat !== chatId) return;
      turns.push({role: 'model', text: view.answer.join('')});
      if (!temporary && knobs.autosave && view.responseId) await save(view.responseId);
    } catch (e) {
      if (e.name !== 'AbortError') toast('warning', 'Failed to generate content. Please try again.');
      else if (view.answer.length && myChat === chatId) turns.push({role: 'model', text: view.answer.join('')});
    } finally {
      if (current === ctl) current = null;
      refresh();
    }
  }

  // ------------------------------------------------------------------------------ new chat
  function resetChat() {
    chatId++;
    if (current) current.abort();
    current = null;
    turns = [];
    promptId = null;
    $('ms-chat-session .chat-view-container').replaceChildren();
    textarea.value = '';
    tokenCount.textContent = '';
    clearNotices();
    if (S.uploads) S.uploads.clear();
    S.settings.reset();  // New chat restores the model's defaults (JaeWangL's live run)
    setTemporary(false);  // and turns temporary chat off (docs/aistudio-page.md)
    if (location.pathname !== '/prompts/new_chat') history.pushState(null, '', '/prompts/new_chat');
  }

  // ------------------------------------------------------------------------------ model list
  async function loadModels() {
    const res = await S.rpc.call('ListModels', '[]');
    if (res.status === 401) return showFailure(16, null, 401, null);
    if (res.status !== 200) return toast('error', 'Failed to load the list of models.');
    let text = res.text;
    if (text.startsWith(")]}'")) text = text.slice(text.indexOf('\n') + 1);
    const models = JSON.parse(text)[0].map(e => ({name: e[0], display: e[3], maxOut: e[6]}));
    const query = new URLSearchParams(location.search).get('model');
    const fromQuery = query && models.find(m => m.name === 'models/' + query.replace(/^models\//, ''));
    if (fromQuery) prefs.set({promptModel: fromQuery.name});  // assumption: the query is remembered
    model = fromQuery || models.find(m => m.name === prefs.get().promptModel) || models[0];
    S.settings.setModel(model.name);
    refresh();
  }

  // ------------------------------------------------------------------------------ counting tokens
  let countTimer = null;
  function scheduleCount() {
    if (!knobs.count_tokens || !model) return;
    clearTimeout(countTimer);
    countTimer = setTimeout(async () => {
      const text = textarea.value;
      if (!text.trim()) { tokenCount.textContent = ''; return; }
      const body = JSON.stringify([model.name, [[[[null, text]], 'user']]]);
      const res = await S.rpc.call('CountTokens', body).catch(() => null);
      if (res && res.status === 200 && textarea.value === text) {
        tokenCount.textContent = JSON.parse(res.text)[0] + ' tokens';
      }
    }, 300);
  }

  // ------------------------------------------------------------------------------ wiring
  textarea.addEventListener('input', () => { refresh(); scheduleCount(); });
  textarea.addEventListener('change', refresh);
  textarea.addEventListener('keydown', e => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      send();
    }
  });
  run.addEventListener('click', e => {
    e.preventDefault();
    if (current) current.abort();
    else send();
  });
  newChat.addEventListener('click', () => {
    if (turns.length || current) S.ui.confirmDiscard(resetChat);
    else resetChat();
  });
  if (tempButton) tempButton.addEventListener('click', () => setTemporary(!temporary));
  if (moreActions) moreActions.addEventListener('click', openMoreActions);
  if (settingsToggle) settingsToggle.addEventListener('click', () => S.settings.toggleOpen());
  S.studio = {refresh};
  refresh();
  S.ui.freshProfilePopups();
  loadModels().catch(() => toast('error', 'Failed to load the list of models.'));
})();
