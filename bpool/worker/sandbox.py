"""Who a browser runs as, whether Chromium's own sandbox can be on, and what it may see.

A worker running as root keeps root for itself (it reads the 0600 cookie files and writes the
run directory) but starts its browser as the unprivileged `BPOOL_BROWSER_USER` (default
`bpool-browser`, created by scripts/bootstrap). The browser's executable becomes a two-line
wrapper that `exec`s setpriv: the pid, the process group Playwright made for it and the pipe fds
(3 and 4) Playwright talks over all stay the same, only the uid changes. Root can still read the
browser's /proc entries and signal it, so procs.kill_tagged works across the change.

Chromium refuses its sandbox as root and needs user namespaces without it; whether the browser's
user can create them is probed once per process (`unshare` as that user) and cached. When it
cannot, the browser runs with --no-sandbox and the worker logs one warning saying so.

The browser's environment is built from an allow-list (`browser_env`): never the worker's API
keys, CURVE keys or anything else it happens to hold.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pwd
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bpool.sandbox")

# What a browser needs from the worker's environment; everything else stays behind.
PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY",
              "FONTCONFIG_FILE", "FONTCONFIG_PATH")
PASSED_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxError(Exception):
    """The configured browser user cannot be used (missing, no home, no setpriv)."""


@dataclass(frozen=True)
class BrowserUser:
    name: str
    uid: int
    gid: int
    home: Path

    def data_root(self, run_dir: Path) -> Path:
        """Where this pool's browsers keep their data: under the user's own home (the run
        directory is 0700 root and stays so), one folder per pool."""
        key = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
        return self.home / "pools" / key


def resolve_user(name: str) -> BrowserUser | None:
    """The user the browser should run as, or None for "the worker's own user": the setting is
    empty, names root, or the worker is not root (it cannot switch, and is unprivileged
    already). SandboxError when a root worker is told to use a user that is not usable."""
    if not name or os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise SandboxError(
            f"BPOOL_BROWSER_USER={name}: no such user; create it with scripts/bootstrap (as "
            "root), or set BPOOL_BROWSER_USER= (empty) to run the browsers as root") from None
    if pw.pw_uid == 0:
        return None
    home = Path(pw.pw_dir)
    try:
        st = home.stat()
    except OSError:
        st = None
    if st is None or st.st_uid != pw.pw_uid or not home.is_dir():
        raise SandboxError(
            f"BPOOL_BROWSER_USER={name}: its home {home} is missing or not owned by it; run "
            f"scripts/bootstrap, or `install -d -m 700 -o {name} {home}`")
    setpriv_path()  # fail now, not at the first launch
    return BrowserUser(name, pw.pw_uid, pw.pw_gid, home)


RUN_DIR_MARK = "run-dir"  # in each pool's folder: which run directory it belongs to


def claim_pool_folder(user: BrowserUser, run_dir: Path) -> Path:
    """This pool's folder in the user's home, marked with its run directory; folders of pools
    whose run directory is gone (a test pool, a deleted checkout) and whose workers were
    killed before they could clean up are removed on the way (they hold copies of sessions)."""
    pools = user.home / "pools"
    if pools.is_dir():
        for folder in pools.iterdir():
            try:
                owner = Path((folder / RUN_DIR_MARK).read_text().strip())
            except OSError:
                continue
            if not owner.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
    folder = user.data_root(run_dir)
    for d in (pools, folder):
        make_private(d, user)
    (folder / RUN_DIR_MARK).write_text(str(run_dir.resolve()))
    return folder


def setpriv_path() -> str:
    found = shutil.which("setpriv") or ("/usr/bin/setpriv" if os.access("/usr/bin/setpriv", os.X_OK)
                                         else None)
    if found is None:
        raise SandboxError("setpriv (util-linux) is needed to start browsers as another user; "
                           "install util-linux, or set BPOOL_BROWSER_USER= (empty)")
    return found


def drop_argv(user: BrowserUser) -> list[str]:
    """The command prefix that runs what follows as `user`, with no supplementary groups."""
    return [setpriv_path(), f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--"]


def write_wrapper(path: Path, user: BrowserUser, executable: Path) -> Path:
    """A script to hand Playwright as the executable: it becomes the browser (exec), as `user`."""
    argv = " ".join(shlex.quote(a) for a in [*drop_argv(user), str(executable)])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"#!/bin/sh\nexec {argv} \"$@\"\n")
    tmp.chmod(0o700)  # only root runs it: Playwright's driver, in the worker's process
    os.replace(tmp, path)
    return path


@functools.cache
def userns_works(uid: int | None) -> bool:
    """Can `uid` (None: this process's user) create the namespaces Chromium's sandbox uses?
    Root never gets the sandbox: Chromium refuses to run it as root."""
    if (uid is None and os.geteuid() == 0) or uid == 0:
        return False
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    argv = [unshare, "--user", "--pid", "--net", "--fork", "true"]
    if uid is not None:
        pw = pwd.getpwuid(uid)
        argv = [*drop_argv(BrowserUser(pw.pw_name, uid, pw.pw_gid, Path(pw.pw_dir))), *argv]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10, env={"PATH": DEFAULT_PATH})
    except (OSError, subprocess.TimeoutExpired, SandboxError):
        return False
    return done.returncode == 0


_warned: list[bool] = []


def use_sandbox(user: BrowserUser | None) -> bool:
    """Whether to launch Chromium with its sandbox; logs once per process when it cannot."""
    ok = userns_works(user.uid if user else None)
    if not ok and not _warned:
        _warned.append(True)
        who = user.name if user else ("root" if os.geteuid() == 0 else "this user")
        log.warning("Chromium runs WITHOUT its sandbox (--no-sandbox): %s", (
            "the browser runs as root (set BPOOL_BROWSER_USER, see docs/security.md)"
            if who == "root" else f"user namespaces do not work for {who} on this machine "
            "(kernel.unprivileged_userns_clone, or a container that forbids them)"))
    return ok


def browser_env(home: Path, tag_name: str, tag: str, env: dict[str, str] | None = None
                ) -> dict[str, str]:
    """The browser's whole environment: what it needs from `env` (default os.environ), a
    private HOME, and the owner tag bpool.worker.procs finds it by."""
    src = os.environ if env is None else env
    out = {k: v for k, v in src.items() if k in PASSED_ENV or k.startswith(PASSED_PREFIXES)}
    out.setdefault("PATH", DEFAULT_PATH)
    out.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), **{tag_name: tag})
    return out


def make_private(path: Path, user: BrowserUser | None) -> Path:
    """A 0700 directory owned by the browser's user (or ours)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    if user is not None:
        os.chown(path, user.uid, user.gid)
    return path
