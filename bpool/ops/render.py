"""From a directory of cookie files to supervisord program sections (the pure part of profile sync).

    cookies/alice.json  ──►  run/supervisor/browser-alice.conf  ──► [program:browser-alice]

`discover()` decides which profiles the pool should run (the cookie directory, a legacy single
file, or the demo profiles served by the simulator); `render_*()` turn them into program sections;
`plan()` compares them with the files already generated. The output is deterministic: a profile
whose file is unchanged renders byte for byte the same section, so supervisord's reread sees no
change and leaves its worker alone. Writing the files and talking to supervisord live in
`bpool.ops.apply`; the command line is `bpool profiles sync` (bpool.ops.cli).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from bpool import config
from bpool.config import REPO_ROOT
from bpool.worker.profiles import PROFILE_ID_RULE, valid_profile_id

PROGRAM_PREFIX = "browser-"
SIM_PROGRAM = "sim"
PROFILE_FILE_MARK = "; bpool-profile-file: "
SIMULATOR_MODES = ("auto", "on", "off")
DEMO_NAMES = ("alice", "bob")
CONFIG_ERROR_EXIT = 78  # browser_proc: bad profile or missing browser; do not retry forever
STOP_MARGIN_S = 15  # supervisord's stop timeout = the worker's drain timeout + this


@dataclass(frozen=True)
class SyncSettings:
    """Where the pool lives and how its programs are rendered (one object per sync)."""

    conf: Path  # supervisord.conf; everything else is relative to its directory
    auth_dir: Path | None = None  # --auth-directory / BROWSER_PROFILE_DIR; None = <here>/cookies
    legacy_file: Path | None = None  # ACTIVE_AUTH_JSON_PATH (deprecated single profile)
    simulator: str = config.default("BPOOL_SIMULATOR")  # auto: only without profiles; on; off
    sim_host: str = config.default("BPOOL_SIM_HOST")
    sim_port: int = config.default("BPOOL_SIM_PORT")
    drain_timeout_s: float = config.default("BPOOL_DRAIN_TIMEOUT_S")
    # Test hook (BPOOL_WORKER_CMD): a format string with {python}, {profile} and {profile_id}
    # replacing the browser worker's command, e.g. to run bpool.testing.fake_worker instead.
    worker_cmd: str | None = None
    # A real cookie file was seen once (bpool.ops.record): from then on an empty cookie
    # directory means "no accounts", not demo mode, unless the simulator is on.
    real_profiles_seen: bool = False
    # Session host programs (BPOOL_SESSION_HOSTS; from_env's default is 1). 0 here: a settings
    # object built by hand renders the chat pool alone.
    session_hosts: int = 0
    max_pool_size: int = 0  # MAX_BROWSER_POOL_SIZE: at most this many workers (0 = no limit)
    endpoints: str = ""  # BPOOL_BROWSER_ENDPOINTS: running browsers to attach (bpool.worker.attach)

    @classmethod
    def from_env(cls, conf: Path | None = None, env: Mapping[str, str] | None = None
                 ) -> SyncSettings:
        """From the registry's variables (of `env`, default this process's environment);
        config.ConfigError names a bad one."""
        def get(name: str) -> Any:
            return config.value(name, env)

        auth = get("BROWSER_PROFILE_DIR")
        legacy = get("ACTIVE_AUTH_JSON_PATH")
        conf = conf or Path(get("BPOOL_SUPERVISORD_CONF") or REPO_ROOT / "supervisord.conf")
        return cls(
            conf=conf.resolve(),
            auth_dir=Path(auth).resolve() if auth else None,
            legacy_file=Path(legacy).resolve() if legacy else None,
            simulator=get("BPOOL_SIMULATOR"),
            sim_host=get("BPOOL_SIM_HOST"),
            sim_port=get("BPOOL_SIM_PORT"),
            drain_timeout_s=get("BPOOL_DRAIN_TIMEOUT_S"),
            worker_cmd=get("BPOOL_WORKER_CMD") or None,
            session_hosts=get("BPOOL_SESSION_HOSTS"),
            max_pool_size=get("MAX_BROWSER_POOL_SIZE"),
            endpoints=get("BPOOL_BROWSER_ENDPOINTS"),
        )

    @property
    def here(self) -> Path:
        return self.conf.parent

    @property
    def run_dir(self) -> Path:
        return self.here / "run"  # what supervisord.conf gives its children as BPOOL_RUN_DIR

    @property
    def include_dir(self) -> Path:
        return self.run_dir / "supervisor"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "log"

    @property
    def socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def cookie_dir(self) -> Path:
        return self.auth_dir or self.here / "cookies"

    @property
    def demo_dir(self) -> Path:
        return self.run_dir / "demo-cookies"  # never cookies/: demo profiles are not accounts

    @property
    def python(self) -> Path:
        return self.here / ".venv" / "bin" / "python"

    @property
    def studio_url(self) -> str:
        return f"http://{self.sim_host}:{self.sim_port}"


@dataclass(frozen=True)
class Profile:
    id: str
    path: Path


@dataclass(frozen=True)
class Refused:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Discovery:
    source: str  # what the profiles came from, for the operator
    profiles: list[Profile] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    demo: bool = False  # the profiles are the simulator's demo accounts
    simulator: bool = False  # run the simulator and point the browsers at it
    attached: dict[str, str] = field(default_factory=dict)  # profile id -> its browser's ws URL

    @property
    def mode(self) -> str:
        """What the front tells its clients (BPOOL_POOL_MODE): `demo` when the answers come
        from the simulator, `accounts` with real accounts, `none` with no cookie file."""
        if self.simulator:
            return "demo"
        return "accounts" if self.profiles or self.refused else "none"


Check = Callable[[Path], None]  # raises ValueError (or ProfileError) with the reason


def candidates(directory: Path) -> list[Path]:
    """The cookie files of a directory: `*.json`, not hidden (temporary files are hidden), sorted.
    Backups (`alice.json.bak-<time>`) do not end in .json and are left alone."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.name.endswith(".json") and not p.name.startswith(".") and not p.is_dir())


def validate(path: Path, check: Check) -> Profile | Refused:
    pid = path.name[: -len(".json")] if path.name.endswith(".json") else path.stem
    if not valid_profile_id(pid):
        return Refused(path, f"profile name {pid!r} can only use {PROFILE_ID_RULE} "
                             "(it becomes the program name browser-<name>): rename the file")
    try:
        check(path)
    except Exception as exc:  # the checker's message is the reason shown to the operator
        return Refused(path, getattr(exc, "reason", None) or str(exc))
    return Profile(pid, path.resolve())


def discover(settings: SyncSettings, check: Check) -> Discovery:
    """Which profiles to run. The cookie directory wins over the legacy single file; with no
    cookie file at all the pool runs the demo accounts, but only on the first start (no real
    cookie file seen yet) or when the simulator is chosen (`on`); never when it is `off`."""
    d = settings.cookie_dir
    files = candidates(d)
    warnings: list[str] = []
    if settings.auth_dir is not None and not d.is_dir():
        raise config.ConfigError(f"BROWSER_PROFILE_DIR: the cookie directory {d} does not exist")
    legacy = settings.legacy_file
    if legacy is not None and (settings.auth_dir is not None or files):
        warnings.append(f"ACTIVE_AUTH_JSON_PATH={legacy} is ignored: the cookie directory {d} "
                        "is used instead")
        legacy = None
    if legacy is not None:
        warnings.append("ACTIVE_AUTH_JSON_PATH is deprecated: move the file into cookies/ "
                        "(or BROWSER_PROFILE_DIR) as <profile>.json")
        found = Discovery(f"legacy file {legacy}", warnings=warnings)
        files = [legacy]
    elif files or settings.simulator == "off" or (
            settings.real_profiles_seen and settings.simulator != "on"):
        found = Discovery(f"cookie directory {d}", warnings=warnings)
    else:
        found = Discovery(f"demo profiles in {settings.demo_dir} (no cookie file in {d})",
                          warnings=warnings, demo=True)
        files = candidates(settings.demo_dir)
    found.simulator = found.demo or settings.simulator == "on"
    for path in files:
        if legacy is not None and not path.exists():
            found.refused.append(Refused(path, "no such file"))
            continue
        v = validate(path, check)
        (found.profiles if isinstance(v, Profile) else found.refused).append(v)
    return found


# ---------------------------------------------------------------------------- rendering


def _value(text: str) -> str:
    """A value as supervisord reads it: `%` would start an expansion."""
    if "\n" in text:
        raise ValueError(f"a newline cannot go into supervisord.conf: {text!r}")
    return text.replace("%", "%%")


def _command(argv: list[str]) -> str:
    return _value(" ".join(shlex.quote(a) for a in argv))


def _environment(env: dict[str, str]) -> str:
    for k, v in env.items():
        if '"' in v or "\\" in v:
            raise ValueError(f"{k}={v!r}: quotes and backslashes cannot go into supervisord.conf")
    return _value(",".join(f'{k}="{v}"' for k, v in sorted(env.items())))


def _log_lines(settings: SyncSettings, program: str) -> list[str]:
    return [
        "redirect_stderr=true",
        f"stdout_logfile={_value(str(settings.log_dir / (program + '.log')))}",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=3",
    ]


def stop_wait_s(settings: SyncSettings) -> int:
    """supervisord's stopwaitsecs: longer than the worker's drain, so a graceful stop is never
    cut short by SIGKILL while a request is still streaming."""
    return int(settings.drain_timeout_s + 0.999) + STOP_MARGIN_S


def worker_argv(settings: SyncSettings, profile: Profile) -> list[str]:
    if settings.worker_cmd:
        q = shlex.quote
        return shlex.split(settings.worker_cmd.format(
            python=q(str(settings.python)), profile=q(str(profile.path)), profile_id=q(profile.id)))
    return [str(settings.python), "-m", "bpool.browser_proc", "--profile", str(profile.path)]


def lifeline(settings: SyncSettings, argv: list[str], keep: tuple[str, ...] = ()) -> list[str]:
    """`argv` run through bpool.ops.lifeline: it dies with supervisord and sees no secret setting
    (API keys, CURVE server keys) except those in `keep`."""
    opts = [x for var in keep for x in ("--keep", var)]
    return [str(settings.python), "-m", "bpool.ops.lifeline", *opts, "--", *argv]


def front_stop_wait_s(conf: Path) -> int | None:
    """stopwaitsecs of [program:front] in supervisord.conf (None if it cannot be read)."""
    import configparser

    cp = configparser.RawConfigParser(strict=False)
    try:
        cp.read(conf)
        return cp.getint("program:front", "stopwaitsecs", fallback=10)  # supervisord's default
    except (configparser.Error, ValueError):
        return None


ENDPOINTS_FILE = "endpoints.json"  # the manifest as sync read it, for attached workers
ATTACH_MARK = "; bpool-attach: "


def render_browser(settings: SyncSettings, profile: Profile, simulator: bool,
                   attach_ws: str = "") -> str:
    name = PROGRAM_PREFIX + profile.id
    env = {"BPOOL_DRAIN_TIMEOUT_S": f"{settings.drain_timeout_s:g}"}
    if simulator:
        env["BPOOL_STUDIO_URL"] = settings.studio_url
    attach_lines = []
    if attach_ws:  # a new URL changes the section, so its worker is restarted to reach it
        import hashlib

        env["BPOOL_BROWSER_ENDPOINTS"] = str(settings.run_dir / ENDPOINTS_FILE)
        attach_lines = [ATTACH_MARK + hashlib.sha256(attach_ws.encode()).hexdigest()[:16]]
    lines = [
        "; Generated by `bpool profiles sync`: edit the cookie directory and sync, not this file.",
        PROFILE_FILE_MARK + str(profile.path),
        *attach_lines,
        f"[program:{name}]",
        f"command={_command(lifeline(settings, worker_argv(settings, profile)))}",
        f"directory={_value(str(settings.here))}",
        "priority=100",
        "autostart=true",
        # A crash (or kill -9) restarts it; a clean exit after a drain or a config error does not.
        "autorestart=unexpected",
        f"exitcodes=0,{CONFIG_ERROR_EXIT}",
        # Dying within startsecs is a failed start: supervisord waits 1 s, 2 s, 3 s ... between
        # the startretries attempts, then gives up (FATAL) instead of spinning.
        "startsecs=5",
        "startretries=5",
        "stopsignal=TERM",
        f"stopwaitsecs={stop_wait_s(settings)}",
        # SIGTERM to the worker alone: the Playwright driver shares its process group and dies
        # of a SIGTERM, which would cut the request being drained. SIGKILL after stopwaitsecs
        # goes to the whole group; a browser left behind then (it has its own group) is reaped
        # by the profile's next worker at start, or by sync when the profile is removed.
        "stopasgroup=false",
        "killasgroup=true",
        f"environment={_environment(env)}",
        *_log_lines(settings, name),
    ]
    return "\n".join(lines) + "\n"


def render_sim(settings: SyncSettings) -> str:
    argv = [str(settings.python), "-m", "bpool.sim", "serve",
            "--host", settings.sim_host, "--port", str(settings.sim_port)]
    lines = [
        "; Generated by `bpool profiles sync`: the studio simulator, for demo accounts.",
        f"[program:{SIM_PROGRAM}]",
        f"command={_command(lifeline(settings, argv))}",
        f"directory={_value(str(settings.here))}",
        "priority=30",
        "autorestart=true",
        "startsecs=1",
        "startretries=10",
        "stopsignal=TERM",
        "stopwaitsecs=10",
        *_log_lines(settings, SIM_PROGRAM),
    ]
    return "\n".join(lines) + "\n"


SESSIONS_PROGRAM = "sessions"


def render_sessions(settings: SyncSettings) -> str:
    """Browser-session hosts (bpool.session_host), BPOOL_SESSION_HOSTS of them: one group,
    each process with its own --slot (its browsers, lock and reaping tag are per slot)."""
    argv = [str(settings.python), "-m", "bpool.session_host", "--slot", "%(process_num)d"]
    lines = [
        "; Generated by `bpool profiles sync`: browser-session hosts (docs/sessions.md).",
        f"[program:{SESSIONS_PROGRAM}]",
        # %(process_num)d is supervisord's, not ours: it must survive _value's escaping.
        f"command={_command(lifeline(settings, argv)).replace('%%(process_num)d', '%(process_num)d')}",
        f"process_name=%(program_name)s-%(process_num)d",
        f"numprocs={settings.session_hosts}",
        f"directory={_value(str(settings.here))}",
        "priority=50",
        "autorestart=unexpected",
        f"exitcodes=0,{CONFIG_ERROR_EXIT}",
        "startsecs=2",
        "startretries=10",
        "stopsignal=TERM",
        "stopwaitsecs=20",
        # Each browser is its own process group and dies with its host (PR_SET_PDEATHSIG);
        # a restarted host reaps what a SIGKILL left behind.
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={_value(str(settings.log_dir / 'sessions-%(process_num)d.log'))}"
        .replace("%%(process_num)d", "%(process_num)d"),
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=3",
    ]
    return "\n".join(lines) + "\n"


def conf_name(program: str) -> str:
    return program + ".conf"


def is_managed(program: str) -> bool:
    """Programs that sync generates (and may add, change or remove); all others are left alone."""
    return program.startswith(PROGRAM_PREFIX) or program in (SIM_PROGRAM, SESSIONS_PROGRAM)


def desired(settings: SyncSettings, found: Discovery) -> dict[str, str]:
    """File name → content of every generated section the pool should have. A profile whose
    section cannot be written (a newline in its path) moves to `found.refused`: one bad file
    must not keep the others from being applied."""
    out = {}
    for p in list(found.profiles):
        try:
            out[conf_name(PROGRAM_PREFIX + p.id)] = render_browser(
                settings, p, found.simulator, found.attached.get(p.id, ""))
        except ValueError as exc:
            found.profiles.remove(p)
            found.refused.append(Refused(p.path, str(exc)))
    if found.simulator:
        out[conf_name(SIM_PROGRAM)] = render_sim(settings)
    if settings.session_hosts > 0:
        out[conf_name(SESSIONS_PROGRAM)] = render_sessions(settings)
    return out


@dataclass
class Plan:
    write: dict[str, str]  # new or changed files
    delete: list[str]
    kept: list[str]  # refused profiles whose running worker keeps its previous section


def plan(want: dict[str, str], have: dict[str, str], found: Discovery) -> Plan:
    """What to change in the include directory. A refused profile that already runs keeps its
    section: a corrupt replacement file must not take a working account out of the pool."""
    refused_names = {conf_name(PROGRAM_PREFIX + r.path.name.removesuffix(".json"))
                     for r in found.refused}
    kept = sorted(n for n in have if n in refused_names and n not in want)
    write = {n: t for n, t in sorted(want.items()) if have.get(n) != t}
    delete = sorted(n for n in have if n not in want and n not in kept
                    and is_managed(n.removesuffix(".conf")))
    return Plan(write, delete, kept)


def profile_file_of(section: str) -> Path | None:
    """The cookie file a generated section runs (from its marker line)."""
    for line in section.splitlines():
        if line.startswith(PROFILE_FILE_MARK):
            return Path(line[len(PROFILE_FILE_MARK):])
    return None
