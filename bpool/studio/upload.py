"""Attaching a job's files to the prompt through the page's own file input.

The page takes files through a hidden `<input type="file">` inside the "Upload a file" item of
the "Insert assets" menu (CJack); some pages have one in the DOM already. Playwright sets the
input's files from memory (name, type, bytes), so no copy of a user's file ever touches the
disk. Afterwards: the menu is closed (it stays open, and its backdrop takes the Run click), a
copyright notice after a first upload is acknowledged (the preference that prevents it is set,
but it is handled anyway), and the step waits until every file shows as uploaded and Run is
enabled (CJack waits for Run; the page disables it while an upload runs).

A job without attachments never gets here: it costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterable

from bpool.protocol import Attachment, JobSpec
from bpool.studio import page_js
from bpool.studio.outcomes import StepError
from bpool.studio.steps import Steps

log = logging.getLogger("bpool.driver")
STEP = "attach files"

# Which candidate file input is in the DOM (-1: none).
FIND_INPUT = page_js._fn("sels", """
  for (let i = 0; i < sels.length; i++) if (q(sels[i])) return i;
  return -1;
""")

# Where the upload is: acknowledges a copyright notice when one shows (clicked: true).
UPLOAD_STATE = page_js._fn("s", page_js._RUN + """
  let notice = firstVis(s.ack);
  if (!notice) {
    for (const sel of s.overlays) for (const root of qa(sel)) {
      if (notice || !lower(text(root)).includes(s.phrase)) continue;
      notice = [...root.querySelectorAll('button')].find(
        (b) => vis(b) && s.labels.includes(text(b))) || null;
    }
  }
  if (notice) notice.click();
  const menu = qa(s.menu).some((m) => vis(m) && !!m.querySelector('input[type="file"]'));
  return {clicked: !!notice, menu,
          uploading: s.progress.some((sel) => qa(sel).some(vis)),
          chips: s.chips.reduce((n, sel) => n + qa(sel).length, 0),
          run: runState(s.run)};
""")


def attachments_of(spec: JobSpec) -> tuple[Attachment, ...]:
    return tuple(a for m in spec.messages for a in m.attachments)


class Uploads:
    def __init__(self, steps: Steps):
        self.x = steps
        t = steps.t
        self.args = {
            "ack": list(t.upload_ack), "labels": list(t.upload_ack_labels),
            "phrase": t.upload_ack_phrase, "overlays": list(t.overlay_scopes),
            "menu": t.upload_menu,
            "progress": list(t.upload_progress), "chips": list(t.attachment_chip),
            "run": list(t.run_button),
        }

    async def attach(self, files: Iterable[Attachment], timeout_s: float) -> dict:
        """Upload `files`; returns the Run state once the page has taken them all."""
        files = tuple(files)
        t = self.x.t
        chips_before = (await self._state())["chips"]
        which = await self.x.js(STEP, FIND_INPUT, list(t.file_input))
        if which < 0:
            if await self.x.js(STEP, page_js.CLICK_FIRST, list(t.add_media)) < 0:
                raise StepError(STEP, "the page has no button to attach files")

            async def found() -> int | None:
                i = await self.x.js(STEP, FIND_INPUT, list(t.file_input))
                return i + 1 if i >= 0 else None
            which = await self.x.until(STEP, "the upload menu did not show a file input", found,
                                       self.x.s.control_timeout_s) - 1
        payload = [{"name": f.name, "mimeType": f.mime, "buffer": f.data} for f in files]
        async with self.x.step(STEP):
            await self.x.page.locator(t.file_input[which]).first.set_input_files(payload)
        log.info("attached %d file(s), %d bytes", len(files), sum(len(f.data) for f in files))
        return await self._settle(len(files), chips_before, timeout_s)

    async def _state(self) -> dict:
        return await self.x.js(STEP, UPLOAD_STATE, self.args)

    async def _settle(self, n: int, chips_before: int, timeout_s: float) -> dict:
        """Menu closed, notice acknowledged, every upload done, Run enabled."""
        deadline = time.monotonic() + timeout_s
        escaped = 0.0
        while True:
            st = await self._state()
            if st["clicked"]:
                log.info("acknowledged the page's copyright notice for uploads")
            chips_ok = st["chips"] == 0 or st["chips"] - chips_before >= n
            if st["menu"] and time.monotonic() - escaped > 0.5:
                async with self.x.step(STEP):  # as a user closes a menu; no page script can
                    await self.x.page.keyboard.press("Escape")
                escaped = time.monotonic()
            elif (not st["menu"] and not st["clicked"] and not st["uploading"] and chips_ok
                    and (st["run"]["i"] >= 0 or not st["run"]["exists"])):
                return st["run"]
            if time.monotonic() > deadline:
                why = ("the upload menu stayed open" if st["menu"] else
                       "the files were still uploading" if st["uploading"] else
                       f"the page shows {st['chips'] - chips_before} of {n} files" if not chips_ok
                       else "the Run button stayed disabled")
                raise StepError(STEP, f"{why} (waited {timeout_s:.0f}s)", "timeout")
            await asyncio.sleep(0.05)
