"""One browser worker: a browser logged in as one profile, serving the broker one job at a time.

    python -m bpool.browser_proc --profile cookies/alice.json [--browser auto|camoufox|chromium]
                                 [--headed] [--studio-url URL] [--run-dir DIR]

Lifecycle: load + validate the profile → pick the engine → launch → load the storage state → open
the studio → register (`Ready`) → { job → stream → reset → `Idle` }. A logged-out profile, one
whose account has not accepted the terms of service (`needs_consent`), or an unsupported region
still registers, with `Ready.unusable` set, and stays up so the operator sees why in /health and
`supervisorctl status`.

Exit codes (supervisord: `autorestart=unexpected`, `exitcodes=0,78`):
    0   stopped by SIGTERM/SIGINT (drained, said Goodbye, closed the browser)
    1   the browser died or the studio could not be opened: restarting may help
    78  EX_CONFIG: bad profile file, browser not installed, bad setting, the profile is already
        served by another worker, or the browser cannot run the page tap in the page's own world
        (an old Camoufox): restarting cannot help, so it is not retried
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bpool import config
from bpool.worker.browser import PROG, WorkerSettings, serve
from bpool.worker.engines import EX_CONFIG
from bpool.worker.profiles import ProfileError, load_profile


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", type=Path, required=True, help="storage-state JSON (cookies/NAME.json)")
    ap.add_argument("--browser", choices=("auto", "camoufox", "chromium"), help="BPOOL_BROWSER")
    ap.add_argument("--headed", action="store_true", help="show the window (BPOOL_HEADLESS=0)")
    ap.add_argument("--studio-url", help="BPOOL_STUDIO_URL (default https://aistudio.google.com)")
    ap.add_argument("--run-dir", type=Path, help="BPOOL_RUN_DIR (sockets, browsers, snapshots)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config.setup_logging("browser", args.profile.stem)
        profile = load_profile(args.profile)
        # Whatever logs a cookie value by mistake, the log line shows *** instead.
        config.add_secret(*(c.value for c in profile.state.cookies))
        settings = WorkerSettings.from_env(args)
    except (ProfileError, config.ConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_CONFIG
    return asyncio.run(serve(settings, profile))


if __name__ == "__main__":
    sys.exit(main())
