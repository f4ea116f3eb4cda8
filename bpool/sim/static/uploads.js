// Attaching files to the prompt, as the real page does it (CJack browser_utils
// page_controller_modules/input.py; nexus session.py): the "Insert assets" button
// (data-test-id="add-media-button") opens a menu in the CDK overlay whose "Upload a file" item
// holds a hidden <input type="file">. Choosing files does not close the menu (its transparent
// backdrop stays until Escape or a click on it: CJack presses Escape afterwards). Each file shows
// as a chip in the prompt box while it uploads; Run stays disabled until every upload is done
// (CJack waits for Run to be enabled). The first upload of a profile that has not acknowledged it
// opens a copyright notice (preference fileCopyrightAcknowledged, pre-set by CJack).
// Assumptions: the chip's markup, the upload time (UPLOAD_MS), the notice's wording and button.
(() => {
  'use strict';
  const S = window.SimStudio;
  const {el, $, prefs} = S.ui;
  const UPLOAD_MS = 250;
  let files = [];  // [{name, mime, size, b64, done, chip}]
  let menu = null;
  let generation = 0;  // grows on clear(), so a late upload of a discarded chat is dropped

  const chips = el('div', {class: 'file-chips'});
  const addMedia = el('button', {type: 'button', class: 'add-media-button',
    'data-test-id': 'add-media-button', 'aria-label': 'Insert images, videos, audio, or files',
    text: '+'});
  const row = $('.prompt-row');
  row.prepend(addMedia);
  row.parentNode.insertBefore(chips, row);

  function closeMenu() {
    if (!menu) return;
    menu.close();
    menu = null;
    addMedia.setAttribute('aria-expanded', 'false');
  }

  function openMenu() {
    if (menu) return;
    const input = el('input', {type: 'file', class: 'file-input', multiple: true, hidden: true,
      accept: 'image/*,application/pdf'});
    input.addEventListener('change', () => { add([...input.files]); input.value = ''; });
    const item = el('button', {type: 'button', role: 'menuitem', 'aria-label': 'Upload a file',
      onclick: () => input.click()}, 'Upload a file', input);
    const drive = el('button', {type: 'button', role: 'menuitem', 'aria-label': 'My Drive',
      text: 'My Drive', disabled: true});
    menu = S.ui.open({backdrop: 'transparent', onBackdrop: closeMenu, onEscape: closeMenu,
      pane: el('div', {role: 'menu', class: 'mat-mdc-menu-panel'}, item, drive)});
    addMedia.setAttribute('aria-expanded', 'true');
  }

  function copyrightNotice() {
    let h = null;
    const ok = () => { prefs.set({fileCopyrightAcknowledged: true}); h.close(); };
    h = S.ui.dialog([
      el('h2', {text: 'Copyright notice'}),
      el('p', {text: 'You are responsible for the files you upload. Make sure you have the ' +
        'rights to use them and that they follow the copyright policy.'}),
      el('div', {class: 'actions'},
        el('button', {type: 'button', class: 'ms-button-primary',
          'aria-label': 'Acknowledge copyright notice', text: 'Acknowledge', onclick: ok}))]);
  }

  function base64Of(buffer) {
    const bytes = new Uint8Array(buffer);
    let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(bin);
  }

  function add(chosen) {
    if (!chosen.length) return;
    if (!prefs.get().fileCopyrightAcknowledged) copyrightNotice();
    const mine = generation;
    for (const file of chosen) {
      const entry = {name: file.name, mime: file.type || 'application/octet-stream',
                     size: file.size, b64: null, done: false};
      entry.chip = el('div', {class: 'file-chip uploading', title: file.name},
        el('span', {class: 'file-name', text: file.name}),
        el('mat-progress-spinner', {role: 'progressbar', 'aria-label': 'Uploading'}),
        el('button', {type: 'button', class: 'remove-file', 'aria-label': 'Remove ' + file.name,
                      text: '\u00d7', onclick: () => remove(entry)}));
      files.push(entry);
      chips.append(entry.chip);
      const started = Date.now();
      file.arrayBuffer().then(buffer => {
        const wait = Math.max(0, UPLOAD_MS - (Date.now() - started));
        setTimeout(() => {
          if (mine !== generation || !files.includes(entry)) return;
          entry.b64 = base64Of(buffer);
          entry.done = true;
          entry.chip.classList.remove('uploading');
          $('mat-progress-spinner', entry.chip).remove();
          if (entry.mime.startsWith('image/')) {
            entry.chip.prepend(el('img', {class: 'thumbnail', alt: entry.name,
              src: 'data:' + entry.mime + ';base64,' + entry.b64}));
          }
          S.studio.refresh();
        }, wait);
      });
    }
    S.studio.refresh();
  }

  function remove(entry) {
    files = files.filter(f => f !== entry);
    entry.chip.remove();
    S.studio.refresh();
  }

  function clear() {
    generation++;
    files = [];
    chips.replaceChildren();
    closeMenu();
  }

  // The parts of the next user turn, files first (nexus wire_codec _build_user_content), each
  // inline as [null, null, [mime, base64]] (nexus wire_types AistudioPart.to_wire).
  function take() {
    const parts = files.filter(f => f.done).map(f => ({name: f.name, mime: f.mime, b64: f.b64}));
    files = [];
    chips.replaceChildren();
    return parts;
  }

  addMedia.addEventListener('click', openMenu);
  S.uploads = {busy: () => files.some(f => !f.done), count: () => files.length, take, clear};
})();
