"""The broker process (entry point): decides who works on what.

    python -m bpool.broker [--front EP] [--workers EP] [--heartbeat-interval-s S] ...

The decisions are the pure `BrokerCore` (bpool/pool/core.py); its zmq shell is bpool/pool/shell.py.
Exit codes: 0 stopped, 1 cannot run (sockets, another broker on the run directory),
78 a configuration error (supervisord does not retry it).
"""

from __future__ import annotations

import argparse
import logging
import sys

import zmq

from bpool import config
from bpool.pool.shell import AlreadyRunning, BrokerSettings, Stop, run
from bpool.wire import curve

log = logging.getLogger("bpool.broker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpool.broker", description="the bpool broker")
    parser.add_argument("--front", help="endpoint the HTTP front connects to (BPOOL_BROKER_FRONT)")
    parser.add_argument("--workers", help="endpoint workers connect to (BPOOL_BROKER_WORKERS)")
    parser.add_argument("--heartbeat-interval-s", type=float)
    parser.add_argument("--heartbeat-liveness", type=int)
    parser.add_argument("--max-queue", type=int)
    parser.add_argument("--queue-timeout-s", type=float)
    parser.add_argument("--cooldown-s", type=float)
    parser.add_argument("--pause-s", type=float)
    args = parser.parse_args(argv)
    try:
        config.setup_logging("broker")
        settings = BrokerSettings.from_env({
            "front_endpoint": args.front, "worker_endpoint": args.workers,
            "heartbeat_interval_s": args.heartbeat_interval_s,
            "heartbeat_liveness": args.heartbeat_liveness, "max_queue": args.max_queue,
            "queue_timeout_s": args.queue_timeout_s, "cooldown_s": args.cooldown_s,
            "pause_s": args.pause_s,
        })
    except config.ConfigError as exc:
        print(f"bpool broker: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    stop = Stop()
    config.stop_on_signals(stop)
    # Browser sessions: placement on its own thread and sockets (bpool/sessions/placement_shell.py).
    from bpool.sessions.placement_shell import start_in_thread
    sessions = start_in_thread()
    try:
        run(settings, stop)
    except (zmq.ZMQError, AlreadyRunning, OSError) as exc:
        log.error("broker cannot run: %s", exc)
        return 1
    except curve.CurveError as exc:
        log.error("broker cannot listen on tcp: %s", exc)
        return config.EX_CONFIG  # supervisord does not retry a configuration error forever
    finally:
        if sessions is not None:
            sessions.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
