"""Attach mode: serve a profile from a browser that is already running, instead of launching one.

`BPOOL_BROWSER_ENDPOINTS` holds a manifest, either inline JSON (a value starting with `[` or
`{`) or the path of a JSON file, holding a list:

    [{"id": "alice", "cookie_path": "cookies/alice.json", "ws": "ws://127.0.0.1:9222/devtools/browser/…"},
     {"cookie_path": "/srv/bob.json", "ws": "ws://10.0.0.5:4444/abc", "engine": "camoufox"}]

`id` defaults to the cookie file's stem; a relative `cookie_path` is relative to the manifest
file (inline: to the current directory). `engine` is `chromium` (reached with
`connect_over_cdp`) or `camoufox` (a Playwright Firefox server, reached with `connect`); when
left out it is `chromium` for a DevTools URL (`/devtools/browser/…`, or http(s)://) and `camoufox`
otherwise. Ids and cookie files are unique within a manifest.

A worker whose cookie file is in the manifest connects to that browser, makes a context of its
own with the cookie file's storage state, and on exit closes only that context and its
connection: the browser belongs to whoever started it and is never closed or killed. The
profile's lock under `<run dir>/browsers/<id>/` still keeps a second worker off the profile, and
the Playwright driver is tagged like a launched one so that a restart reaps an orphaned driver.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpool.worker import procs
from bpool.worker.profiles import profile_id, valid_profile_id

log = logging.getLogger("bpool.attach")

ATTACH_ENGINES = ("chromium", "camoufox")
SCHEMES = ("ws://", "wss://", "http://", "https://")


class ManifestError(ValueError):
    """BPOOL_BROWSER_ENDPOINTS cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Endpoint:
    id: str
    cookie_path: Path
    ws: str
    engine: str  # "chromium" | "camoufox"


def _default_engine(ws: str) -> str:
    return "chromium" if "/devtools/" in ws or ws.startswith(("http://", "https://")) \
        else "camoufox"


def parse_entry(raw: Any, base: Path, where: str) -> Endpoint:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: an entry is an object with cookie_path and ws")
    unknown = set(raw) - {"id", "cookie_path", "ws", "engine"}
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    cookie, ws = raw.get("cookie_path"), raw.get("ws")
    if not isinstance(cookie, str) or not cookie:
        raise ManifestError(f"{where}: cookie_path is missing")
    if not isinstance(ws, str) or not ws.startswith(SCHEMES):
        raise ManifestError(f"{where}: ws must be a ws://, wss:// or http(s):// URL")
    path = (base / cookie).resolve()
    pid = raw.get("id") or profile_id(path)
    if not isinstance(pid, str) or not valid_profile_id(pid):
        raise ManifestError(f"{where}: id {pid!r} is not a usable profile id")
    engine = raw.get("engine") or _default_engine(ws)
    if engine not in ATTACH_ENGINES:
        raise ManifestError(f"{where}: engine must be one of {', '.join(ATTACH_ENGINES)}")
    return Endpoint(pid, path, ws, engine)


def load_manifest(value: str, cwd: Path | None = None) -> list[Endpoint]:
    """The entries of BPOOL_BROWSER_ENDPOINTS (empty: none). ManifestError names the problem;
    never shows a ws URL (it grants control of a browser)."""
    text = value.strip()
    if not text:
        return []
    if text.startswith(("[", "{")):
        source, base = "BPOOL_BROWSER_ENDPOINTS", (cwd or Path.cwd())
    else:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        try:
            text = path.read_text()
        except OSError as exc:
            raise ManifestError(f"BPOOL_BROWSER_ENDPOINTS: cannot read {path}: "
                                f"{exc.strerror}") from None
        source, base = str(path), path.parent
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(raw, list):
        raise ManifestError(f"{source}: a JSON list of {{id?, cookie_path, ws}} entries")
    out = [parse_entry(e, base, f"{source} entry {i + 1}") for i, e in enumerate(raw)]
    for attr in ("id", "cookie_path"):
        seen = [getattr(e, attr) for e in out]
        dup = sorted({str(x) for x in seen if seen.count(x) > 1})
        if dup:
            raise ManifestError(f"{source}: {attr} used twice: {', '.join(dup)}")
    return out


def endpoint_for(cookie_path: Path, endpoints: list[Endpoint]) -> Endpoint | None:
    """The entry for the worker started with this cookie file, if any."""
    want = Path(cookie_path).resolve()
    return next((e for e in endpoints if e.cookie_path == want), None)


def dump(endpoints: list[Endpoint]) -> str:
    """A manifest file with absolute paths (what sync writes for the programs it renders)."""
    return json.dumps([{"id": e.id, "cookie_path": str(e.cookie_path), "ws": e.ws,
                        "engine": e.engine} for e in endpoints], indent=1) + "\n"


@dataclass
class AttachedBrowser:
    """What the worker needs of a browser (as engines.LaunchedBrowser), for one it did not start."""

    engine: str
    context: Any  # a context of our own in the foreign browser
    browser: Any
    playwright: Any
    tag: str
    lock: procs.ProfileLock
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: bool = False

    def __post_init__(self) -> None:
        self.context.on("close", lambda *_: self.gone.set())
        self.browser.on("disconnected", lambda *_: self.gone.set())
        atexit.register(self.kill)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close our context and our connection; never the browser itself."""
        if self._closed:
            return
        for step in (self.context.close, self.playwright.stop):
            try:
                await asyncio.wait_for(step(), timeout_s)
            except BaseException as exc:  # a browser that went away: the kill below settles it
                log.debug("detach step failed: %r", exc)
                if isinstance(exc, asyncio.CancelledError):
                    self.kill()
                    raise
        self.kill()

    def kill(self) -> None:
        """Reap our own Playwright driver (tagged); the foreign browser is not ours to kill."""
        if self._closed:
            return
        self._closed = True
        self.gone.set()
        procs.kill_tagged(self.tag)
        self.lock.release()
        atexit.unregister(self.kill)


async def attach(endpoint: Endpoint, root: Path, storage_state: dict[str, Any],
                 timeout_s: float, context_options: dict[str, Any] | None = None,
                 ) -> AttachedBrowser:
    """Connect to the endpoint's browser and open a context of our own in it. `root` is the
    profile's `<run dir>/browsers/<id>` (its lock). Raises ConnectionError (a browser that is
    not there: a restart may help) or RuntimeError (profile already served)."""
    from bpool.config import ensure_private_dir
    from bpool.worker.engines import _start_playwright

    ensure_private_dir(root.parent)
    ensure_private_dir(root)
    lock = procs.ProfileLock(root)
    if not lock.acquire():
        raise RuntimeError(f"profile already served by another worker (pid {lock.holder()})")
    tag = str(root)
    procs.kill_tagged(tag)  # a driver a killed predecessor left
    pw = browser = None
    try:
        pw = await _start_playwright(tag)
        try:
            if endpoint.engine == "chromium":
                browser = await pw.chromium.connect_over_cdp(endpoint.ws, timeout=timeout_s * 1000)
            else:
                browser = await pw.firefox.connect(endpoint.ws, timeout=timeout_s * 1000)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConnectionError(f"cannot reach the {endpoint.engine} browser of profile "
                                  f"{endpoint.id}: {first}") from None
        context = await asyncio.wait_for(
            browser.new_context(storage_state=storage_state, **(context_options or {})), timeout_s)
    except BaseException:
        if pw is not None:
            try:
                await asyncio.wait_for(pw.stop(), 10)
            except BaseException:
                pass
        procs.kill_tagged(tag)
        lock.release()
        raise
    log.info("attached to a running %s (%s contexts in it now)", endpoint.engine,
             len(browser.contexts))
    return AttachedBrowser(endpoint.engine, context, browser, pw, tag, lock)
