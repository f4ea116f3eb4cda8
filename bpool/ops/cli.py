"""The `bpool` operator command.

    bpool profiles sync [--auth-directory DIR] [--render-only] [--simulator auto|on|off]
    bpool profiles check FILE...          validate cookie files (exit 1 if any is unusable)
    bpool profiles list                   generated programs, their cookie files and states
    bpool profiles path NAME              the cookie file profile NAME runs with
    bpool profiles restart NAME [--wait S]  stop (the worker drains), start, optionally wait
    bpool wait-profile NAME [--timeout S] [--not-pid PID]
    bpool config table | check            the settings registry; check this environment's values

Every command finds the pool through supervisord.conf (`--conf`, BPOOL_SUPERVISORD_CONF, default
the checkout's); the front through BPOOL_HOST / BPOOL_PORT. See docs/operations.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bpool import config
from bpool.ops import apply, render, wait as waiting





def _settings(args: argparse.Namespace) -> render.SyncSettings:
    s = render.SyncSettings.from_env(args.conf)
    changes = {}
    if getattr(args, "auth_directory", None) is not None:
        changes["auth_dir"] = args.auth_directory.resolve()
    if getattr(args, "simulator", None) is not None:
        changes["simulator"] = args.simulator
    if changes:
        from dataclasses import replace

        s = replace(s, **changes)
    return s


def cmd_sync(args: argparse.Namespace) -> int:
    return apply.sync(_settings(args), render_only=args.render_only)


def cmd_check(args: argparse.Namespace) -> int:
    from bpool.worker import profiles

    return profiles.main(["check", *map(str, args.files)])


def _generated(s: render.SyncSettings) -> dict[str, Path | None]:
    out = {}
    for fname, text in apply.read_generated(s.include_dir).items():
        program = fname.removesuffix(".conf")
        if program.startswith(render.PROGRAM_PREFIX):
            out[program.removeprefix(render.PROGRAM_PREFIX)] = render.profile_file_of(text)
    return out


def cmd_path(args: argparse.Namespace) -> int:
    known = _generated(_settings(args))
    path = known.get(args.name)
    if path is None:
        names = ", ".join(sorted(known)) or "none"
        print(f"bpool: no profile {args.name!r} (known: {names}); run `bpool profiles sync` "
              "after adding its cookie file", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    s = _settings(args)
    with apply.connect(s) as proxy:
        for name, path in sorted(_generated(s).items()):
            info = waiting.proc_info(proxy, name)
            state = f"{info['statename']} pid {info['pid']}" if info else "not in supervisord"
            print(f"{render.PROGRAM_PREFIX}{name}\t{state}\t{path}")
    return 0


def _wait(proxy: object, name: str, timeout_s: float, not_pid: int | None) -> int:
    url = waiting.health_url()
    verdict = waiting.wait(
        name, timeout_s,
        fetch=lambda: waiting.fetch_workers(url),
        info=lambda: waiting.proc_info(proxy, name),
        not_pid=not_pid,
    )
    print(f"bpool: {verdict.message}", file=sys.stdout if verdict.ok else sys.stderr)
    tail = "" if verdict.ok else waiting.log_tail(proxy, name)
    if tail:
        print(f"last lines of {render.PROGRAM_PREFIX}{name}'s log:\n{tail}", file=sys.stderr)
    return 0 if verdict.ok else 1


def cmd_restart(args: argparse.Namespace) -> int:
    """Stop (the worker drains), then start without waiting for supervisord's startsecs, as
    `supervisorctl restart` would: /health shows the new worker as soon as it registers."""
    import xmlrpc.client

    program = render.PROGRAM_PREFIX + args.name
    with apply.connect(_settings(args)) as proxy:
        if proxy is None:
            print("bpool: supervisord is not running", file=sys.stderr)
            return 1
        try:
            old_pid = proxy.supervisor.getProcessInfo(program)["pid"] or None
            try:
                proxy.supervisor.stopProcess(program, True)
                print(f"{program}: stopped")
            except xmlrpc.client.Fault as f:
                if "NOT_RUNNING" not in f.faultString:
                    raise
            proxy.supervisor.startProcess(program, False)
            print(f"{program}: starting")
        except xmlrpc.client.Fault as f:
            print(f"bpool: {program}: {f.faultString}", file=sys.stderr)
            return 1
        if args.wait is None:
            return 0
        return _wait(proxy, args.name, args.wait, old_pid)


def cmd_wait(args: argparse.Namespace) -> int:
    with apply.connect(_settings(args)) as proxy:
        return _wait(proxy, args.name, args.timeout, args.not_pid)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bpool", description="Operate a bpool pool.")
    p.add_argument("--conf", type=Path, default=None,
                   help="supervisord.conf of the pool (BPOOL_SUPERVISORD_CONF)")
    sub = p.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profiles", help="cookie files and their workers")
    psub = prof.add_subparsers(dest="action", required=True)
    sy = psub.add_parser("sync", help="one worker per cookie file, applied live")
    sy.add_argument("--auth-directory", type=Path, default=None,
                    help="the cookie directory (BROWSER_PROFILE_DIR, default cookies/)")
    sy.add_argument("--render-only", action="store_true",
                    help="write the program files but do not touch a running supervisord")
    sy.add_argument("--simulator", choices=render.SIMULATOR_MODES, default=None,
                    help="run the studio simulator: auto = only without cookie files "
                         "(BPOOL_SIMULATOR)")
    sy.set_defaults(func=cmd_sync)
    ch = psub.add_parser("check", help="validate cookie files")
    ch.add_argument("files", nargs="+", type=Path)
    ch.set_defaults(func=cmd_check)
    pa = psub.add_parser("path", help="the cookie file a profile's worker runs with")
    pa.add_argument("name")
    pa.set_defaults(func=cmd_path)
    re_ = psub.add_parser("restart", help="restart one profile's worker (it drains first)")
    re_.add_argument("name")
    re_.add_argument("--wait", type=float, default=None, metavar="S",
                     help="then wait up to S seconds until it is back in rotation")
    re_.set_defaults(func=cmd_restart)
    li = psub.add_parser("list", help="generated programs and their states")
    li.set_defaults(func=cmd_list)
    wa = sub.add_parser("wait-profile", help="wait until a profile's worker is in rotation")
    wa.add_argument("name")
    wa.add_argument("--timeout", type=float, default=90.0, help="seconds (default 90)")
    wa.add_argument("--not-pid", type=int, default=None,
                    help="the pid of the worker being replaced (its entry does not count)")
    wa.set_defaults(func=cmd_wait)
    co = sub.add_parser("config", help="the settings registry")
    csub = co.add_subparsers(dest="action", required=True)
    csub.add_parser("table", help="print the README's configuration tables").set_defaults(
        func=lambda args: print(config.config_table()) or 0)
    csub.add_parser("check", help="check every BPOOL_* value of this environment").set_defaults(
        func=cmd_config_check)
    return p


def cmd_config_check(args: argparse.Namespace) -> int:
    """Every registered variable set in this environment, converted and checked."""
    bad = 0
    for name in config.REGISTRY:
        try:
            config.value(name)
        except config.ConfigError as exc:
            print(f"bpool: {exc}", file=sys.stderr)
            bad += 1
    return config.EX_CONFIG if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except config.ConfigError as exc:
        print(f"bpool: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    except apply.SyncError as exc:
        print(f"bpool: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
