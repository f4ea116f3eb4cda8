"""The reset between jobs in one page script: Stop, New chat, confirm discarding, wait for the
empty chat, temporary chat back on, Google Search back off.

Each of those was its own round trip (nine or more page scripts per reset); with four browsers on
two cores the round trips, not the work, were the cost. The script waits inside the page (short
timers) and returns what it saw and did. What it cannot finish alone, it leaves to the helpers
that handle every case (popups.py, temporary.py, panel.py), so the behaviour is the same: a popup
after New chat, temporary chat behind a menu, a job's settings to put back, or a model whose
defaults were never read go through them, as before.
"""

from __future__ import annotations

import logging
from typing import Any

from bpool.studio import page_js
from bpool.studio.outcomes import StepError
from bpool.studio.panel import RunSettings
from bpool.studio.steps import Steps
from bpool.studio.temporary import TemporaryChat

log = logging.getLogger("bpool.driver")
STEP = "reset"

_WAIT = """
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const until = async (f, ms) => {
    const end = performance.now() + ms;
    for (;;) {
      const v = f();
      if (v) return v;
      if (performance.now() > end) return null;
      await sleep(8);
    }
  };
"""

# {s: probe args, r: this reset's args} -> {newChat, empty, probe, temp, tempClicked, search}
RESET = page_js._fn("{s, r}", page_js._PROBE + page_js._PANEL + _WAIT + """
  return (async () => {
    const st = q(r.stop);
    if (st) st.click();
    const nc = q(r.newChat);
    if (!nc) return {newChat: false};
    nc.click();
    const out = {newChat: true, empty: false};
    const p = await until(() => {
      for (const d of qa(r.dialog)) for (const b of d.querySelectorAll('button')) {
        if (text(b).includes(r.discard)) { b.click(); return null; }
      }
      const p = probe(s);
      return p.consent || (p.ready && !p.turns && !p.promptLength) ? p : null;
    }, r.emptyMs);
    if (!p) return out;
    out.empty = true;
    out.probe = p;
    if (p.consent || p.popups) return out;
    if (r.temporary && p.temporary === false) {
      const t = firstVis(s.tempToggle);
      if (t) {
        t.click();
        out.tempClicked = true;
        out.temp = !!(await until(() => tempState(s), r.tempMs));
      }
    } else if (r.temporary) {
      out.temp = p.temporary;
    }
    if (!r.search) return out;
    // Google Search back to what is wanted: open the panel, flip the switch, close the panel.
    const x = r.search;
    const sr = {opened: false};
    out.search = sr;
    let ps = panelRead(x.p);
    if (!ps.open) {
      const t = firstVis(x.toggle);
      if (!t) return out;
      t.click();
      ps = await until(() => { const v = panelRead(x.p); return v.open ? v : null; }, x.ms);
      if (!ps) return out;
    }
    sr.opened = true;
    if (!ps.search && ps.tools) {
      const e = firstVis(x.p.toolsExpand);
      if (e) e.click();
      ps = (await until(() => { const v = panelRead(x.p); return v.search ? v : null; }, x.ms))
        || panelRead(x.p);
    }
    sr.before = ps.search;
    if (ps.search && ps.search.on !== x.want) {
      const el = first(x.p.search);
      if (el) el.click();
      await until(() => { const v = sw(x.p.search); return v && v.on === x.want; }, x.ms);
    }
    sr.after = sw(x.p.search);
    const c = firstVis(x.close);
    if (c) {
      c.click();
      sr.closed = !!(await until(() => !firstVis(x.close), x.ms));
    } else {
      sr.closed = true;  // an always-visible panel has no close button
    }
    return out;
  })();
""")


class PageReset:
    """The one-script reset and the follow-up through the usual helpers when it is needed."""

    def __init__(self, steps: Steps, probe_args: dict, panel: RunSettings,
                 temporary: TemporaryChat):
        self.x = steps
        self.probe_args = probe_args
        self.panel = panel
        self.temporary = temporary
        t = steps.t
        self.base = {"stop": t.stop_button, "newChat": t.new_chat_button, "dialog": t.dialog,
                     "discard": t.discard_label, "emptyMs": 5000}

    def _search_only(self, model: str | None) -> bool:
        """Is turning Search back the only thing panel.settle would do after New chat?"""
        p = self.panel
        known = p.defaults.get(model or "")
        if known is None or p.dirty or (model or "") in p._search_kept:
            return False
        search_on = bool(known.get("search") and known["search"]["on"])
        return search_on != p.search

    async def run(self, model: str | None) -> tuple[dict, bool] | None:
        """New chat and everything after it: (the probe of the empty chat, whether the page is
        settled; if not, the caller settles it through the helpers as after a page load), or
        None when the page has no New chat button (the caller reloads then)."""
        s = self.x.s
        search = self._search_only(model)
        args = {**self.base, "temporary": s.temporary_chat,
                "tempMs": int(1000 * (0.3 if self.temporary._warned
                                      else min(2.0, s.control_timeout_s))),
                "search": {"p": self.panel.args, "toggle": list(self.x.t.panel_toggle),
                           "close": list(self.x.t.panel_close), "want": self.panel.search,
                           "ms": int(1000 * s.control_timeout_s)} if search else None}
        got = await self.x.js(STEP, RESET, {"s": self.probe_args, "r": args})
        if not got["newChat"]:
            return None
        if not got["empty"]:
            raise StepError(STEP, "New chat did not give an empty chat (waited 5.0s)", "timeout")
        probe = got["probe"]
        if probe.get("consent") or probe.get("popups"):
            return probe, False  # named by the caller / dismissed first, then the helpers
        if s.temporary_chat:
            if got.get("tempClicked") and not got.get("temp"):
                self.temporary._give_up("temporary chat did not show as on after clicking "
                                        "its toggle")
            elif not got.get("tempClicked") and got.get("temp") is not True:
                await self.temporary.ensure_on(STEP, got.get("temp"))  # a menu, or no toggle
        if search:
            self._search_done(got.get("search") or {}, model)
            if not (got.get("search") or {}).get("closed"):
                await self.panel.settle(model, STEP, loaded=False)
        else:
            await self.panel.settle(model, STEP, loaded=False)
        return probe, True

    def _search_done(self, sr: dict, model: str | None) -> None:
        before, after = sr.get("before"), sr.get("after")
        if before is not None and before["on"] == self.panel.search:
            self.panel._search_kept.add(model or "")  # New chat did not undo it: not again
        if after is None:
            return
        word = "on" if after["on"] else "off"
        if after["on"] != self.panel.search:
            log.warning("Google Search grounding stayed %s", word)
        elif before is not None and before["on"] != after["on"]:
            log.info("Google Search grounding turned %s", word)
