"""Choosing, launching and reaping the browser of one profile.

`BPOOL_BROWSER` = auto | camoufox | chromium (default auto: Camoufox when its browser is already
installed, else the system Chromium at `BPOOL_CHROMIUM_PATH`, default /usr/bin/chromium).
Detection only reads camoufox's install directory: camoufox's own path functions download the browser
when it is missing (and may wipe an old install), which must never happen behind an operator's
back. `BPOOL_HEADLESS=0` shows the window.

A missing or misconfigured browser raises `EngineError`; entry points turn it into one line and
exit code 78 (EX_CONFIG), which supervisord is told not to restart forever
(`exitcodes`/`startretries`): retrying cannot fix a missing binary.

Camoufox runs init scripts and evaluations in an isolated world, so it is launched with
`main_world_eval=True` and the page tap goes in as a main-world ("mw:") init script that reaches
the Python binding through a relay (tap.py). What the tests check without a Camoufox browser: the
launch options handed to camoufox, the scripts and their prefix, and the relay and the prefixed
scripts working in Chromium. What only a machine with a Camoufox build that has main-world
init scripts (daijro/camoufox#745) can show: that the prefixed tap really runs in the page's
world there, that the relay's DOM events reach the automation's world, and that the page
scripts (run in the isolated world) drive the page. The driver refuses to start (exit 78) when
the tap reports that it runs in an isolated world.

Each profile's browser has `<run dir>/browsers/<profile>/` (lock, pid record, launch wrapper;
also its private HOME and user-data dir when it runs as the worker's own user), is tagged for
`procs.kill_tagged`, and is killed on every exit path. A root worker runs it as
`BPOOL_BROWSER_USER`, with HOME and user-data dir in that user's home (bpool.worker.sandbox).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from bpool import config
from bpool.worker import procs, sandbox
from bpool.worker.camoufox import camoufox_install_dir, find_camoufox  # noqa: F401 (tests patch)

log = logging.getLogger("bpool.engines")

EX_CONFIG = 78
ENGINES = ("auto", "camoufox", "chromium")
DEFAULT_CHROMIUM = config.default("BPOOL_CHROMIUM_PATH")
# Playwright adds --no-sandbox itself unless told the sandbox is wanted (chromium_sandbox).
CHROMIUM_ARGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Memory per worker (docs/capacity.md has each flag's measured effect): one renderer for
    # the one page instead of a spare beside it, no software GL fallback in the GPU process,
    # a token disk cache (the profile is thrown away at every start anyway).
    "--renderer-process-limit=1",
    "--disable-software-rasterizer",
    "--disk-cache-size=1048576",
)
VIEWPORT = {"width": 1280, "height": 900}
# Camoufox runs Playwright's init scripts and evaluations in an isolated world; a script meant
# for the page's own world (the tap, which wraps the page's XMLHttpRequest) carries this prefix
# and needs the browser launched with main_world_eval (daijro/camoufox#738, #745).
MAIN_WORLD_PREFIX = "mw:"


class EngineError(Exception):
    """The configured browser cannot be used (missing binary, bad setting, profile in use)."""


@dataclass(frozen=True)
class EngineSettings:
    ENV: ClassVar[dict[str, str]] = {
        "browser": "BPOOL_BROWSER", "chromium_path": "BPOOL_CHROMIUM_PATH",
        "headless": "BPOOL_HEADLESS", "launch_timeout_s": "BPOOL_LAUNCH_TIMEOUT_S",
        "browser_user": "BPOOL_BROWSER_USER", "chromium_args": "BPOOL_CHROMIUM_ARGS",
        "account_leases": "BPOOL_ACCOUNT_LEASES",
    }
    browser: Literal["auto", "camoufox", "chromium"] = config.default("BPOOL_BROWSER")
    chromium_path: Path = Path(config.default("BPOOL_CHROMIUM_PATH"))
    headless: bool = config.default("BPOOL_HEADLESS")
    launch_timeout_s: config.Positive = config.default("BPOOL_LAUNCH_TIMEOUT_S")
    close_timeout_s: float = 10.0
    browser_user: str = config.default("BPOOL_BROWSER_USER")
    chromium_args: str = config.default("BPOOL_CHROMIUM_ARGS")  # more flags, shell-quoted
    account_leases: bool = config.default("BPOOL_ACCOUNT_LEASES")  # CDP on a loopback port

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> "EngineSettings":
        """From the registry's variables; `overrides` (flags) win. ConfigError if invalid."""
        return config.build(cls, overrides)


# ---------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "camoufox" | "chromium"
    executable: Path
    reason: str


def _chromium(settings: EngineSettings, reason: str) -> EngineChoice:
    exe = settings.chromium_path
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise EngineError(
            f"Chromium not found at {exe} ({reason}); install it (apt-get install chromium) "
            "or set BPOOL_CHROMIUM_PATH"
        )
    return EngineChoice("chromium", exe, reason)


def choose_engine(settings: EngineSettings) -> EngineChoice:
    """Decide which browser to run; raises EngineError with the fix when it cannot."""
    if settings.browser not in ENGINES:
        raise EngineError(f"BPOOL_BROWSER={settings.browser!r} is not one of {', '.join(ENGINES)}")
    if settings.browser == "chromium":
        return _chromium(settings, "BPOOL_BROWSER=chromium")
    install_dir = camoufox_install_dir()
    exe = find_camoufox(install_dir)
    if exe is not None:
        why = "BPOOL_BROWSER=camoufox" if settings.browser == "camoufox" else "auto: installed"
        return EngineChoice("camoufox", exe, why)
    if settings.browser == "camoufox":
        raise EngineError(
            f"Camoufox's browser is not installed (looked in {install_dir}); fetch it once with "
            "`python -m camoufox fetch`, or set BPOOL_BROWSER=chromium"
        )
    return _chromium(settings, f"auto: no Camoufox browser in {install_dir}")


# ---------------------------------------------------------------------------- launching


def main_world_prefix(engine: str) -> str:
    """What marks an init script for the page's own world: "mw:" for Camoufox, nothing for
    Chromium (whose init scripts already run there)."""
    return MAIN_WORLD_PREFIX if engine == "camoufox" else ""


def camoufox_options(choice: EngineChoice, dirs: "BrowserDirs", common: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for camoufox's AsyncNewBrowser (besides the Playwright instance)."""
    from camoufox.addons import DefaultAddons

    # No viewport: Camoufox sizes the window from its fingerprint.
    return dict(
        persistent_context=True, user_data_dir=str(dirs.user_data),
        executable_path=str(choice.executable),
        exclude_addons=list(DefaultAddons),  # the default add-ons would be downloaded
        main_world_eval=True,  # lets "mw:" scripts reach the page's world (the tap needs it)
        **common,
    )


@dataclass(frozen=True)
class BrowserDirs:
    root: Path  # <run dir>/browsers/<profile>: lock, pid record, launch wrapper (the worker's)
    # The browser's own HOME and user-data dir: under root, or, for a browser that runs as
    # another user, under that user's home (sandbox.BrowserUser.data_root).
    data: Path | None = None

    @classmethod
    def for_profile(cls, run_dir: Path, profile_id: str) -> "BrowserDirs":
        return cls(run_dir / "browsers" / profile_id)

    def for_user(self, user: sandbox.BrowserUser | None) -> "BrowserDirs":
        if user is None:
            return self
        run_dir = self.root.parent.parent
        return BrowserDirs(self.root, user.data_root(run_dir) / self.root.name)

    @property
    def home(self) -> Path:
        return (self.data or self.root) / "home"

    @property
    def user_data(self) -> Path:
        return (self.data or self.root) / "user-data"

    @property
    def tag(self) -> str:
        return str(self.root)


@dataclass
class LaunchedBrowser:
    engine: str
    context: Any  # playwright BrowserContext (persistent)
    playwright: Any
    dirs: BrowserDirs
    lock: procs.ProfileLock
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set when the browser closes
    _killed: bool = False

    watched: tuple[int, ...] = ()  # the Playwright driver and the browser's main process
    _monitor: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.context.on("close", lambda *_: self.gone.set())
        atexit.register(self.kill)
        self._monitor = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        # Playwright reports a browser that exits, but not a driver that dies; a dead driver
        # would leave every later call hanging or failing obscurely. Poll both.
        while not self.gone.is_set():
            if any(not procs.alive(p) for p in self.watched):
                log.error("browser or driver process exited")
                self.gone.set()
                return
            await asyncio.sleep(0.5)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close politely within the timeout, then make sure nothing is left."""
        if self._killed:
            return
        for step in (self.context.close, self.playwright.stop):
            try:
                await asyncio.wait_for(step(), timeout_s)
            except BaseException as exc:  # a dead or hung browser: the kill below settles it
                log.debug("browser close step failed: %r", exc)
                if isinstance(exc, asyncio.CancelledError):
                    self.kill()
                    raise
        self.kill()

    def kill(self) -> None:
        """SIGKILL the browser's processes and groups; safe to call often (atexit, finally)."""
        if self._killed:
            return
        self._killed = True
        self.gone.set()
        if self._monitor is not None:
            self._monitor.cancel()
        killed = procs.kill_tagged(self.dirs.tag)
        if killed:
            log.info("killed %d browser processes", len(killed))
        if self.dirs.data is not None:  # outside the run dir: nothing else would remove it
            _remove_data(self.dirs.data)
        self.lock.clear_record()
        self.lock.release()
        atexit.unregister(self.kill)


def _remove_data(data: Path) -> None:
    """The browser's data (its copy of the session) and the pool's folder once it is empty."""
    shutil.rmtree(data, ignore_errors=True)
    try:
        if [p.name for p in data.parent.iterdir()] == [sandbox.RUN_DIR_MARK]:
            (data.parent / sandbox.RUN_DIR_MARK).unlink()  # the pool's last profile
        data.parent.rmdir()
    except OSError:  # other profiles of the pool still run
        pass


def _prepare(dirs: BrowserDirs, user: sandbox.BrowserUser | None) -> procs.ProfileLock:
    config.ensure_private_dir(dirs.root.parent)
    config.ensure_private_dir(dirs.root)
    lock = procs.ProfileLock(dirs.root)
    if not lock.acquire():
        raise EngineError(f"profile already served by another worker (pid {lock.holder()})")
    stale = procs.kill_tagged(dirs.tag)
    if stale:
        log.warning("reaped %d browser processes left by a previous worker", len(stale))
    # A fresh user-data dir every start: the profile file is the only source of state, and a
    # killed Chromium leaves a SingletonLock that would refuse the next launch.
    shutil.rmtree(dirs.user_data, ignore_errors=True)
    if user is not None and dirs.data is not None:
        shutil.rmtree(dirs.home, ignore_errors=True)
        # every level down from the user's home is the user's: it must be able to walk it
        sandbox.claim_pool_folder(user, dirs.root.parent.parent)
        sandbox.make_private(dirs.data, user)
    for d in (dirs.home, dirs.user_data):
        sandbox.make_private(d, user)
    return lock


def _browser_env(dirs: BrowserDirs) -> dict[str, str]:
    return sandbox.browser_env(dirs.home, procs.OWNER_ENV, dirs.tag)


async def _chromium_user_agent(exe: Path) -> str | None:
    """A desktop user agent for this Chromium: headless mode announces "HeadlessChrome"."""
    try:
        proc = await asyncio.create_subprocess_exec(
            str(exe), "--version", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    m = re.search(rb"(\d+)\.\d+\.\d+", out)
    if m is None:
        return None
    return ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{m.group(1).decode()}.0.0.0 Safari/537.36")


# The Playwright driver (node) of every worker: V8's young generation at 1 MiB semi-spaces
# instead of 16 took 28 MiB off each driver's PSS (docs/capacity.md).
DRIVER_NODE_OPTIONS = "--max-semi-space-size=1"


async def _start_playwright(tag: str) -> Any:
    from playwright.async_api import async_playwright

    # The driver copies os.environ when it starts: tag it too, so a driver orphaned by a
    # kill -9 of this worker is reaped with its browsers.
    saved = os.environ.get("NODE_OPTIONS")
    os.environ[procs.OWNER_ENV] = tag
    os.environ["NODE_OPTIONS"] = f"{saved or ''} {DRIVER_NODE_OPTIONS}".strip()
    start = asyncio.ensure_future(async_playwright().start())
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        await _stop_when_started(start)
        raise
    finally:
        os.environ.pop(procs.OWNER_ENV, None)
        if saved is None:
            os.environ.pop("NODE_OPTIONS", None)
        else:
            os.environ["NODE_OPTIONS"] = saved


async def _stop_when_started(start: asyncio.Future) -> None:
    """Cancelling async_playwright().start() does not stop the driver it is spawning, which would
    then run on, attached to this loop: let the start finish, then stop that driver."""
    try:
        pw = await asyncio.wait_for(start, 30)
        await asyncio.wait_for(pw.stop(), 10)
    except BaseException as exc:  # a start that failed left no driver; the caller re-raises
        log.debug("stopping a Playwright driver whose start was cancelled: %r", exc)


def lease_args(settings: EngineSettings) -> list[str]:
    """A CDP port for account leases (docs/sessions.md): loopback only, a free port chosen by
    Chromium, which writes it to DevToolsActivePort in the user-data dir."""
    if not settings.account_leases:
        return []
    return ["--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]


async def launch(choice: EngineChoice, settings: EngineSettings, dirs: BrowserDirs) -> LaunchedBrowser:
    """Start the chosen browser with a persistent, private context; never leaks a half-launch.
    A root worker starts it as BPOOL_BROWSER_USER (bpool.worker.sandbox); the returned
    browser's `dirs` say where its data went."""
    try:
        user = sandbox.resolve_user(settings.browser_user)
    except sandbox.SandboxError as exc:
        raise EngineError(str(exc)) from None
    dirs = dirs.for_user(user)
    lock = _prepare(dirs, user)
    pw = None
    try:
        executable = choice.executable
        if user is not None:
            executable = sandbox.write_wrapper(dirs.root / "launch-browser", user, executable)
        pw = await _start_playwright(dirs.tag)
        common: dict[str, Any] = dict(
            headless=settings.headless,
            env=_browser_env(dirs),
            handle_sigint=False,  # signals belong to the worker, which closes the browser itself
            handle_sigterm=False,
            handle_sighup=False,
            timeout=settings.launch_timeout_s * 1000,
        )
        if choice.engine == "camoufox":
            from camoufox.async_api import AsyncNewBrowser

            ctx = await AsyncNewBrowser(pw, **camoufox_options(
                EngineChoice(choice.engine, executable, choice.reason), dirs, common))
        else:
            ua = await _chromium_user_agent(choice.executable) if settings.headless else None
            ctx = await pw.chromium.launch_persistent_context(
                str(dirs.user_data), executable_path=str(executable),
                args=[*CHROMIUM_ARGS, *shlex.split(settings.chromium_args), *lease_args(settings)],
                user_agent=ua, viewport=VIEWPORT,
                chromium_sandbox=sandbox.use_sandbox(user), **common,
            )
    except BaseException:
        if pw is not None:
            try:
                await asyncio.wait_for(pw.stop(), settings.close_timeout_s)
            except BaseException:
                pass
        procs.kill_tagged(dirs.tag)
        if dirs.data is not None:
            _remove_data(dirs.data)
        lock.release()
        raise
    pids = procs.find_tagged(dirs.tag)
    own = os.getpgrp()
    stats = {p: st for p in pids if (st := procs.proc_stat(p)) is not None}
    drivers = {p for p, st in stats.items() if st[2] == own}
    mains = {p for p, st in stats.items() if st[1] in drivers and st[2] == p}
    browser = LaunchedBrowser(choice.engine, ctx, pw, dirs, lock,
                              watched=tuple(sorted(drivers | mains)))
    lock.record(sorted({st[2] for st in stats.values() if st[2] != own}))
    log.info("%s started (%d processes)", choice.engine, len(pids))
    return browser
