// How the simulated page talks to its RPC host: another origin, called with XMLHttpRequest and
// credentials as the real page does (fetch with the `transport` knob, an older variant), with the
// headers the real page sends. Also the incremental reader of the growing answer body.
(() => {
  'use strict';
  const S = window.SimStudio = window.SimStudio || {};
  const boot = S.boot = JSON.parse(document.getElementById('sim-boot').textContent);
  const SERVICE = 'google.internal.alkali.applications.makersuite.v1.MakerSuiteService';
  const endpoint = method => boot.rpcOrigin + '/$rpc/' + SERVICE + '/' + method;

  // The real page signs each call with a hash of the SAPISID cookie, its timestamp and origin.
  async function authorization() {
    const m = document.cookie.match(/(?:^|;\s*)SAPISID=([^;]+)/);
    if (!m || !window.crypto || !crypto.subtle) return null;
    const ts = Math.floor(Date.now() / 1000);
    const data = new TextEncoder().encode(ts + ' ' + m[1] + ' ' + location.origin);
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-1', data));
    const hex = Array.from(digest, b => b.toString(16).padStart(2, '0')).join('');
    return 'SAPISIDHASH ' + ts + '_' + hex;
  }

  async function headers() {
    const h = {
      'Content-Type': 'application/json+protobuf',
      'X-User-Agent': 'grpc-web-javascript/0.1',
      'X-Goog-Api-Key': boot.apiKey,
      'X-Goog-AuthUser': '0',
      'X-AIStudio-Visit-Id': boot.visitId,
    };
    const auth = await authorization();
    if (auth) h.Authorization = auth;
    return h;
  }

  function abortError() {
    const e = new Error('aborted');
    e.name = 'AbortError';
    return e;
  }

  function viaXhr(method, payload, hdrs, onText, ctl) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', endpoint(method), true);
      xhr.withCredentials = true;
      for (const [k, v] of Object.entries(hdrs)) xhr.setRequestHeader(k, v);
      let seen = 0;
      const feed = () => {
        const text = xhr.responseText;
        if (xhr.status === 200 && onText && text.length > seen) onText(text.slice(seen));
        seen = text.length;
      };
      xhr.onprogress = feed;
      xhr.onload = () => { feed(); resolve({status: xhr.status, text: xhr.responseText}); };
      xhr.onerror = () => reject(new Error('network error'));
      xhr.onabort = () => reject(abortError());
      ctl.cancel = () => xhr.abort();
      xhr.send(payload);
    });
  }

  async function viaFetch(method, payload, hdrs, onText, ctl) {
    const ac = new AbortController();
    ctl.cancel = () => ac.abort();
    const resp = await fetch(endpoint(method), {
      method: 'POST', mode: 'cors', credentials: 'include', headers: hdrs, body: payload,
      signal: ac.signal,
    });
    if (resp.status !== 200 || !resp.body) return {status: resp.status, text: await resp.text()};
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (;;) {
      const {done, value} = await reader.read();
      const piece = done ? decoder.decode() : decoder.decode(value, {stream: true});
      if (piece) {
        text += piece;
        if (onText) onText(piece);
      }
      if (done) break;
    }
    return {status: resp.status, text};
  }

  // call('GenerateContent', bodyText, {onText, ctl}) -> {status, text}; once ctl.aborted is set,
  // ctl.cancel() stops the call in flight and later calls throw AbortError at once.
  async function call(method, payload, opts = {}) {
    const ctl = opts.ctl || {};
    if (ctl.aborted) throw abortError();
    const hdrs = await headers();
    if (ctl.aborted) throw abortError();
    const via = boot.knobs.transport === 'fetch' ? viaFetch : viaXhr;
    return via(method, payload, hdrs, opts.onText, ctl);
  }

  // Finds each complete chunk of the growing body across reads: chunks are the arrays at depth 3
  // of [[chunk, ...]] (depth 2 of the older flat [chunk, ...]).
  class ChunkScanner {
    constructor(nesting) {
      this.chunkDepth = nesting === 'flat' ? 2 : 3;
      this.buf = ''; this.pos = 0; this.depth = 0; this.start = -1;
      this.inString = false; this.escaped = false;
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
          if (++this.depth === this.chunkDepth) this.start = this.pos;
        } else if (c === ']') {
          if (this.depth-- === this.chunkDepth && this.start >= 0) {
            out.push(JSON.parse(this.buf.slice(this.start, this.pos + 1)));
            this.start = -1;
          }
        }
      }
      const keep = this.start >= 0 ? this.start : this.pos;  // only the unfinished chunk stays
      this.buf = this.buf.slice(keep);
      this.pos -= keep;
      if (this.start >= 0) this.start = 0;
      return out;
    }
  }

  const isFrame = v => Array.isArray(v) && v[0] === null && Array.isArray(v[1])
    && typeof v[1][0] === 'number';

  // The error frame of a complete body, in the chunk list or as the whole body; null if none.
  function errorFrame(text) {
    let value;
    try { value = JSON.parse(text); } catch (e) { return null; }
    if (isFrame(value)) return {code: value[1][0], message: String(value[1][1] || '')};
    const list = Array.isArray(value) && Array.isArray(value[0]) && Array.isArray(value[0][0])
      ? value[0] : value;
    const frame = Array.isArray(list) ? list.find(isFrame) : null;
    return frame ? {code: frame[1][0], message: String(frame[1][1] || '')} : null;
  }

  // The code of a non-2xx body `[,[code,"message"]]` (not strict JSON).
  function httpErrorCode(text) {
    const m = /^\[\s*,?\s*\[\s*(\d+)/.exec(text || '');
    return m ? Number(m[1]) : null;
  }

  S.rpc = {call, endpoint, ChunkScanner, isFrame, errorFrame, httpErrorCode, abortError};
})();
