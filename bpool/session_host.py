"""A session host (entry point): runs one isolated Chromium per browser session it is given.

    python -m bpool.session_host [--slot N] [--host-id ID] [--capacity N] [--endpoint EP]

Several may run on one machine (supervisord's numprocs gives each its --slot) or on other
machines over tcp + CURVE (BPOOL_BROKER_SESSIONS=tcp://..., BPOOL_CURVE_SERVER_KEY,
BPOOL_CURVE_CLIENT_KEY). The logic is bpool/sessions/host.py; docs/sessions.md.
Exit codes: 0 stopped, 1 cannot run (another host with the same id), 78 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bpool import config
from bpool.wire import curve

log = logging.getLogger("bpool.sessions.host")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpool.session_host",
                                 description="a bpool browser-session host")
    ap.add_argument("--slot", type=int, default=0, help="this host's number on the machine")
    ap.add_argument("--host-id", help="name of this host (BPOOL_SESSION_HOST_ID)")
    ap.add_argument("--capacity", type=int, help="browsers at once (BPOOL_MAX_CONTEXTS)")
    ap.add_argument("--endpoint", help="the placement's endpoint (BPOOL_BROKER_SESSIONS)")
    args = ap.parse_args(argv)
    from bpool.sessions.host import HostSettings, SessionHost

    try:
        config.setup_logging("sessions")
        settings = HostSettings.from_env({"host_id": args.host_id, "capacity": args.capacity,
                                          "endpoint": args.endpoint}, slot=args.slot)
    except config.ConfigError as exc:
        print(f"bpool session host: {exc}", file=sys.stderr)
        return config.EX_CONFIG

    async def run() -> int:
        host = SessionHost(settings)
        config.stop_on_signals(host.stopping.set, asyncio.get_running_loop())
        return await host.run()

    try:
        return asyncio.run(run())
    except curve.CurveError as exc:
        log.error("session host cannot connect: %s", exc)
        return config.EX_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
