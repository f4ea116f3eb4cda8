"""Start a pool program so that it dies with supervisord, and without secrets it does not need.

    python -m bpool.ops.lifeline [--keep VAR]... [--env-file FILE] -- COMMAND [ARG]...

supervisord runs every program through this: it asks the kernel to send SIGTERM to the process
when its parent (supervisord) dies (Linux `PR_SET_PDEATHSIG`, kept across exec), drops the
secret variables the program was not given with `--keep`, and execs COMMAND in its place (same
pid, so supervisord's signals reach the program itself). `--env-file` adds the `BPOOL_*=value`
lines of a file that sync writes (the front's BPOOL_POOL_MODE): supervisord's own environment
is fixed when it starts, the pool's mode is not. Without it a `kill -9` of supervisord
leaves the broker, the front and every worker running, holding the pool's locks and ports, and
the next supervisord cannot start them.

SIGTERM, not SIGKILL: a worker then closes its browser (which runs in a process group of its
own and would otherwise outlive it) and the front closes its open responses. What still
survives, e.g. a process hung in its shutdown, is reaped by the next `bpool profiles sync`
before a new supervisord starts (bpool.ops.apply.reap_orphans): it finds them by the
BPOOL_POOL_PROCESS=<run dir> entry this adds to the environment, which every child inherits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

# Settings that hold or point to secrets; a program sees only those it is given with --keep.
# The broker keeps the CURVE server keys, the front the API keys; workers, their browsers and
# the simulator get none.
SECRET_ENV = ("BPOOL_API_KEYS", "BPOOL_API_KEYS_FILE", "BPOOL_CURVE_DIR")
_PR_SET_PDEATHSIG = 1
# BPOOL_POOL_PROCESS=<run dir>: marks every process of a pool (see reap_orphans).
POOL_MARK = "BPOOL_POOL_PROCESS"


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send `sig` to this process when its parent dies. False where the call
    is unavailable (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def scrubbed(env: dict[str, str], keep: set[str] | frozenset[str] = frozenset()
             ) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in SECRET_ENV or k in keep}


def read_env_file(path: str) -> dict[str, str]:
    """`BPOOL_NAME=value` lines (others ignored); a missing file adds nothing."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                name, sep, val = line.strip().partition("=")
                if sep and name.startswith("BPOOL_") and name not in SECRET_ENV:
                    out[name] = val
    except OSError:
        pass
    return out


def parse(argv: list[str]) -> tuple[set[str], list[str], list[str]]:
    keep: set[str] = set()
    env_files: list[str] = []
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] in ("--keep", "--env-file") and i + 1 < len(argv):
            (keep.add if argv[i] == "--keep" else env_files.append)(argv[i + 1])
            i += 2
        else:
            raise SystemExit(f"bpool.ops.lifeline: unexpected {argv[i]!r}; "
                             "usage: [--keep VAR]... [--env-file FILE] -- COMMAND [ARG]...")
    command = argv[i + 1:]
    if not command:
        raise SystemExit("bpool.ops.lifeline: no command after --")
    return keep, command, env_files


def main(argv: list[str] | None = None) -> int:
    keep, command, env_files = parse(sys.argv[1:] if argv is None else argv)
    parent = os.getppid()
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the kernel could be told
        return 1
    env = scrubbed(dict(os.environ), keep)
    for path in env_files:
        env.update(read_env_file(path))
    run_dir = env.get("BPOOL_RUN_DIR")
    if run_dir:  # inherited by everything the program starts, browsers included
        env[POOL_MARK] = os.path.realpath(run_dir)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"bpool.ops.lifeline: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    raise SystemExit(main())
