"""The Python end of tap.js: response pieces of the page's own RPCs, per request, in order.

tap.js posts `{id, seq, kind, event, ...}` messages through an exposed binding. `Tap.on_message`
(the binding callback) files them per request id, restores `seq` order, and hands each
GenerateContent request to the driver as a `TapStream` it can iterate while the answer streams;
`TapStream.model` is the model the page's request body names. ListModels bodies are kept whole:
the latest one is the account's model list. The script's "hello" (once per document) says the
tap is live and in which world it runs. With `keep_bodies` (set before the scripts are made:
`bpool doctor --capture`) every tapped request is kept whole, request body included, in `kept`.

Where the browser runs init scripts outside the page's own world (Camoufox since 152.0.4-beta.29),
the tap is installed as a main-world script and reaches the binding through `RELAY_JS`, which
runs in the automation's world and forwards the tap's DOM events (`tap_scripts`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("bpool.tap")

TAP_JS = Path(__file__).with_name("tap.js")
_CONFIG_MARK = "/*BPOOL_TAP_CONFIG*/"
MAX_TRACKED = 64  # old requests the page never finished are forgotten past this
POLL_MS = 10  # how often a streaming XHR's text is looked at between its progress events

# Runs where the binding is visible; forwards what a main-world tap.js dispatches. The detail is
# a JSON string: a string crosses between worlds unchanged, an object would not.
RELAY_JS = """(function (cfg) {
  if (window.top !== window) return;
  window.addEventListener(cfg.event, (e) => {
    // In a Firefox sandbox the binding is on the sandbox's global, not on the page's window.
    const binding = globalThis[cfg.binding] || window[cfg.binding];
    if (typeof binding !== 'function' || typeof e.detail !== 'string') return;
    try {
      const r = binding(JSON.parse(e.detail));
      if (r && typeof r.catch === 'function') r.catch(() => {});
    } catch (err) { /* never disturb the page */ }
  });
})(%s);
"""


def tap_script(binding: str, methods: tuple[str, ...], relay: str = "",
               bodies: bool = False, as_json: bool = False) -> str:
    """tap.js with the binding name, the RPC method names and the relay event (or none);
    `bodies`: "open" messages carry the request body's text; `as_json`: each message is posted
    as one JSON string (a raw CDP binding, `Tap.on_cdp_binding`)."""
    source = TAP_JS.read_text(encoding="utf-8")
    head, sep, tail = source.rpartition(_CONFIG_MARK)
    if not sep:
        raise RuntimeError(f"{TAP_JS} lost its {_CONFIG_MARK} marker")
    end = tail.index("});")  # the default config object ends the file: `{...});`
    values: dict[str, Any] = {"binding": binding, "methods": list(methods), "relay": relay,
                              "pollMs": POLL_MS}
    if bodies:
        values["bodies"] = True
    if as_json:
        values["json"] = True
    config = json.dumps(values)
    return head + config + tail[end + 1:]


def tap_scripts(binding: str, methods: tuple[str, ...], main_world_prefix: str = "",
                bodies: bool = False, as_json: bool = False) -> list[str]:
    """The init scripts that install the tap, in order. Without a prefix: tap.js alone (it runs
    in the page's world and calls the binding itself; `as_json` for a raw CDP binding). With one
    (Camoufox's "mw:"): the relay in the automation's world, then tap.js marked to run in the
    page's world, posting via events."""
    if not main_world_prefix:
        return [tap_script(binding, methods, bodies=bodies, as_json=as_json)]
    event = "bpool-" + secrets.token_hex(6)  # per process: the page cannot guess it in advance
    relay = RELAY_JS % json.dumps({"binding": binding, "event": event})
    return [relay, main_world_prefix + tap_script(binding, methods, relay=event, bodies=bodies)]


async def raw_binding(context: Any, page: Any, tap: "Tap", name: str) -> Any:
    """Chromium: a raw CDP binding `name` on `page`'s own session, feeding `tap` (tap.js with
    `as_json`). It lives on through navigations and needs Runtime enabled on that session.
    Returns the session; raises where no CDP session can be had."""
    session = await context.new_cdp_session(page)
    session.on("Runtime.bindingCalled", lambda params: tap.on_cdp_binding(name, params))
    await session.send("Runtime.enable")
    await session.send("Runtime.addBinding", {"name": name})
    return session


class TapClosed(Exception):
    """The page went away: no more pieces will come."""


@dataclass(frozen=True)
class Piece:
    event: str  # "start" | "data" | "end" | "error" | "gone" (the page closed)
    data: str = ""
    status: int | None = None
    message: str = ""


@dataclass
class TapStream:
    """One tapped request. Iterate `next()` for its pieces; `status` is set once it started."""

    id: str
    kind: str
    url: str
    model: str = ""  # "models/<id>" from the request body; "" when it could not be read
    request_body: str = ""  # only with Tap.keep_bodies
    status: int | None = None
    done: bool = False
    _queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    _next_seq: int = 0
    _held: dict = field(default_factory=dict)
    text: list = field(default_factory=list)  # the body: ListModels, or with Tap.keep_bodies

    async def next(self, timeout_s: float | None) -> Piece:
        """The next piece; asyncio.TimeoutError when none arrives in time."""
        if not self._queue.empty():  # the usual case while an answer streams: no timer at all
            return self._queue.get_nowait()
        async with asyncio.timeout(timeout_s):  # unlike wait_for, no task per piece
            return await self._queue.get()


class Tap:
    def __init__(self, generate_method: str, models_method: str):
        self.generate_method = generate_method
        self.models_method = models_method
        self._streams: dict[str, TapStream] = {}
        self._new: asyncio.Queue[TapStream | None] = asyncio.Queue()
        self.models_body: str | None = None
        self.models_changed = asyncio.Event()
        self.bad_messages = 0
        self.closed = False
        self.hello = asyncio.Event()  # set by each new document's tap; the driver clears it
        self.hello_world = ""  # "page", or "isolated" when the tap cannot see the page's requests
        self.keep_bodies = False  # keep every request whole in `kept` (tap_scripts(bodies=True))
        self.kept: list[TapStream] = []

    # -- binding callbacks

    def on_cdp_binding(self, binding: str, params: Any) -> None:
        """A `Runtime.bindingCalled` event of the raw CDP binding `binding`: one JSON string per
        message (tap.js with `as_json`). Other bindings' calls are not ours."""
        if not isinstance(params, dict) or params.get("name") != binding:
            return
        try:
            msg = json.loads(params.get("payload") or "")
        except (TypeError, ValueError):
            self.bad_messages += 1
            return
        self.on_message(None, msg)

    def on_message(self, _source: Any, msg: Any) -> None:
        """A Playwright binding call (the frame source first, then the message object)."""
        try:
            self._on_message(msg)
        except Exception:  # a malformed message must not break Playwright's dispatch
            self.bad_messages += 1
            log.debug("bad tap message dropped", exc_info=True)

    def _on_message(self, msg: Any) -> None:
        if isinstance(msg, dict) and msg.get("event") == "hello":
            self.hello_world = str(msg.get("world", ""))
            self.hello.set()
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
            self.bad_messages += 1
            return
        sid, seq = msg["id"], msg.get("seq")
        if not isinstance(seq, int):
            self.bad_messages += 1
            return
        stream = self._streams.get(sid)
        if stream is None:
            if seq != 0 or msg.get("event") != "open":
                return  # a request older than our bookkeeping: nothing to do with it
            kind = str(msg.get("kind", ""))
            model = msg.get("model")
            body = msg.get("body")
            stream = TapStream(sid, kind, str(msg.get("url", "")),
                               model=model if isinstance(model, str) else "",
                               request_body=body if isinstance(body, str) else "")
            stream._next_seq = 1
            self._streams[sid] = stream
            if self.keep_bodies:
                self.kept.append(stream)
            self._forget_old()
            if kind == self.generate_method:
                self._new.put_nowait(stream)
            return
        stream._held[seq] = msg
        while stream._next_seq in stream._held:
            self._apply(stream, stream._held.pop(stream._next_seq))
            stream._next_seq += 1

    def _apply(self, stream: TapStream, msg: dict) -> None:
        event = msg.get("event")
        if event == "start":
            status = msg.get("status")
            stream.status = status if isinstance(status, int) else 0
            piece = Piece("start", status=stream.status)
        elif event == "data":
            data = msg.get("data")
            piece = Piece("data", data=data if isinstance(data, str) else "")
        elif event in ("end", "error"):
            stream.done = True
            piece = Piece(event, message=str(msg.get("message", "")))
        else:
            self.bad_messages += 1
            return
        if stream.kind == self.models_method:
            self._collect_models(stream, piece)
        else:
            if self.keep_bodies and piece.event == "data":
                stream.text.append(piece.data)
            stream._queue.put_nowait(piece)
        if stream.done:
            self._streams.pop(stream.id, None)

    def _collect_models(self, stream: TapStream, piece: Piece) -> None:
        if piece.event == "data":
            stream.text.append(piece.data)
        elif piece.event == "end" and stream.status is not None and 200 <= stream.status < 300:
            self.models_body = "".join(stream.text)
            self.models_changed.set()

    def _forget_old(self) -> None:
        while len(self._streams) > MAX_TRACKED:
            oldest = next(iter(self._streams))
            self._streams.pop(oldest)

    # -- driver side

    def discard_pending(self) -> int:
        """Forget GenerateContent requests nobody waited for (e.g. from a cancelled job)."""
        n = 0
        while not self._new.empty():
            self._new.get_nowait()
            n += 1
        return n

    async def next_generate(self, timeout_s: float) -> TapStream:
        """The next GenerateContent request the page sends; asyncio.TimeoutError if none,
        TapClosed if the page went away."""
        if self.closed:
            raise TapClosed()
        stream = await asyncio.wait_for(self._new.get(), timeout_s)
        if stream is None:
            raise TapClosed()
        return stream

    def close(self) -> None:
        """The page is gone: wake everyone waiting with a "gone" piece."""
        if self.closed:
            return
        self.closed = True
        for stream in self._streams.values():
            stream._queue.put_nowait(Piece("gone"))
        self._streams.clear()
        self._new.put_nowait(None)
