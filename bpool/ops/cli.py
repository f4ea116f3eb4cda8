"""The `bpool` operator command.

    bpool profiles sync [--auth-directory DIR] [--render-only] [--simulator auto|on|off]
    bpool profiles check FILE...          validate cookie files (exit 1 if any is unusable)
    bpool profiles list                   every profile: supervisord's and the broker's state
    bpool profiles path NAME              the cookie file profile NAME runs with
    bpool profiles restart NAME [--wait S]  stop (the worker drains), start, optionally wait
    bpool wait-profile NAME [--timeout S] [--not-pid PID]
    bpool status [--json] [--watch [S]]  the pool as a table (exit 1 when no worker can serve)
    bpool config table | check            the settings registry; check this environment's values
    bpool login NAME [--timeout S]        sign an account in in a browser window, save it as
                                          cookies/NAME.json and sync (78 without a display)
    bpool doctor PROFILE [--studio-url URL] [--model ID] [--prompt TEXT] [--capture DIR]
                 [--browser auto|camoufox|chromium] [--headed] [--timeout-s S]
                                          run one cookie file through every step of the page
                                          (exit 1 naming the step that failed, 78 bad profile
                                          file or no browser)

Every command finds the pool through supervisord.conf (`--conf`, BPOOL_SUPERVISORD_CONF, default
the checkout's) and runs with the settings the pool was started with, recorded in its
run/pool.json (bpool.ops.target); a different value in this shell is named and ignored. See
docs/operations.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bpool import config
from bpool.ops import apply, render, target
from bpool.ops import status as pool_status





def _target(args: argparse.Namespace, starting: bool = False) -> target.Target:
    return target.resolve(args.conf, starting=starting,
                          auth_directory=getattr(args, "auth_directory", None),
                          simulator=getattr(args, "simulator", None))


def _settings(args: argparse.Namespace) -> render.SyncSettings:
    return _target(args).settings


def cmd_sync(args: argparse.Namespace) -> int:
    t = _target(args, starting=True)
    return apply.sync(t.settings, render_only=args.render_only, rec=t.rec)


def cmd_check(args: argparse.Namespace) -> int:
    from bpool.worker import profiles

    return profiles.main(["check", *map(str, args.files)])


def cmd_path(args: argparse.Namespace) -> int:
    t = _target(args)
    why = target.unknown(t, args.name)
    if why:
        print(f"bpool: {why}", file=sys.stderr)
        return 1
    print(target.generated(t.settings)[args.name])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    return target.list_profiles(_target(args))


def cmd_restart(args: argparse.Namespace) -> int:
    """Stop (the worker drains), then start without waiting for supervisord's startsecs, as
    `supervisorctl restart` would: /health shows the new worker as soon as it registers."""
    import xmlrpc.client

    program = render.PROGRAM_PREFIX + args.name
    t = _target(args)
    with apply.connect(t.settings) as proxy:
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
        return target.wait_profile(t, proxy, args.name, args.wait, old_pid)


def cmd_wait(args: argparse.Namespace) -> int:
    t = _target(args)
    with apply.connect(t.settings) as proxy:
        return target.wait_profile(t, proxy, args.name, args.timeout, args.not_pid)


def cmd_doctor(args: argparse.Namespace) -> int:
    from bpool.studio import doctor  # the browser stack only for the command that needs it

    return doctor.main(args)


def cmd_login(args: argparse.Namespace) -> int:
    from bpool.ops import login  # the browser stack only for the command that needs it

    t = _target(args)
    studio = args.studio_url or t.env.get("BPOOL_STUDIO_URL") or config.value("BPOOL_STUDIO_URL")
    s = login.LoginSettings(
        args.name, args.auth_directory or t.settings.cookie_dir, studio,
        t.env.get("BPOOL_CHROMIUM_PATH") or config.value("BPOOL_CHROMIUM_PATH"),
        args.timeout, args.headless)

    def sync() -> int:
        if args.auth_directory is not None:  # saved elsewhere (to be copied): not this pool's
            print(f"not synced: copy the file into the pool's cookie directory, then run "
                  f"`bpool profiles sync` there")
            return 0
        return cmd_sync(argparse.Namespace(conf=args.conf, auth_directory=None, simulator=None,
                                           render_only=False))

    def restart(name: str) -> int:
        if not apply.supervisord_alive(t.settings):
            return 0  # the worker starts with the new file when the pool does
        return cmd_restart(argparse.Namespace(conf=args.conf, name=name, wait=None))

    return login.run(s, sync, restart, human=getattr(args, "human", None))  # tests: a script


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", type=Path, help="the profile's cookie file (cookies/NAME.json)")
    p.add_argument("--studio-url", help="BPOOL_STUDIO_URL (default https://aistudio.google.com)")
    p.add_argument("--model", help="the model to switch to and ask (default: the first offered)")
    p.add_argument("--prompt", default=None, help="what to ask (default: a short fixed prompt)")
    p.add_argument("--browser", choices=("auto", "camoufox", "chromium"), help="BPOOL_BROWSER")
    p.add_argument("--headed", action="store_true", help="show the window (BPOOL_HEADLESS=0)")
    p.add_argument("--timeout-s", type=float, default=None, metavar="S",
                   help="the longest any wait of a step may take (default 120)")
    p.add_argument("--capture", type=Path, default=None, metavar="DIR",
                   help="also save the page's ListModels / GenerateContent bodies, private "
                        "values removed")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="BPOOL_RUN_DIR (the doctor's browser and snapshots: <run dir>/doctor/)")


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
    st = sub.add_parser("status", help="the pool as a table (exit 1 when no worker can serve)")
    pool_status.add_arguments(st)
    st.set_defaults(func=pool_status.run)
    dr = sub.add_parser("doctor", help="check one profile against the live page, step by step")
    _doctor_arguments(dr)
    dr.set_defaults(func=cmd_doctor)
    lo = sub.add_parser("login", help="sign an account in and save it as a profile")
    lo.add_argument("name", help="the profile name (the file becomes cookies/NAME.json)")
    lo.add_argument("--auth-directory", type=Path, default=None,
                    help="save into this directory instead of the pool's cookie directory, "
                         "and do not sync (a file to copy to a server)")
    lo.add_argument("--timeout", type=float, default=600.0, metavar="S",
                    help="how long to wait for the sign-in (default 600)")
    lo.add_argument("--studio-url", default=None,
                    help="the site to sign in to (the pool's BPOOL_STUDIO_URL)")
    lo.add_argument("--headless", action="store_true",
                    help="no window and no display check (scripted sign-ins, tests)")
    lo.set_defaults(func=cmd_login)
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
