"""The I/O side of profile sync: files in the include directory, and supervisord over XML-RPC.

`sync()` renders the sections (bpool.ops.render), writes only the files that changed, then asks
supervisord to reread its configuration and applies the difference group by group: added
programs are started, removed ones stopped (gracefully: their workers drain) and removed,
changed ones replaced. Programs that sync does not generate (broker, front) are never touched,
and a profile whose file did not change keeps its worker running.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import xmlrpc.client
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from supervisor.xmlrpc import SupervisorTransport

from bpool.config import ensure_private_dir
from bpool.ops import record
from bpool.ops.members import add_attached, apply_cap, check_profile, write_waiting
from bpool.ops.render import (
    DEMO_NAMES, PROGRAM_PREFIX, Discovery, Plan, SyncSettings, candidates, desired, discover,
    front_stop_wait_s, is_managed, plan,
)

Say = Callable[[str], None]


def prepare_dirs(settings: SyncSettings) -> None:
    """What supervisord.conf needs before supervisord can start (it creates no directories)."""
    ensure_private_dir(settings.run_dir)
    settings.include_dir.mkdir(exist_ok=True)
    settings.log_dir.mkdir(exist_ok=True)


class SyncError(RuntimeError):
    """Sync could not do its work (not a bad setting: that is config.ConfigError)."""


def make_demo_profiles(settings: SyncSettings) -> None:
    """Log the demo accounts in at the simulator (its account file lives in the pool's run
    directory, where the sim program will look) and write their cookie files."""
    env = {**os.environ, "BPOOL_RUN_DIR": str(settings.run_dir)}
    env.pop("BPOOL_SIM_DIR", None)
    argv = [sys.executable, "-m", "bpool.sim", "make-profiles", "--out", str(settings.demo_dir),
            "--names", ",".join(DEMO_NAMES), "--host", settings.sim_host]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SyncError(f"could not make the demo profiles: {done.stderr.strip()}")


def read_generated(include_dir: Path) -> dict[str, str]:
    if not include_dir.is_dir():
        return {}
    return {p.name: p.read_text() for p in sorted(include_dir.glob("*.conf"))}


def write_plan(include_dir: Path, p: Plan) -> None:
    for name, text in p.write.items():
        tmp = include_dir / f".{name}.{os.getpid()}.tmp"  # not *.conf: never included half-written
        tmp.write_text(text)
        os.replace(tmp, include_dir / name)
    for name in p.delete:
        (include_dir / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- supervisord


@contextmanager
def connect(settings: SyncSettings) -> Iterator[Any | None]:
    """An XML-RPC proxy to the running supervisord (None when it is not running); its
    connection is closed on exit."""
    if not settings.socket.exists():
        yield None
        return
    transport = SupervisorTransport(None, None, serverurl=f"unix://{settings.socket}")
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    try:
        try:
            proxy.supervisor.getState()
        except OSError:  # a stale socket file from a supervisord that is gone
            proxy = None
        yield proxy
    finally:
        transport.close()


def supervisord_alive(settings: SyncSettings) -> bool:
    """A supervisord runs this pool: its socket answers, or its pid file names a live
    supervisord (one that is still starting has no socket yet)."""
    with connect(settings) as proxy:
        if proxy is not None:
            return True
    try:
        pid = int((settings.run_dir / "supervisord.pid").read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"supervisord" in f.read()
    except (OSError, ValueError):
        return False


def reap_orphans(settings: SyncSettings, grace_s: float = 5.0) -> list[int]:
    """Processes a dead supervisord left behind: its programs (bpool.ops.lifeline marks them and
    everything they start with BPOOL_POOL_PROCESS=<run dir>) and the browsers of its workers.
    They would hold the broker's and the profiles' locks and the front's port, and keep serving
    beside the new pool. Only called while no supervisord runs this pool: SIGTERM, then SIGKILL
    after `grace_s`. Returns the pids found."""
    from bpool.ops.lifeline import POOL_MARK
    from bpool.worker import procs

    run_dir = os.path.realpath(settings.run_dir)
    mark = f"{POOL_MARK}={run_dir}".encode()
    owner = f"{procs.OWNER_ENV}=".encode()

    def ours(entry: bytes) -> bool:
        if entry == mark:
            return True
        if entry.startswith(owner):  # a browser: <run dir>/browsers/<profile>
            tag = os.path.realpath(entry[len(owner):].decode(errors="replace"))
            return os.path.dirname(os.path.dirname(tag)) == run_dir
        return False

    spared = procs.ancestors()
    pids = [p for p in procs.pids_with_env(ours) if p not in spared and procs.alive(p)]
    if pids:
        procs.terminate(pids, grace_s)
    return pids


@dataclass
class Applied:
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # changes in supervisord.conf, not applied
    errors: list[str] = field(default_factory=list)


def _stop_and_remove(proxy: Any, name: str) -> None:
    try:
        proxy.supervisor.stopProcessGroup(name, True)  # blocks while the worker drains
    except xmlrpc.client.Fault as f:
        if "NOT_RUNNING" not in f.faultString:
            raise
    proxy.supervisor.removeProcessGroup(name)


def reap_browsers(run_dir: Path, program: str) -> None:
    """A worker killed after its stop timeout leaves its browser behind (the browser runs in a
    process group of its own); with the profile gone, no next worker would reap it."""
    if program.startswith(PROGRAM_PREFIX):
        from bpool.worker import procs

        procs.kill_tagged(str(run_dir.resolve() / "browsers" / program[len(PROGRAM_PREFIX):]))


def remove_profile_data(run_dir: Path, program: str) -> None:
    """A removed profile's browser data (its logged-in browser profile) and page snapshots: they
    hold the account's session and pages, and nothing will use them again. Called after its
    worker stopped."""
    if program.startswith(PROGRAM_PREFIX):
        pid = program[len(PROGRAM_PREFIX):]
        for sub in ("browsers", "snapshots"):
            shutil.rmtree(run_dir / sub / pid, ignore_errors=True)
        from bpool import config
        from bpool.worker import sandbox

        try:  # a browser run as BPOOL_BROWSER_USER keeps its data in that user's home
            user = sandbox.resolve_user(config.value("BPOOL_BROWSER_USER"))
        except (sandbox.SandboxError, config.ConfigError):
            user = None
        if user is not None:
            shutil.rmtree(user.data_root(run_dir) / pid, ignore_errors=True)


def apply(proxy: Any, run_dir: Path) -> Applied:
    """Reread the configuration and apply the changes of generated programs only."""
    [[added, changed, removed]] = proxy.supervisor.reloadConfig()
    out = Applied(others=sorted(n for n in added + changed + removed if not is_managed(n)))

    def each(names: list[str], step: Callable[[str], None], done: list[str]) -> None:
        for name in sorted(n for n in names if is_managed(n)):
            try:
                step(name)
                done.append(name)
            except xmlrpc.client.Fault as f:
                out.errors.append(f"{name}: {f.faultString}")

    def replace(name: str) -> None:
        _stop_and_remove(proxy, name)
        proxy.supervisor.addProcessGroup(name)

    def remove(name: str) -> None:
        _stop_and_remove(proxy, name)
        reap_browsers(run_dir, name)
        remove_profile_data(run_dir, name)

    # New capacity first, then replacements, then removals (which wait for their drain).
    each(added, proxy.supervisor.addProcessGroup, out.started)
    each(changed, replace, out.replaced)
    each(removed, remove, out.stopped)
    return out


# ---------------------------------------------------------------------------- the whole sync


def sync(settings: SyncSettings, *, render_only: bool = False, say: Say = print,
         rec: record.PoolRecord | None = None) -> int:
    """Exit status: 0 all profiles applied, 1 some refused or failed (the rest applied),
    2 nothing could be done. `rec`, the pool's record (bpool.ops.record), learns the mode and
    whether a real cookie file was seen, and is saved."""
    prepare_dirs(settings)
    # Two syncs at once (an operator and a script) would apply each other's half-written state.
    fd = os.open(settings.include_dir / ".sync.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _sync_locked(settings, render_only, say, rec)
    finally:
        os.close(fd)


FRONT_ENV = "front.env"  # read by bpool.ops.lifeline --env-file for [program:front]
FRONT_PROGRAM = "front"


def write_front_env(settings: SyncSettings, mode: str) -> bool:
    """The front's BPOOL_POOL_MODE (demo header, /health's mode, 503 no_accounts); True when
    it changed."""
    path = settings.run_dir / FRONT_ENV
    text = f"BPOOL_POOL_MODE={mode}\n"
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = settings.run_dir / f".{FRONT_ENV}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def restart_front(proxy: Any) -> str | None:
    """The front reads its mode at start; it drains its open responses on the way out."""
    try:
        try:
            proxy.supervisor.stopProcess(FRONT_PROGRAM, True)
        except xmlrpc.client.Fault as f:
            if "NOT_RUNNING" not in f.faultString:
                raise
        proxy.supervisor.startProcess(FRONT_PROGRAM, True)  # until RUNNING (its startsecs)
    except xmlrpc.client.Fault as f:
        return f"{FRONT_PROGRAM}: {f.faultString}"
    return None


def mode_notes(before: str, found: Discovery, settings: SyncSettings) -> list[str]:
    now = found.mode
    if before == now:
        return []
    if before == "demo" and now == "accounts":
        return ["demo mode ended: the cookie directory has accounts, so the simulator and the "
                "demo accounts stop and the workers drive the real site (to keep practising on "
                "the simulator instead, sync with --simulator on)"]
    if now == "none":
        return [f"no cookie file in {settings.cookie_dir}: no worker runs and the front answers "
                "503 no_accounts (a real cookie file was seen before, so this is not demo "
                "mode; --simulator on runs the demo accounts)"]
    if now == "demo" and before:
        return ["demo mode: the workers drive the simulator and every answer carries "
                "x-bpool-demo: 1"]
    return []


def stop_warnings(settings: SyncSettings) -> list[str]:
    """The front drains its open responses for BPOOL_DRAIN_TIMEOUT_S too, but its stopwaitsecs
    is static in supervisord.conf: say so when supervisord would SIGKILL it mid-drain."""
    wait = front_stop_wait_s(settings.conf)
    if wait is None or wait > settings.drain_timeout_s:
        return []
    return [f"[program:front] stopwaitsecs={wait} in {settings.conf} is not longer than "
            f"BPOOL_DRAIN_TIMEOUT_S={settings.drain_timeout_s:g}: supervisord would kill the "
            "front mid-drain; raise stopwaitsecs"]


def _sync_locked(settings: SyncSettings, render_only: bool, say: Say,
                 rec: record.PoolRecord | None) -> int:
    if not supervisord_alive(settings):
        reaped = reap_orphans(settings)
        if reaped:
            say(f"stopped {len(reaped)} processes left running by a supervisord that is gone "
                f"(pids {', '.join(map(str, sorted(reaped)))})")
    found: Discovery = discover(settings, check_profile)
    add_attached(settings, found)
    if found.demo and not candidates(settings.demo_dir):
        make_demo_profiles(settings)
        found = discover(settings, check_profile)
    have = read_generated(settings.include_dir)
    names = ", ".join(p.id for p in found.profiles) or "none"
    waiting = apply_cap(settings.max_pool_size, found, set(have))
    write_waiting(settings.run_dir, waiting)
    want = desired(settings, found)  # may refuse a profile whose section cannot be written
    for w in found.warnings + stop_warnings(settings):
        say(f"warning: {w}")
    say(f"profiles from {found.source}: {names}")
    for pid in sorted(found.attached):
        if any(p.id == pid for p in found.profiles):
            say(f"{pid} attaches to a browser already running (BPOOL_BROWSER_ENDPOINTS)")
    if waiting:
        say(f"waiting (MAX_BROWSER_POOL_SIZE={settings.max_pool_size}): "
            + ", ".join(p.id for p in waiting))
    for r in found.refused:
        say(f"refused {r}")
    p = plan(want, have, found)
    for name in p.kept:
        say(f"kept {name.removesuffix('.conf')} running with the cookies it started with")
    write_plan(settings.include_dir, p)
    for note in mode_notes(rec.mode if rec else "", found, settings):
        say(note)
    front_changed = write_front_env(settings, found.mode)
    if rec is not None:
        rec.mode = found.mode
        rec.real_profiles_seen = rec.real_profiles_seen or (bool(found.profiles)
                                                            and not found.demo)
        record.save(settings.run_dir, rec)
    status = 1 if found.refused else 0
    if render_only:
        say(f"wrote {len(p.write)} and removed {len(p.delete)} files in {settings.include_dir}")
        return status
    try:
        with connect(settings) as proxy:
            if proxy is None:
                say(f"supervisord is not running ({settings.socket}): the programs start with it")
                return status
            done = apply(proxy, settings.run_dir)
            if front_changed:
                err = restart_front(proxy)
                if err:
                    done.errors.append(err)
                else:
                    done.replaced.append(f"{FRONT_PROGRAM} (the pool is now in "
                                         f"{found.mode} mode)")
    except (OSError, xmlrpc.client.Error) as exc:
        say(f"error: could not apply the change through supervisord: {exc}")
        return 2
    for name in done.started:
        say(f"started {name}")
    for name in done.replaced:
        say(f"restarted {name}" if name.startswith(FRONT_PROGRAM + " ")
            else f"restarted {name} (its settings changed)")
    for name in done.stopped:
        say(f"stopped {name}")
    if done.others:
        say("note: supervisord.conf itself changed for " + ", ".join(done.others)
            + ": apply that with `supervisorctl update` when convenient")
    for e in done.errors:
        say(f"error: {e}")
    if not (done.started or done.replaced or done.stopped):
        say("no program changed")
    return 1 if (status or done.errors) else 0
