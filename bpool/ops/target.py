"""Which pool an operator command works on, with the pool's own settings (not the shell's).

Every `bpool` command finds the pool through its supervisord.conf (`--conf`,
BPOOL_SUPERVISORD_CONF, default the checkout's) and reads the settings it runs with from
`run/pool.json` (bpool.ops.record). Only the sync that starts a pool (no supervisord runs it
yet: `scripts/run`) records them from its environment. Flags given on the command line
(`--auth-directory`, `--simulator`) are explicit choices: they are applied and recorded.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from bpool import config
from bpool.config import REPO_ROOT
from bpool.ops import apply, record, render, wait as waiting

Say = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class Target:
    settings: render.SyncSettings
    rec: record.PoolRecord | None  # None: a pool started before records existed
    env: dict[str, str]  # the environment with the pool's settings in force

    def health_url(self) -> str:
        return waiting.health_url(self.env)

    def key(self, proxy: Any) -> str:
        return waiting.operator_key(self.env, proxy) or ""

    def log(self, name: str) -> Path:
        return self.settings.log_dir / f"{render.PROGRAM_PREFIX}{name}.log"


def conf_path(conf: Path | None) -> Path:
    return (conf or Path(config.value("BPOOL_SUPERVISORD_CONF")
                         or REPO_ROOT / "supervisord.conf")).resolve()


def resolve(conf: Path | None, *, starting: bool = False, auth_directory: Path | None = None,
            simulator: str | None = None, say: Say = _stderr) -> Target:
    """The pool of `conf`. `starting` (sync): when no supervisord runs the pool, record this
    environment as its settings. Otherwise the record wins and a differing caller's value is
    reported through `say`, once per setting."""
    conf = conf_path(conf)
    bare = render.SyncSettings(conf=conf)
    previous = record.load(bare.run_dir)
    if starting and not apply.supervisord_alive(bare):
        rec: record.PoolRecord | None = record.of_env(os.environ, previous)
    else:
        rec = previous
        if rec is not None:
            record.report(rec, os.environ, say)
    if rec is not None:
        if auth_directory is not None:
            rec.settings["BROWSER_PROFILE_DIR"] = str(auth_directory.resolve())
        if simulator is not None:
            rec.settings["BPOOL_SIMULATOR"] = simulator
    env = rec.env() if rec is not None else dict(os.environ)
    s = render.SyncSettings.from_env(conf, env)
    changes: dict[str, Any] = {"real_profiles_seen": rec.real_profiles_seen if rec else False}
    if auth_directory is not None:
        changes["auth_dir"] = auth_directory.resolve()
    if simulator is not None:
        changes["simulator"] = simulator
    return Target(replace(s, **changes), rec, env)


# ---------------------------------------------------------------------------- commands


def generated(s: render.SyncSettings) -> dict[str, Path | None]:
    """profile → the cookie file of every generated browser program."""
    out = {}
    for fname, text in apply.read_generated(s.include_dir).items():
        program = fname.removesuffix(".conf")
        if program.startswith(render.PROGRAM_PREFIX):
            out[program.removeprefix(render.PROGRAM_PREFIX)] = render.profile_file_of(text)
    return out


def unknown(t: Target, name: str) -> str | None:
    """Why `name` is no profile of this pool (None if it is one)."""
    known = generated(t.settings)
    if name in known:
        return None
    names = ", ".join(sorted(known)) or "none"
    return (f"no profile {name!r} (known: {names}); run `bpool profiles sync` after adding its "
            "cookie file")


def list_profiles(t: Target, out: Callable[[str], None] = print) -> int:
    """One line per profile: program, state, detail (supervisord joined with the broker)."""
    with apply.connect(t.settings) as proxy:
        key = t.key(proxy)
        workers = waiting.fetch_workers(t.health_url(), key)
        mode = t.rec.mode if t.rec and t.rec.mode else ""
        if mode and mode != "accounts":
            out(f"# mode: {mode}")
        for name, path in sorted(generated(t.settings).items()):
            info = waiting.proc_info(proxy, name)
            state, detail = waiting.describe(name, info, workers, str(t.log(name)))
            out(f"{render.PROGRAM_PREFIX}{name}\t{state}\t{detail}\t{path}")
    return 0


def wait_profile(t: Target, proxy: Any, name: str, timeout_s: float, not_pid: int | None
                 ) -> int:
    why = unknown(t, name)
    if why:
        print(f"bpool: {why}", file=sys.stderr)
        return 1
    url, key = t.health_url(), t.key(proxy)
    verdict = waiting.wait(
        name, timeout_s,
        fetch=lambda: waiting.fetch_workers(url, key),
        info=lambda: waiting.proc_info(proxy, name),
        not_pid=not_pid, log=str(t.log(name)),
    )
    print(f"bpool: {verdict.message}", file=sys.stdout if verdict.ok else sys.stderr)
    tail = "" if verdict.ok else waiting.log_tail(proxy, name)
    if tail:
        print(f"last lines of {render.PROGRAM_PREFIX}{name}'s log ({t.log(name)}):\n{tail}",
              file=sys.stderr)
    return 0 if verdict.ok else 1
