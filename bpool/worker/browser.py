"""The browser worker's body: a browser logged in as one profile, serving the broker one job at a time.

`serve()` runs the lifecycle described in bpool/browser_proc.py (the process entry point):
profile → engine → launch → storage state → open the studio → register → jobs → drain.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from bpool import config
from bpool.protocol import ErrorInfo, Usage
from bpool.studio.driver import TAP_STEP, DriverSettings, StudioDriver
from bpool.worker import attach
from bpool.worker.engines import (EX_CONFIG, VIEWPORT, BrowserDirs, EngineError, EngineSettings,
                                  LaunchedBrowser, choose_engine, launch)
from bpool.studio.outcomes import BrowserGone, StepError
from bpool.worker.profiles import Profile
from bpool.worker.link import BackendDead, Job, JobError, LinkSettings, run_worker
from bpool.worker import refresh
from bpool.worker.lease import Leasable

log = logging.getLogger("bpool.browser")
PROG = "bpool.browser_proc"
# Account states a restart cannot fix: the worker registers out of rotation instead.
UNUSABLE_KINDS = ("logged_out", "needs_consent")


@dataclass(frozen=True)
class WorkerSettings:
    profile: Path
    run_dir: Path
    engine: EngineSettings
    driver: DriverSettings
    link: LinkSettings
    setup_timeout_s: float = 30.0
    endpoints: str = ""  # BPOOL_BROWSER_ENDPOINTS: browsers to attach to (bpool.worker.attach)

    @classmethod
    def from_env(cls, args: argparse.Namespace) -> "WorkerSettings":
        """Flags override the registry's variables (ConfigError names a bad one)."""
        run_dir = (args.run_dir or config.run_dir()).resolve()
        engine = EngineSettings.from_env({"browser": args.browser,
                                          "headless": False if args.headed else None})
        driver = DriverSettings.from_env({"base_url": args.studio_url})
        link = LinkSettings.from_env({"endpoint": config.worker_endpoint(run_dir)})
        return cls(args.profile, run_dir, engine, driver, link,
                   endpoints=config.value("BPOOL_BROWSER_ENDPOINTS"))


class BrowserBackend(Leasable):
    """worker_link.Backend on top of the studio driver (leases: worker/lease.py)."""

    def __init__(self, profile_id: str, engine: str, driver: StudioDriver):
        self.profile_id = profile_id
        self.engine = engine
        self.driver = driver
        self.account = ""
        self.models: tuple[str, ...] = ()
        self.unusable: ErrorInfo | None = None
        self.cookie_expires_at: float | None = None  # kept by bpool.worker.refresh

    async def run(self, job: Job) -> tuple[str, Usage | None]:
        try:
            return await self.driver.run(job.spec, job.emit, job.start)
        except StepError as exc:
            log.warning("job %s failed at step %r: %s (%s)", job.id, exc.step, exc.message, exc.kind)
            if exc.kind in UNUSABLE_KINDS:
                self.unusable = exc.to_error()  # also said again if we ever re-register
            raise JobError(exc.to_error()) from None
        except BrowserGone as exc:
            raise BackendDead(str(exc)) from None

    async def reset(self) -> None:
        try:
            await self.driver.reset()
        except BrowserGone as exc:
            raise BackendDead(str(exc)) from None


async def open_studio(browser: LaunchedBrowser, profile: Profile, settings: WorkerSettings,
                      ) -> BrowserBackend:
    """Storage state → tap → new chat. Account problems end up in `unusable`, not raised."""
    async with asyncio.timeout(settings.setup_timeout_s):
        await browser.context.set_storage_state(profile.storage_state())
    driver = StudioDriver(browser.context, settings.driver,
                          settings.run_dir / "snapshots" / profile.id,
                          engine=browser.engine, profile=profile.id)
    await driver.install()
    driver.watch(browser.gone)
    backend = BrowserBackend(profile.id, browser.engine, driver)
    backend.browser, backend.leases = browser, settings.engine.account_leases
    try:
        await driver.open()
    except StepError as exc:
        if exc.kind not in UNUSABLE_KINDS and "region" not in exc.message:
            raise
        backend.unusable = exc.to_error()
        log.error("profile %s is not usable: %s; registering out of rotation", profile.id, exc)
        return backend
    backend.account, backend.models = driver.account, driver.models
    log.info("studio ready: account %s, %d models", driver.account or "(unknown)", len(driver.models))
    return backend


async def start_browser(settings: WorkerSettings, profile: Profile, endpoint: attach.Endpoint | None
                        ) -> LaunchedBrowser | attach.AttachedBrowser | int:
    """The profile's browser: the running one its manifest entry names, else a launched one.
    An exit code when there is none."""
    config.ensure_private_dir(settings.run_dir)
    root = BrowserDirs.for_profile(settings.run_dir, profile.id).root
    if endpoint is not None:
        log.info("profile %s: attaching to a running %s", profile.id, endpoint.engine)
        try:
            return await attach.attach(
                endpoint, root, profile.storage_state(), settings.engine.launch_timeout_s,
                {"viewport": VIEWPORT} if endpoint.engine == "chromium" else {})
        except RuntimeError as exc:  # the profile's lock is taken
            print(f"{PROG}: profile {profile.id}: {exc}", file=sys.stderr)
            return EX_CONFIG
        except Exception as exc:  # not reachable (yet): a restart may help
            log.error("%s", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
            return 1
    try:
        choice = choose_engine(settings.engine)
    except EngineError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_CONFIG
    log.info("profile %s: using %s (%s)", profile.id, choice.engine, choice.reason)
    try:
        return await launch(choice, settings.engine, BrowserDirs(root))
    except EngineError as exc:
        print(f"{PROG}: profile {profile.id}: {exc}", file=sys.stderr)
        return EX_CONFIG
    except Exception as exc:
        log.error("could not start %s: %s", choice.engine, str(exc).strip().splitlines()[0])
        return 1


async def serve(settings: WorkerSettings, profile: Profile) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    config.stop_on_signals(stop.set, loop)  # the first only records; the loop drains and exits
    try:
        endpoint = attach.endpoint_for(profile.path, attach.load_manifest(settings.endpoints))
    except attach.ManifestError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_CONFIG
    if endpoint is not None and endpoint.id != profile.id:
        profile = dataclasses.replace(profile, id=endpoint.id)  # the manifest names it
    browser = await start_browser(settings, profile, endpoint)
    if isinstance(browser, int):
        return browser
    died = False

    async def watch_browser() -> None:
        nonlocal died
        await browser.gone.wait()
        if not stop.is_set():
            died = True
            log.error("the browser went away; stopping")
            stop.set()

    watcher = asyncio.create_task(watch_browser())
    try:
        try:
            backend = await open_studio(browser, profile, settings)
        except StepError as exc:
            if exc.step == TAP_STEP:  # this browser cannot see the page's requests at all
                print(f"{PROG}: profile {profile.id}: {exc}", file=sys.stderr)
                return EX_CONFIG
            log.error("could not open the studio: %s", str(exc) or "timed out")
            return 1
        except Exception as exc:  # a site that is down, a browser that died: a restart may help
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.error("could not open the studio: %s", first or "timed out")
            return 1
        keeper = refresh.start(browser.context, profile, backend)  # the login saved back
        code = await run_worker(backend, settings.link, stop)
        await keeper.close(save=code == 0 and not died)
        return 1 if died else code
    finally:
        watcher.cancel()
        await browser.close(settings.engine.close_timeout_s)
