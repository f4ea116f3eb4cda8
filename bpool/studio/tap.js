// bpool tap: an init script that tees the page's own RPC responses to Python while they stream.
//
// It wraps window.fetch and XMLHttpRequest (the live page uses XHR to a cross-origin RPC host).
// A request is tapped only when the last segment of its URL path is exactly one of
// config.methods: "GenerateContent" must not match StreamGenerateContentPerUserQuota or
// CountTokens. For each tapped request it posts messages tagged with a per-request id and a
// sequence number:
//   {id, seq, kind, event: "open",  url, model}      sent; model = the request body's [0]
//                                                    (+ body, its text, when config.bodies)
//   {id, seq, kind, event: "start", url, status}     response headers arrived (HTTP status)
//   {id, seq, kind, event: "data",  data}            a piece of the body, already decoded text
//   {id, seq, kind, event: "end"}                    the body is complete
//   {id, seq, kind, event: "error", message}         aborted / network error / body cut
// and once per document {event: "hello", world} ("page" when it runs in the page's own world).
// Messages go to the binding config.binding: a Playwright binding takes the object, a raw CDP
// binding (config.json, Chromium) takes one string, the message as JSON. Where that binding is
// not visible (a main-world script in Camoufox) they go as a DOM event config.relay, which a
// relay script in the automation's world forwards. The page gets its requests and responses untouched.
// Python replaces the config object at the end with the values of its selector table.
(function (config) {
  'use strict';
  if (window.top !== window) return;
  const marker = Symbol.for('bpool.tap');
  if (window[marker]) return;
  Object.defineProperty(window, marker, {value: true});

  const post = (msg) => {
    try {
      const binding = globalThis[config.binding] || window[config.binding];
      if (typeof binding === 'function') {
        const r = binding(config.json ? JSON.stringify(msg) : msg);
        if (r && typeof r.catch === 'function') r.catch(() => {});
      } else if (config.relay) {
        window.dispatchEvent(new CustomEvent(config.relay, {detail: JSON.stringify(msg)}));
      }
    } catch (e) { /* the page must never notice the tap */ }
  };
  const kindOf = (url) => {
    let path = '';
    try { path = new URL(String(url), location.href).pathname; } catch (e) { return null; }
    const method = path.slice(path.lastIndexOf('/') + 1);
    return config.methods.includes(method) ? method : null;
  };

  // The model a request is for: `[0]` of the positional JSON body ("models/<id>"), or the
  // `model` field of an object body. '' when the body cannot be read.
  const modelOfText = (text) => {
    if (typeof text !== 'string' || !text) return '';
    const m = /^\s*\[\s*"((?:[^"\\]|\\.)*)"/.exec(text);
    if (m) { try { return JSON.parse('"' + m[1] + '"'); } catch (e) { return ''; } }
    if (!/^\s*\{/.test(text)) return '';
    try {
      const v = JSON.parse(text);
      return v && typeof v.model === 'string' ? v.model : '';
    } catch (e) { return ''; }
  };
  const bodyText = (body) => {  // a string, or a promise of one, or '' (unreadable)
    try {
      if (body == null) return '';
      if (typeof body === 'string') return body;
      if (body instanceof URLSearchParams) return body.toString();
      if (body instanceof ArrayBuffer) return new TextDecoder().decode(body);
      if (ArrayBuffer.isView(body)) return new TextDecoder().decode(body);
      if (typeof Blob === 'function' && body instanceof Blob) return body.text();
    } catch (e) { /* fall through */ }
    return '';
  };
  // What "open" says about the request: its model, and its whole text only when asked
  // (`bpool doctor --capture`; a job's prompt need not cross the binding twice).
  const opened = (url, text) => {
    const info = {url, model: modelOfText(text)};
    if (config.bodies) info.body = typeof text === 'string' ? text : '';
    return info;
  };

  const salt = Math.random().toString(36).slice(2, 8);
  let counter = 0;
  // `text` (the request body) may be a promise (a Blob or Request body): then "open" and
  // everything after it wait.
  const channel = (kind, url, text) => {
    const id = salt + '-' + (++counter);
    let seq = 0;
    let queue = null;
    const emit = (event, extra) => post(Object.assign({id, seq: seq++, kind, event}, extra || {}));
    const send = (event, extra) => { if (queue) queue.push([event, extra]); else emit(event, extra); };
    if (text && typeof text.then === 'function') {
      queue = [];
      text.then((t) => t, () => '').then((t) => {
        emit('open', opened(url, t));
        const held = queue;
        queue = null;
        for (const [event, extra] of held) emit(event, extra);
      });
    } else {
      emit('open', opened(url, text));
    }
    return send;
  };
  const errName = (e) => String((e && (e.name || e.message)) || e);

  // ---------------------------------------------------------------- fetch
  const origFetch = window.fetch;
  if (typeof origFetch === 'function') {
    const tapped = function (input, init) {
      let url = '';
      const isRequest = typeof Request === 'function' && input instanceof Request;
      try { url = isRequest ? input.url : String(input); } catch (e) { url = ''; }
      const kind = kindOf(url);
      let text = '';
      if (kind) {
        try {
          if (init && init.body != null) text = bodyText(init.body);
          else if (isRequest) text = input.clone().text();
        } catch (e) { text = ''; }
      }
      const pending = origFetch.apply(this, arguments);
      if (!kind) return pending;
      const send = channel(kind, url, text);
      return pending.then((resp) => {
        send('start', {url: resp.url || url, status: resp.status});
        let copy = null;
        try { copy = resp.clone(); } catch (e) { send('error', {message: 'clone: ' + errName(e)}); }
        if (copy) {
          (async () => {
            const decoder = new TextDecoder();
            try {
              if (copy.body) {
                const reader = copy.body.getReader();
                for (;;) {
                  const {done, value} = await reader.read();
                  if (done) break;
                  const text = decoder.decode(value, {stream: true});
                  if (text) send('data', {data: text});
                }
              }
              const tail = decoder.decode();
              if (tail) send('data', {data: tail});
              send('end');
            } catch (e) {
              send('error', {message: errName(e)});
            }
          })();
        }
        return resp;
      }, (err) => {
        send('error', {message: errName(err)});
        throw err;
      });
    };
    window.fetch = tapped;
  }

  // ---------------------------------------------------------------- XMLHttpRequest
  const XHR = window.XMLHttpRequest;
  if (typeof XHR === 'function') {
    const urls = new WeakMap();
    const origOpen = XHR.prototype.open;
    const origSend = XHR.prototype.send;
    XHR.prototype.open = function (method, url) {
      try { urls.set(this, String(url)); } catch (e) { /* ignore */ }
      return origOpen.apply(this, arguments);
    };
    XHR.prototype.send = function (body) {
      const url = urls.get(this);
      const kind = url ? kindOf(url) : null;
      if (kind) {
        let text = '';
        try { text = bodyText(body); } catch (e) { text = ''; }
        tapXhr(this, kind, url, text);
      }
      return origSend.apply(this, arguments);
    };
    const tapXhr = (xhr, kind, url, text) => {
      const send = channel(kind, url, text);
      let started = false;
      let seen = 0;
      const textual = () => xhr.responseType === '' || xhr.responseType === 'text';
      const flush = () => {  // true when it handed on new data
        if (!started && xhr.readyState >= 2 && xhr.status) {
          started = true;
          send('start', {url: xhr.responseURL || url, status: xhr.status});
        }
        if (started && xhr.readyState >= 3 && textual()) {
          const text = xhr.responseText;
          if (text.length > seen) {
            send('data', {data: text.slice(seen)});
            seen = text.length;
            return true;
          }
        }
        return false;
      };
      // Chromium fires progress events (and readystatechange while loading) only for the first
      // piece and then at most every 50 ms, but responseText grows as data arrives: a poll
      // while the body streams hands each piece on without that wait. Data comes in bursts (a
      // first read often holds only the start of the reply), so a look that found some is
      // followed by one more CHASE_MS later, a few times in a row at most.
      const CHASE_MS = 2;
      const CHASE_MAX = 3;
      let poll = null;
      let chase = null;
      let chased = 0;
      const look = () => {
        if (!flush()) { chased = 0; return; }
        if (chase !== null || chased >= CHASE_MAX || xhr.readyState !== 3) return;
        chased++;
        chase = setTimeout(() => { chase = null; look(); }, CHASE_MS);
      };
      let failure = null;
      xhr.addEventListener('readystatechange', () => {
        look();
        if (xhr.readyState === 3 && poll === null) poll = setInterval(look, config.pollMs);
      });
      xhr.addEventListener('progress', look);
      for (const name of ['abort', 'error', 'timeout']) {
        xhr.addEventListener(name, () => { failure = failure || name; });
      }
      xhr.addEventListener('loadend', () => {
        if (poll !== null) clearInterval(poll);
        if (chase !== null) clearTimeout(chase);
        try {
          flush();
          if (failure || !started) {
            send('error', {message: failure || 'no response'});
            return;
          }
          if (!textual() && xhr.response != null) {
            const r = xhr.response;
            const text = r instanceof ArrayBuffer ? new TextDecoder().decode(r)
              : (typeof r === 'string' ? r : JSON.stringify(r));
            if (text) send('data', {data: text});
          }
          send('end');
        } catch (e) {
          send('error', {message: errName(e)});
        }
      });
    };
  }

  // An automation world in Firefox sees the page window through an Xray wrapper.
  post({event: 'hello', world: typeof window.wrappedJSObject === 'undefined' ? 'page' : 'isolated'});
})(/*BPOOL_TAP_CONFIG*/{"binding": "__bpoolTap", "methods": ["GenerateContent", "ListModels"], "relay": "", "pollMs": 10});
