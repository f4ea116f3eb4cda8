"""What the page costs by itself, and what the tap adds: CPU per answer, one browser, no pool.

One Chromium, launched the way a worker launches its own (same engine module, flags and sandbox
user), logged into a simulator account whose answers take a fixed time. A plain Playwright loop
fills the prompt, clicks Run, waits until the GenerateContent request has finished, clicks New
chat and discards. Three variants, one after another in the same run, each in a fresh browser:

- `page alone`: no tap; the page streaming and rendering its answer, and Playwright attached;
- `tap, raw CDP binding`: plus bpool's tap posting each piece to a `Runtime.addBinding` binding
  (what a Chromium worker does);
- `tap, Playwright binding`: plus the tap through Playwright's `expose_binding` (Camoufox's way,
  and every worker's before the raw binding).

The loop's own Playwright steps (locator fill and clicks) are the same in all three; the
differences are the tap's. CPU is read from /proc (bpool.bench.cpu) around the measured answers,
this process's own with time.process_time().
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from bpool.bench import cpu
from bpool.studio.table import STUDIO
from bpool.studio.tap import Tap, raw_binding, tap_scripts
from bpool.testing.browser_pool import start_sim
from bpool.testing.pool import Pool
from bpool.worker import engines
from bpool.worker.profiles import load_profile

PROMPT = "Say hello to the pool."
# A fresh account's popups cost a worker nothing per request (dismissed once): here they are off.
SIM_QUIET = ["--welcome-dialog", "false", "--cookie-bar", "false", "--got-it", "false"]
VARIANTS = ("page alone", "tap, raw CDP binding", "tap, Playwright binding")


async def _install_tap(context, page, tap: Tap, raw: bool) -> None:
    """The tap as StudioDriver.install sets it up."""
    methods = (STUDIO.generate_method, STUDIO.models_method)
    if raw:
        await raw_binding(context, page, tap, STUDIO.binding)
    else:
        await context.expose_binding(STUDIO.binding, tap.on_message)
    for script in tap_scripts(STUDIO.binding, methods, as_json=raw):
        await context.add_init_script(script=script)


async def _drain(tap: Tap) -> None:
    """Read every tapped answer to its end, as a worker would."""
    while True:
        stream = await tap.next_generate(3600)
        while (await stream.next(60)).event not in ("end", "error", "gone"):
            pass


async def _ask(page) -> None:
    await page.locator(STUDIO.prompt_textarea[0]).fill(PROMPT)
    async with page.expect_event(  # finished: the whole answer has arrived
            "requestfinished", lambda r: r.url.endswith("/" + STUDIO.generate_method),
            timeout=60_000):
        await page.locator(STUDIO.run_button[0]).click()
    await page.locator(STUDIO.new_chat_button).click()
    await page.get_by_role("button", name=STUDIO.discard_label).click()
    await page.locator(STUDIO.chat_turn).first.wait_for(state="detached")


async def _variant(base: Path, url: str, variant: str, requests: int) -> dict[str, float]:
    settings = engines.EngineSettings()
    choice = engines.EngineChoice("chromium", settings.chromium_path, "page CPU benchmark")
    browser = await engines.launch(choice, settings, engines.BrowserDirs.for_profile(
        base / "run", "acct0-" + str(VARIANTS.index(variant))))
    drain = None
    try:
        context = browser.context
        await context.set_storage_state(load_profile(base / "cookies" / "acct0.json")
                                        .storage_state())
        page = context.pages[0] if context.pages else await context.new_page()
        if variant != VARIANTS[0]:
            tap = Tap(STUDIO.generate_method, STUDIO.models_method)
            await _install_tap(context, page, tap, raw=variant == VARIANTS[1])
            drain = asyncio.create_task(_drain(tap))
        await page.goto(url + STUDIO.new_chat_path)
        for _ in range(2):  # warm: the first answer's rendering and the model list
            await _ask(page)
        before, own = cpu.snapshot(), time.process_time()
        for _ in range(requests):
            await _ask(page)
        row = cpu.per_request(before, cpu.snapshot(), requests)
        row["python"] = (time.process_time() - own) / requests
        return row
    finally:
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(BaseException):
                await drain
        await browser.close()


def main(requests: int, answer_s: float) -> int:
    print(f"CPU per answer of one page ({requests} answers of {answer_s:g} s each, one request "
          f"at a time, plain Playwright loop, no pool):")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bpool-bench-page-cpu-") as tmp, Pool(Path(tmp)) as pool:
        url = start_sim(pool, [("--names", "acct0")], "--answer-s", str(answer_s),
                        "--first-token-s", "0.2", *SIM_QUIET).url
        for variant in VARIANTS:
            rows[variant] = asyncio.run(_variant(Path(tmp), url, variant, requests))
    kinds = ("renderer", "gpu-process", "browser", "utility", "driver", "python")
    print(f"  {'':<26}" + "".join(f"{k:>12}" for k in kinds) + f"{'total':>10}  (ms)")
    base = None
    for variant, row in rows.items():
        total = sum(row.get(k, 0.0) for k in kinds) * 1e3
        extra = "" if base is None else f"  (+{total - base:.0f} ms)"
        base = total if base is None else base
        print(f"  {variant:<26}" + "".join(f"{row.get(k, 0.0) * 1e3:>12.0f}" for k in kinds)
              + f"{total:>10.0f}{extra}")
    print("  python: this process (the loop's Playwright calls, the same in all three, and the "
          "tap's Python side)")
    return 0
