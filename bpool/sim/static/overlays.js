// Dialogs, menus, popups and notices of the simulated page, built like Angular Material's CDK
// overlay: a backdrop (.cdk-overlay-backdrop) that takes every click behind it, then a pane.
(() => {
  'use strict';
  const S = window.SimStudio;
  const $ = (sel, root = document) => root.querySelector(sel);
  const PREF_KEY = 'aiStudioUserPreference';
  const COOKIE_ACK_KEY = 'glueCookieNotificationBarAcknowledged';  // assumption: where it is kept

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    node.append(...children.filter(c => c !== null && c !== undefined));
    return node;
  }

  const prefs = {
    get() {
      try { return JSON.parse(localStorage.getItem(PREF_KEY) || '{}') || {}; } catch (e) { return {}; }
    },
    set(patch) { localStorage.setItem(PREF_KEY, JSON.stringify({...prefs.get(), ...patch})); },
  };

  // open({backdrop: 'dark'|'transparent'|null, pane, onBackdrop, onEscape}) -> {close()}
  function open({backdrop = 'dark', pane, onBackdrop = null, onEscape = null, position = 'center'}) {
    const container = $('.cdk-overlay-container');
    const parts = [];
    if (backdrop) {
      const bd = el('div', {class: 'cdk-overlay-backdrop cdk-overlay-backdrop-showing ' +
        (backdrop === 'dark' ? 'cdk-overlay-dark-backdrop' : 'cdk-overlay-transparent-backdrop')});
      bd.addEventListener('click', () => { if (onBackdrop) onBackdrop(); });
      parts.push(bd);
    }
    const wrapper = el('div', {class: 'cdk-global-overlay-wrapper pos-' + position},
      el('div', {class: 'cdk-overlay-pane'}, pane));
    parts.push(wrapper);
    container.append(...parts);
    const onKey = e => { if (e.key === 'Escape' && onEscape) onEscape(); };
    document.addEventListener('keydown', onKey);
    return {close() { parts.forEach(p => p.remove()); document.removeEventListener('keydown', onKey); }};
  }

  function dialog(inner, {backdrop = 'dark', closable = false} = {}) {
    const box = el('mat-dialog-container', {class: 'mat-mdc-dialog-container', role: 'dialog',
      'aria-modal': 'true'}, el('div', {class: 'mat-mdc-dialog-inner-container'}, ...inner));
    let handle = null;
    const close = () => handle && handle.close();
    handle = open({backdrop, pane: box, onBackdrop: closable ? close : null,
                   onEscape: closable ? close : null});
    return handle;
  }

  // ------------------------------------------------------------------------------ notices
  function toast(kind, message) {
    const node = el('div', {class: 'toast ' + kind},
      el('span', {class: 'content-text', text: message}),
      el('button', {type: 'button', 'aria-label': 'Dismiss', text: '\u00d7',
                    onclick: () => node.remove()}));
    $('.toast-container').append(node);
    setTimeout(() => node.remove(), 15000);
  }

  function callout(kind, message) {
    $('.callouts').append(el('ms-callout', {class: kind + '-callout'},
      el('div', {class: 'message', text: message})));
  }

  function clearNotices() {
    $('.toast-container').replaceChildren();
    $('.callouts').replaceChildren();
  }

  // ------------------------------------------------------------------------------ fresh-profile popups
  function confirmDiscard(onDiscard) {
    let h = null;
    h = dialog([
      el('h2', {text: 'Discard unsaved changes?'}),
      el('p', {text: 'This chat will be lost.'}),
      el('div', {class: 'actions'},
        el('button', {type: 'button', class: 'ms-button-borderless', text: 'Cancel',
                      onclick: () => h.close()}),
        el('button', {type: 'button', class: 'ms-button-primary', text: 'Discard and continue',
                      onclick: () => { h.close(); onDiscard(); }})),
    ], {closable: true});
  }

  // The welcome dialog of a fresh account: its backdrop does not close it (assumption: a Close
  // icon and "Got it" do); dismissing it is remembered as warmWelcomeDisplayed (CJack pre-sets it).
  function welcome(then) {
    let h = null;
    const done = () => { h.close(); prefs.set({warmWelcomeDisplayed: true}); then(); };
    h = dialog([el('ms-g1-welcome-dialog', {},
      el('button', {type: 'button', class: 'close-button', 'aria-label': 'Close', text: '\u00d7',
                    onclick: done}),
      el('h2', {text: 'Welcome to Google AI Studio'}),
      el('p', {text: 'Build with the latest Gemini models.'}),
      el('div', {class: 'actions'},
        el('button', {type: 'button', class: 'ms-button-primary', text: 'Got it', onclick: done})))]);
  }

  // A feature tip with "Got it" (docs/aistudio-page.md: "Got it" overlay buttons); its transparent
  // backdrop swallows clicks until it is dismissed.
  function featureTip() {
    let h = null;
    const pane = el('div', {class: 'feature-tip', role: 'dialog'},
      el('p', {text: 'New: run settings now live in a panel. Open it from the toolbar.'}),
      el('button', {type: 'button', class: 'ms-button-primary', text: 'Got it',
                    onclick: () => { h.close(); prefs.set({hasSeenRunSettingsTip: true}); }}));
    h = open({backdrop: 'transparent', pane, position: 'top-right'});
  }

  function cookieBar() {
    if (localStorage.getItem(COOKIE_ACK_KEY)) return;
    const bar = el('div', {class: 'glue-cookie-notification-bar', role: 'alertdialog',
                           'aria-label': 'Cookie notification'},
      el('p', {class: 'glue-cookie-notification-bar__text',
               text: 'Google serves cookies to analyze traffic to this site.'}),
      el('a', {class: 'glue-cookie-notification-bar__more', href: '#', text: 'See details'}),
      el('button', {type: 'button', class: 'glue-cookie-notification-bar__accept', text: 'OK, got it',
                    onclick: () => { localStorage.setItem(COOKIE_ACK_KEY, '1'); bar.remove(); }}));
    document.body.append(bar);
  }

  // An account that never accepted the terms: a consent dialog over the page (iBUHub's
  // first-run agreement handling looks for it in dialog containers); its RPCs answer code 7.
  function termsConsent() {
    const box = el('input', {type: 'checkbox', id: 'tos-consent', class: 'mdc-checkbox__native-control'});
    const go = el('button', {type: 'button', class: 'ms-button-primary', text: 'Continue', disabled: true});
    box.addEventListener('change', () => { go.disabled = !box.checked; });
    go.addEventListener('click', async () => {
      go.disabled = true;
      const res = await S.rpc.call('AcceptTermsOfService', '[]').catch(() => null);
      if (res && res.status === 200) location.reload();
      else { go.disabled = false; toast('error', 'Something went wrong. Please try again.'); }
    });
    dialog([el('ms-tos-dialog', {},
      el('h2', {text: 'Before you start'}),
      el('mat-checkbox', {class: 'mat-mdc-checkbox'}, box,
        el('label', {for: 'tos-consent', text: 'I consent to the Google APIs Terms of Service and ' +
          'the Gemini API Additional Terms of Service, and I acknowledge that I have read the ' +
          'Google Privacy Policy.'})),
      el('div', {class: 'actions'}, go))]);
  }

  function freshProfilePopups() {
    const k = S.boot.knobs;
    if (k.cookie_bar) cookieBar();
    if (S.boot.tos) return termsConsent();
    const p = prefs.get();
    const tip = () => { if (k.got_it && !prefs.get().hasSeenRunSettingsTip) featureTip(); };
    if (k.welcome_dialog && !p.warmWelcomeDisplayed) welcome(tip);
    else tip();
  }

  S.ui = {el, $, prefs, open, dialog, toast, callout, clearNotices, confirmDiscard,
          freshProfilePopups};
})();
