// bpool tap: an init script that tees the page's own RPC responses to Python while they stream.
//
// It wraps window.fetch and XMLHttpRequest. For every request whose URL contains one of
// config.patterns it posts, through the exposed binding config.binding, messages tagged with a
// per-request id and a sequence number:
//   {id, seq, kind, event: "open",  url}             the request was sent
//   {id, seq, kind, event: "start", url, status}     response headers arrived (HTTP status)
//   {id, seq, kind, event: "data",  data}            a piece of the body, already decoded text
//   {id, seq, kind, event: "end"}                    the body is complete
//   {id, seq, kind, event: "error", message}         aborted / network error / body cut
// The page gets its response untouched (fetch: the original Response, whose clone we read).
// Python replaces the config object below with the values of its selector table.
(function (config) {
  'use strict';
  if (window.top !== window) return;
  const marker = Symbol.for('bpool.tap');
  if (window[marker]) return;
  Object.defineProperty(window, marker, {value: true});

  const post = (msg) => {
    try {
      const binding = window[config.binding];
      if (typeof binding === 'function') {
        const r = binding(msg);
        if (r && typeof r.catch === 'function') r.catch(() => {});
      }
    } catch (e) { /* the page must never notice the tap */ }
  };
  const kindOf = (url) => {
    const s = String(url);
    for (const p of config.patterns) if (s.includes(p)) return p;
    return null;
  };
  const salt = Math.random().toString(36).slice(2, 8);
  let counter = 0;
  const channel = (kind, url) => {
    const id = salt + '-' + (++counter);
    let seq = 0;
    const send = (event, extra) => post(Object.assign({id, seq: seq++, kind, event}, extra || {}));
    send('open', {url});
    return send;
  };
  const errName = (e) => String((e && (e.name || e.message)) || e);

  // ---------------------------------------------------------------- fetch
  const origFetch = window.fetch;
  if (typeof origFetch === 'function') {
    const tapped = function (input, init) {
      let url = '';
      try { url = (input && typeof input === 'object' && 'url' in input) ? input.url : String(input); }
      catch (e) { url = ''; }
      const kind = kindOf(url);
      const pending = origFetch.apply(this, arguments);
      if (!kind) return pending;
      const send = channel(kind, url);
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
    XHR.prototype.send = function () {
      const url = urls.get(this);
      const kind = url ? kindOf(url) : null;
      if (kind) tapXhr(this, kind, url);
      return origSend.apply(this, arguments);
    };
    const tapXhr = (xhr, kind, url) => {
      const send = channel(kind, url);
      let started = false;
      let seen = 0;
      const textual = () => xhr.responseType === '' || xhr.responseType === 'text';
      const flush = () => {
        if (!started && xhr.readyState >= 2 && xhr.status) {
          started = true;
          send('start', {url: xhr.responseURL || url, status: xhr.status});
        }
        if (started && xhr.readyState >= 3 && textual()) {
          const text = xhr.responseText;
          if (text.length > seen) {
            send('data', {data: text.slice(seen)});
            seen = text.length;
          }
        }
      };
      let failure = null;
      xhr.addEventListener('readystatechange', flush);
      xhr.addEventListener('progress', flush);
      for (const name of ['abort', 'error', 'timeout']) {
        xhr.addEventListener(name, () => { failure = failure || name; });
      }
      xhr.addEventListener('loadend', () => {
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
})(/*BPOOL_TAP_CONFIG*/{"binding": "__bpoolTap", "patterns": ["GenerateContent", "ListModels"]});
