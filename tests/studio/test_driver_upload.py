"""Attachments through the page's file input, on the simulator with real Chromium: the files reach
the page's request whole, the copyright notice and the open menu are dealt with, and a job
without files never touches the upload step."""

from __future__ import annotations

import hashlib
import logging

from bpool.protocol import Attachment, ChatMessage, JobSpec
from test_browser_worker import (  # noqa: F401  (fixtures)
    Recorder, open_page, sim, sim_server)

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
                    "0000000a49444154789c63600000000200015d0b2d9a0000000049454e44ae426082")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def described(*files: Attachment) -> str:
    """What the simulator's answer says it received, computed here from what was sent."""
    return "; ".join(f"{f.mime} {len(f.data)} bytes sha256:{hashlib.sha256(f.data).hexdigest()[:16]}"
                     for f in files)


def job(text: str, *files: Attachment, model: str = "gemini-2.5-flash") -> JobSpec:
    return JobSpec(model=model, messages=(ChatMessage("user", text, files),))


CHIP_NAMES = """() => [...document.querySelectorAll('.file-chip .file-name')].map(e => e.textContent)"""


async def test_files_reach_the_request_and_plain_jobs_skip_the_upload(sim, open_page):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    calls = []
    real_attach = d.uploads.attach

    async def counting(files, timeout_s):
        calls.append(len(files))
        return await real_attach(files, timeout_s)
    d.uploads.attach = counting

    rec = Recorder()
    await d.run(job("plain"), rec.emit, lambda: None)
    assert rec.content == "Hello from alice@sim.test. You said: plain"
    assert calls == []  # no attachment: the upload step is never entered
    await d.reset()

    png = Attachment("cat.png", "image/png", PNG)
    pdf = Attachment("notes.pdf", "application/pdf", PDF)
    rec = Recorder()
    await d.run(job("what are these?", png, pdf), rec.emit, lambda: None)
    assert calls == [2]
    assert rec.content == ("Hello from alice@sim.test. You said: what are these? "
                           f"[attached: {described(png, pdf)}]")
    last = sim.requests()[-1]
    assert [(a["mime"], a["size"]) for a in last["params"]["attachments"]] == \
        [("image/png", len(PNG)), ("application/pdf", len(PDF))]
    await d.reset()
    assert await d.page.evaluate(CHIP_NAMES) == []

    rec = Recorder()  # an image with no text at all
    await d.run(job("", png), rec.emit, lambda: None)
    assert rec.content.endswith(f"[attached: {described(png)}]")


async def test_copyright_notice_and_menu_are_handled_and_chips_named(sim, open_page, caplog):
    page = await open_page("alice")
    d = page.driver
    await d.open()
    # A profile that never acknowledged it (the driver's preference is set at each page load).
    await d.page.evaluate("""() => {
      const p = JSON.parse(localStorage.getItem('aiStudioUserPreference') || '{}');
      p.fileCopyrightAcknowledged = false;
      localStorage.setItem('aiStudioUserPreference', JSON.stringify(p));
    }""")
    files = (Attachment("a.png", "image/png", PNG), Attachment("b.png", "image/png", PNG))
    with caplog.at_level(logging.INFO, logger="bpool.driver"):
        run = await d.uploads.attach(files, 20)
    assert run["i"] >= 0  # Run is enabled: nothing covers it and the uploads are done
    assert any("copyright notice" in r.getMessage() for r in caplog.records)
    assert await d.page.evaluate(CHIP_NAMES) == ["a.png", "b.png"]
    state = await d.page.evaluate("""() => ({
      menu: !!document.querySelector('div[role="menu"]'),
      dialog: !!document.querySelector('mat-dialog-container'),
      uploading: document.querySelectorAll('.file-chip.uploading').length,
      acked: JSON.parse(localStorage.getItem('aiStudioUserPreference')).fileCopyrightAcknowledged})""")
    assert state == {"menu": False, "dialog": False, "uploading": 0, "acked": True}
    rec = Recorder()  # on the page's model: no reload drops the chips
    await d.run(job("and now?", model=d.model), rec.emit, lambda: None)
    assert rec.content.endswith(f"[attached: {described(*files)}]")  # the chips went with it
