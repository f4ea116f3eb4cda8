"""The OpenAI-compatible HTTP front (process entry point): validates, authenticates, streams.

    python -m bpool.http_front [--host H] [--port P]

Settings come from BPOOL_* variables (bpool.front.settings); the application is
bpool.front.app; client errors are made in bpool.front.errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bpool import config
from bpool.front.app import serve
from bpool.front.settings import FrontSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpool.http_front", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="listen address (BPOOL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (BPOOL_PORT, default 2048)")
    args = parser.parse_args(argv)
    try:
        config.setup_logging("front")
        settings = FrontSettings.from_env({"host": args.host, "port": args.port})
    except config.ConfigError as exc:
        print(f"bpool front: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    config.add_secret(*settings.api_keys)  # scrubbed from every log line, whatever logs it
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    raise SystemExit(main())
