"""`python -m bpool.sim [serve|make-profiles|expire] ...` (no subcommand = serve)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import secrets
import signal
import sys
from pathlib import Path

from bpool import config
from bpool.config import ensure_private_dir
from bpool.sim import NEW_CHAT_PATH, accounts
from bpool.sim.knobs import CHOICES, Knobs
from bpool.sim.server import SimServer
from bpool.sim.settings import SimSettings

log = logging.getLogger("bpool.sim")
COMMANDS = ("serve", "make-profiles", "expire")


def _flag_type(kind: type):
    if kind is bool:
        return lambda v: v  # Knobs.updated parses true/false/1/0
    return kind


def build_parser(defaults: SimSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bpool.sim", description="The studio simulator.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dir", type=Path, default=defaults.dir,
                        help="data dir with accounts.json and the url files (BPOOL_SIM_DIR)")

    s = sub.add_parser("serve", help="serve the simulated studio (page + RPC host)")
    common(s)
    s.add_argument("--host", default=defaults.host, help="BPOOL_SIM_HOST (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=defaults.port,
                   help="the page's port, BPOOL_SIM_PORT (0 = any free)")
    s.add_argument("--rpc-port", type=int, default=defaults.rpc_port,
                   help="the RPC host's port, BPOOL_SIM_RPC_PORT (default 0 = any free)")
    knobs = s.add_argument_group("knobs (README.md; env BPOOL_SIM_<NAME>)")
    for f in dataclasses.fields(Knobs):
        value = getattr(defaults.knobs, f.name)
        choices = CHOICES.get(f.name)
        knobs.add_argument("--" + f.name.replace("_", "-"), dest="knob_" + f.name, default=None,
                           type=_flag_type(type(value)), choices=choices,
                           metavar=None if choices else ("BOOL" if isinstance(value, bool) else "N"),
                           help=f"default {str(value).lower() if isinstance(value, bool) else value}")
    # The older spelling of --require-token false.
    knobs.add_argument("--no-require-token", dest="knob_require_token", action="store_const",
                       const=False, help="accept GenerateContent without a page token")

    m = sub.add_parser("make-profiles", help="log demo accounts in and write their cookie files")
    common(m)
    m.add_argument("--out", type=Path, required=True, help="directory for <name>.json profiles")
    who = m.add_mutually_exclusive_group(required=True)
    who.add_argument("--names", help="comma-separated account names, e.g. alice,bob")
    who.add_argument("--count", type=int, help="this many new accounts named user1, user2, ...")
    m.add_argument("--host", default=defaults.host, help="cookie domain = the sim's host")
    m.add_argument("--logged-out", action="store_true",
                   help="write profiles whose session the sim does not know (not registered)")
    m.add_argument("--needs-tos", action="store_true",
                   help="flag the accounts as not having accepted the terms of service")

    e = sub.add_parser("expire", help="log an account out (its profile stops working)")
    common(e)
    e.add_argument("account", help="name or email")
    e.add_argument("--revive", action="store_true", help="log it back in instead")
    return p


async def serve(settings: SimSettings) -> int:
    ensure_private_dir(settings.dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url_file, rpc_file = settings.dir / "url", settings.dir / "rpc_url"
    server = SimServer(settings)
    try:
        await server.start()
        rpc_file.write_text(server.rpc_url + "\n")
        url_file.write_text(server.url + "\n")  # last: readers wait for this one
        print(f"bpool.sim: serving {server.url}{NEW_CHAT_PATH} (RPC host {server.rpc_url}; "
              f"data in {settings.dir})", flush=True)
        await stop.wait()
    finally:
        await server.close()
        url_file.unlink(missing_ok=True)
        rpc_file.unlink(missing_ok=True)
    return 0


def make_profiles(args: argparse.Namespace) -> int:
    path = accounts.accounts_path(ensure_private_dir(args.dir))
    try:
        names = ([n.strip() for n in args.names.split(",") if n.strip()] if args.names
                 else accounts.free_names(path, args.count))
        for n in names:
            accounts.check_name(n)
    except ValueError as e:
        print(f"bpool.sim: {e}", file=sys.stderr)
        return 2
    if not names:
        print("bpool.sim: no account names given", file=sys.stderr)
        return 2
    if args.logged_out:
        made = [(n, f"{n}@{accounts.EMAIL_DOMAIN}", secrets.token_urlsafe(24)) for n in names]
    else:
        made = [(a.name, a.email, a.sid) for a in accounts.ensure_accounts(
            path, names, tos=True if args.needs_tos else None)]
    for name, email, sid in made:
        out = accounts.write_profile(args.out, name, accounts.storage_state(sid, args.host))
        state = ("logged out" if args.logged_out
                 else email + (" (terms not accepted)" if args.needs_tos else ""))
        print(f"bpool.sim: wrote {out} ({state})")
    return 0


def expire(args: argparse.Namespace) -> int:
    path = accounts.accounts_path(args.dir)
    if not accounts.set_expired(path, args.account, not args.revive):
        print(f"bpool.sim: unknown account {args.account!r}", file=sys.stderr)
        return 1
    print(f"bpool.sim: {args.account} {'logged back in' if args.revive else 'logged out'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv.insert(0, "serve")
    try:
        defaults = SimSettings.from_env()
    except config.ConfigError as exc:
        print(f"bpool.sim: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    args = build_parser(defaults).parse_args(argv)
    if args.command == "make-profiles":
        if args.count is not None and args.count < 1:
            print("bpool.sim: --count must be >= 1", file=sys.stderr)
            return 2
        return make_profiles(args)
    if args.command == "expire":
        return expire(args)
    config.setup_logging("sim")
    changes = {k.removeprefix("knob_"): v for k, v in vars(args).items()
               if k.startswith("knob_") and v is not None}
    try:
        knobs = defaults.knobs.updated(changes)
    except ValueError as e:
        print(f"bpool.sim: {e}", file=sys.stderr)
        return 2
    settings = SimSettings(host=args.host, port=args.port, rpc_port=args.rpc_port,
                           dir=args.dir.resolve(), knobs=knobs)
    return asyncio.run(serve(settings))
