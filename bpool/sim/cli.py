"""`python -m bpool.sim [serve|make-profiles|expire] ...` (no subcommand = serve)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
from pathlib import Path

from aiohttp import web

from bpool.config import ensure_private_dir
from bpool.sim import NEW_CHAT_PATH, accounts
from bpool.sim.app import create_app
from bpool.sim.settings import SimSettings
from bpool.sim.wire import SPLIT_MODES

log = logging.getLogger("bpool.sim")
COMMANDS = ("serve", "make-profiles", "expire")


def build_parser(defaults: SimSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bpool.sim", description="The studio simulator.")
    sub = p.add_subparsers(dest="command", required=True)
    k = defaults.knobs

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dir", type=Path, default=defaults.dir,
                        help="data dir with accounts.json and the url file (BPOOL_SIM_DIR)")

    s = sub.add_parser("serve", help="serve the simulated studio")
    common(s)
    s.add_argument("--host", default=defaults.host, help="BPOOL_SIM_HOST (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=defaults.port, help="BPOOL_SIM_PORT (0 = any free)")
    s.add_argument("--tokens-per-s", type=float, default=k.tokens_per_s, help="0 = no pacing")
    s.add_argument("--first-token-s", type=float, default=k.first_token_s)
    s.add_argument("--answer-s", type=float, default=k.answer_s,
                   help="> 0: every answer ends exactly this long after its request")
    s.add_argument("--split", choices=SPLIT_MODES, default=k.split,
                   help="how each chunk is cut into two writes")
    s.add_argument("--quota", type=int, default=k.quota, help="requests per account per window")
    s.add_argument("--quota-window-s", type=float, default=k.quota_window_s)
    s.add_argument("--no-require-token", dest="require_token", action="store_false",
                   default=k.require_token, help="accept GenerateContent without a page token")

    m = sub.add_parser("make-profiles", help="log demo accounts in and write their cookie files")
    common(m)
    m.add_argument("--out", type=Path, required=True, help="directory for <name>.json profiles")
    who = m.add_mutually_exclusive_group(required=True)
    who.add_argument("--names", help="comma-separated account names, e.g. alice,bob")
    who.add_argument("--count", type=int, help="this many new accounts named user1, user2, ...")
    m.add_argument("--host", default=defaults.host, help="cookie domain = the sim's host")
    m.add_argument("--logged-out", action="store_true",
                   help="write profiles whose session the sim does not know (not registered)")

    e = sub.add_parser("expire", help="log an account out (its profile stops working)")
    common(e)
    e.add_argument("account", help="name or email")
    e.add_argument("--revive", action="store_true", help="log it back in instead")
    return p


async def serve(settings: SimSettings) -> int:
    ensure_private_dir(settings.dir)
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url_file = settings.dir / "url"
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1]
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
        url = f"http://{host}:{port}"
        url_file.write_text(url + "\n")
        print(f"bpool.sim: serving {url}{NEW_CHAT_PATH} (data in {settings.dir})", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        url_file.unlink(missing_ok=True)
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
        made = [(a.name, a.email, a.sid) for a in accounts.ensure_accounts(path, names)]
    for name, email, sid in made:
        out = accounts.write_profile(args.out, name, accounts.storage_state(sid, args.host))
        state = "logged out" if args.logged_out else email
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
    defaults = SimSettings.from_env()
    args = build_parser(defaults).parse_args(argv)
    if args.command == "make-profiles":
        if args.count is not None and args.count < 1:
            print("bpool.sim: --count must be >= 1", file=sys.stderr)
            return 2
        return make_profiles(args)
    if args.command == "expire":
        return expire(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        knobs = defaults.knobs.updated({
            "tokens_per_s": args.tokens_per_s, "first_token_s": args.first_token_s,
            "answer_s": args.answer_s, "split": args.split, "quota": args.quota,
            "quota_window_s": args.quota_window_s, "require_token": args.require_token,
        })
    except ValueError as e:
        print(f"bpool.sim: {e}", file=sys.stderr)
        return 2
    settings = SimSettings(host=args.host, port=args.port, dir=args.dir.resolve(), knobs=knobs)
    return asyncio.run(serve(settings))
