"""The one registry of bpool's settings and the one logging setup, shared by every process.

Every environment variable bpool reads is declared once in `REGISTRY` below, with its type (and
constraints), default, unit and one line of meaning; the README's configuration table is generated
from it (`python -m bpool.ops.cli config-table`) and a test fails when the two differ. A process
builds its settings object with `build(SettingsStruct, overrides)`: each field of the msgspec
Struct names its variable in `ENV`, values come from the environment (converted and checked by
msgspec), and command-line flags override them in one way only (a flag that was given, i.e. not
None, wins). A bad value raises `ConfigError` naming the variable and the reason; entry points turn
it into one line on stderr and exit `EX_CONFIG` (78), which supervisord is told not to retry.

Durations are floats in seconds and end in `_s`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, TypeVar

import msgspec

REPO_ROOT = Path(__file__).resolve().parent.parent
EX_CONFIG = 78  # sysexits.h: a configuration error; restarting cannot help

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class ConfigError(ValueError):
    """A setting has a value bpool cannot use; the message names the variable and the reason."""


@dataclass(frozen=True)
class Var:
    name: str
    type: Any
    default: Any
    meaning: str
    unit: str = ""
    group: str = "pool"
    shown_default: str = ""  # how the README shows a default that depends on other settings


def _vars(*entries: Var) -> dict[str, Var]:
    return {v.name: v for v in entries}


# fmt: off
REGISTRY: dict[str, Var] = _vars(
    # -- every process
    Var("BPOOL_RUN_DIR", str, "", "private directory (0700) for sockets, logs, snapshots, browser profiles", group="pool", shown_default="run/"),
    Var("BPOOL_LOG_LEVEL", LogLevel, "INFO", "log level of every process (cookie values and API keys are never logged)"),
    Var("BPOOL_LOG_FORMAT", Literal["text", "json"], "text", "`json`: one JSON object per line (ts, level, process, profile, event, request_id, job_id)"),
    Var("BPOOL_HEARTBEAT_INTERVAL_S", Positive, 1.0, "heartbeat period between broker and its peers", "s"),
    Var("BPOOL_HEARTBEAT_LIVENESS", Count, 3, "a peer silent for interval × liveness is dead", "beats"),
    Var("BPOOL_DRAIN_TIMEOUT_S", NonNegative, 30.0, "how long a stopping worker (or front) may finish its current request", "s"),
    Var("BPOOL_QUEUE_TIMEOUT_S", Positive, 60.0, "how long a request may wait for a free browser (then 503 with `Retry-After`)", "s"),
    # -- the HTTP front
    Var("BPOOL_HOST", str, "127.0.0.1", "where the HTTP front listens", group="front"),
    Var("BPOOL_PORT", Port, 2048, "port of the HTTP front", group="front"),
    Var("BPOOL_API_KEYS", str, "", "comma-separated API keys; none configured = open (a warning at start)", group="front"),
    Var("BPOOL_API_KEYS_FILE", str, "", "file with one API key per line (whole-line `#` comments; a file with no key stops the front)", group="front"),
    Var("BPOOL_MAX_BODY_BYTES", Count, 10 * 1024 * 1024, "request body limit (413 above it)", "bytes", group="front"),
    Var("BPOOL_JOB_TIMEOUT_S", Positive, 900.0, "the front's limit once a browser holds the request (then 504)", "s", group="front"),
    Var("BPOOL_STATUS_TIMEOUT_S", Positive, 2.0, "how long `/health` waits for the broker's status", "s", group="front"),
    Var("BPOOL_CORS_ORIGINS", str, "", "comma-separated web origins allowed to call the API from a browser (any other `Origin` gets 403)", group="front"),
    Var("BPOOL_METRICS_PUBLIC", bool, False, "`1`: `/metrics` answers without an API key (for a scraper on a trusted network)", group="front"),
    Var("BPOOL_KEEPALIVE_TIMEOUT_S", Positive, 75.0, "an idle keep-alive connection is closed after this", "s", group="front"),
    Var("BPOOL_BODY_TIMEOUT_S", Positive, 30.0, "limit for receiving a request body (then 408)", "s", group="front"),
    Var("BPOOL_POOL_MODE", Literal["", "demo", "accounts", "none"], "", "the pool's mode, set by sync for the front (run/front.env): `demo` marks answers `x-bpool-demo: 1`, `none` answers 503 `no_accounts` (internal)", group="front"),
    Var("BPOOL_WRITE_TIMEOUT_S", Positive, 30.0, "a client that reads nothing of its answer for this long is cut off (its job cancelled)", "s", group="front"),
    Var("BPOOL_MAX_ATTACHMENT_BYTES", Count, 5 * 1024 * 1024, "largest image or file a message may carry (data: URL or fetched URL; 400 above it)", "bytes", group="front"),
    Var("BPOOL_MAX_ATTACHMENTS_BYTES", Count, 16 * 1024 * 1024, "all images and files of one request together (400 above it)", "bytes", group="front"),
    Var("BPOOL_ATTACHMENT_FETCH_TIMEOUT_S", Positive, 15.0, "limit for fetching one http(s) image URL", "s", group="front"),
    Var("BPOOL_ATTACHMENT_PRIVATE_URLS", bool, False, "`1`: image URLs may point at loopback and private addresses (off: the front never fetches from its own network)", group="front"),
    # -- the broker
    Var("BPOOL_MAX_QUEUE", NonNegativeInt, 256, "how many requests may wait (then 429 with `Retry-After`)", "requests", group="broker"),
    Var("BPOOL_COOLDOWN_S", Positive, 60.0, "cool-down of a rate-limited account when the page gives no time", "s", group="broker"),
    Var("BPOOL_PAUSE_S", Positive, 1800.0, "how long an account refused with a permission / bot check stays out of rotation", "s", group="broker"),
    Var("BPOOL_BROKER_FRONT", str, "", "the broker's front-side endpoint", group="broker", shown_default="ipc://<run dir>/front.sock"),
    Var("BPOOL_BROKER_WORKERS", str, "", "the broker's worker-side endpoint (a worker on another host sets it to the tcp address)", group="broker", shown_default="ipc://<run dir>/workers.sock"),
    Var("BPOOL_BROKER_TCP", str, "", "also listen for workers on this tcp endpoint (CURVE only; docs/operations.md)", group="broker"),
    Var("BPOOL_CURVE_DIR", str, "", "where CURVE key pairs live", group="broker", shown_default="<run dir>/curve"),
    Var("BPOOL_CURVE_SERVER_KEY", str, "", "the broker's public key file (a worker on another host)", group="broker"),
    Var("BPOOL_CURVE_CLIENT_KEY", str, "", "this worker's secret key file (a worker on another host)", group="broker"),
    # -- browser workers
    Var("BPOOL_BROWSER", Literal["auto", "camoufox", "chromium"], "auto", "`auto`: Camoufox if its browser is installed, else Chromium", group="worker"),
    Var("BPOOL_CHROMIUM_PATH", str, "/usr/bin/chromium", "the Chromium binary", group="worker"),
    Var("BPOOL_CHROMIUM_ARGS", str, "", "more Chromium flags, shell-quoted, after bpool's own (docs/capacity.md)", group="worker"),
    Var("BPOOL_HEADLESS", bool, True, "`0` shows the browser windows", group="worker"),
    Var("BPOOL_LAUNCH_TIMEOUT_S", Positive, 60.0, "how long a browser may take to start", "s", group="worker"),
    Var("BPOOL_STUDIO_URL", str, "https://aistudio.google.com", "the site the workers drive (the simulator's URL in demo mode)", group="worker"),
    Var("BPOOL_TEMPORARY_CHAT", bool, True, "turn the page's temporary chat on so prompts are not saved to the account", group="worker"),
    Var("BPOOL_STEP_TIMEOUT_S", Positive, 30.0, "limit of one page step (click, fill, read)", "s", group="worker"),
    Var("BPOOL_NAVIGATION_TIMEOUT_S", Positive, 60.0, "limit of a page load", "s", group="worker"),
    Var("BPOOL_FIRST_CHUNK_TIMEOUT_S", Positive, 180.0, "prompt sent → first piece of the answer", "s", group="worker"),
    Var("BPOOL_STREAM_IDLE_TIMEOUT_S", Positive, 120.0, "silence allowed between pieces of an answer", "s", group="worker"),
    Var("BPOOL_ANSWER_TIMEOUT_S", Positive, 900.0, "limit of a whole answer", "s", group="worker"),
    Var("BPOOL_RATE_LIMIT_COOLDOWN_S", Positive, 300.0, "cool-down after a burst limit (\"too many requests\")", "s", group="worker"),
    Var("BPOOL_QUOTA_COOLDOWN_S", Positive, 4 * 3600.0, "cool-down after \"exceeded quota\" when the reset time is unknown", "s", group="worker"),
    Var("BPOOL_TIMINGS_FILE", str, "", "append per-job phase timings (JSON lines) here; used by `bench browser`", group="worker"),
    Var("BPOOL_COOKIE_REFRESH_S", NonNegative, 6 * 3600.0, "how often a worker saves its browser's refreshed login back to the cookie file (also at a clean stop; previous file kept as `NAME.json.bak`); 0 = never", "s", group="worker"),
    Var("BPOOL_BROWSER_OWNER", str, "", "set by a worker for the browsers it launches, so a restart can reap them (internal)", group="worker"),
    Var("BPOOL_BROWSER_USER", str, "bpool-browser", "a worker running as root starts its browser as this unprivileged user (scripts/bootstrap creates it); empty = the worker's own user (docs/security.md)", group="worker"),
    Var("BPOOL_BROWSER_ENDPOINTS", str, "", "browsers already running to attach to instead of launching: a JSON list of `{id?, cookie_path, ws}` inline or the path of a JSON file (docs/operations.md, attach mode)", group="worker"),
    # -- operating (supervisord, profiles)
    Var("BROWSER_PROFILE_DIR", str, "", "where cookie files are read from (`--auth-directory` overrides)", group="ops", shown_default="cookies/"),
    Var("ACTIVE_AUTH_JSON_PATH", str, "", "old single-file form of `BROWSER_PROFILE_DIR` (still read, with a warning)", group="ops"),
    Var("BPOOL_SIMULATOR", Literal["auto", "on", "off"], "auto", "`auto`: run the simulator (demo mode) only when there is no cookie file", group="ops"),
    Var("BPOOL_SUPERVISORD_CONF", str, "", "the supervisord.conf the `bpool` command operates", group="ops", shown_default="supervisord.conf"),
    Var("BPOOL_POOL_PROCESS", str, "", "set by bpool.ops.lifeline for every program supervisord runs (and all their children), so that a start after supervisord died can reap what it left (internal)", group="ops"),
    Var("BPOOL_WORKER_CMD", str, "", "command that replaces `python -m bpool.browser_proc` in generated programs (tests)", group="ops"),
    Var("MAX_BROWSER_POOL_SIZE", NonNegativeInt, 0, "at most this many browser workers are started by sync (0 = no limit); the other profiles are listed as waiting", "browsers", group="ops"),
    # -- browser sessions (docs/sessions.md)
    Var("BPOOL_BROKER_SESSIONS", str, "", "the broker's endpoint for session hosts (a host on another machine sets it to the tcp address)", group="sessions", shown_default="ipc://<run dir>/sessions.sock"),
    Var("BPOOL_BROKER_SESSIONS_FRONT", str, "", "the broker's session endpoint for the HTTP front (ipc only)", group="sessions", shown_default="ipc://<run dir>/sessions-front.sock"),
    Var("BPOOL_SESSIONS_TCP", str, "", "also listen for session hosts on this tcp endpoint (CURVE only, the broker's keys)", group="sessions"),
    Var("BPOOL_SESSION_HOSTS", NonNegativeInt, 1, "session host programs `bpool profiles sync` renders on this machine (0 = none)", "hosts", group="sessions"),
    Var("BPOOL_MAX_CONTEXTS", Count, 20, "browsers one session host runs at once (its capacity)", "browsers", group="sessions"),
    Var("BPOOL_SESSION_TIMEOUT_S", Positive, 3600.0, "a session's lifetime: the default and the most a client may ask for", "s", group="sessions"),
    Var("BPOOL_SESSION_IDLE_TIMEOUT_S", Positive, 300.0, "a session with no CDP frame for this long ends: the default and the most a client may ask for", "s", group="sessions"),
    Var("BPOOL_SESSION_QUEUE_MAX_S", NonNegative, 30.0, "the longest `queue_s` a client may wait for a free browser (then 429 with `Retry-After`)", "s", group="sessions"),
    Var("BPOOL_SESSION_START_TIMEOUT_S", Positive, 30.0, "how long a session's browser may take to start", "s", group="sessions"),
    Var("BPOOL_SESSION_BIND_HOST", str, "127.0.0.1", "address the session browsers' CDP listens on (a host on another machine: its private address)", group="sessions"),
    Var("BPOOL_SESSION_HOST_ID", str, "", "a session host's name", group="sessions", shown_default="<hostname>-<slot>"),
    Var("BPOOL_DATABASE_URL", str, "", "PostgreSQL URL of the session log (empty: SQLite at `<run dir>/sessions.sqlite3`)", group="sessions"),
    Var("BPOOL_S3_ENDPOINT", str, "", "S3-compatible store for session recordings (MinIO: `http://host:9000`; AWS: `https://s3.<region>.amazonaws.com`); empty = files in `<run dir>/recordings`", group="sessions"),
    Var("BPOOL_S3_REGION", str, "us-east-1", "region of the recordings bucket", group="sessions"),
    Var("BPOOL_S3_ACCESS_KEY", str, "", "access key of the recordings store (empty: boto3's own lookup, e.g. `AWS_ACCESS_KEY_ID`)", group="sessions"),
    Var("BPOOL_S3_SECRET_KEY", str, "", "secret key of the recordings store (never logged)", group="sessions"),
    Var("MINIO_BUCKET", str, "recordings", "bucket of the recordings (created when missing)", group="sessions"),
    Var("BPOOL_ACCOUNT_LEASES", bool, False, "`1`: `POST /v1/sessions {\"profile\": ...}` may lease an idle or logged-out account's own Chromium (each worker's browser then listens for CDP on a loopback port; docs/sessions.md)", group="sessions"),
    # -- the studio simulator
    Var("BPOOL_SIM_HOST", str, "127.0.0.1", "simulator bind host (also the cookie domain of its profiles)", group="sim"),
    Var("BPOOL_SIM_PORT", Port, 9223, "simulator port (0 = any free port)", group="sim"),
    Var("BPOOL_SIM_DIR", str, "", "simulator state (accounts, bound URL)", group="sim", shown_default="<run dir>/sim"),
    Var("BPOOL_SIM_RPC_PORT", Port, 0, "port of the simulator's RPC host, a second origin like the real page's (0 = any free port)", group="sim"),
    # simulator knobs (bpool/sim/knobs.py; also `--<name>` flags and POST /__sim/config); the defaults are the real page
    Var("BPOOL_SIM_TOKENS_PER_S", NonNegative, 50.0, "answer pace (0 = no pacing)", "tokens/s", group="sim"),
    Var("BPOOL_SIM_FIRST_TOKEN_S", NonNegative, 0.2, "delay before the first chunk", "s", group="sim"),
    Var("BPOOL_SIM_ANSWER_S", NonNegative, 0.0, "> 0: every answer ends exactly this long after its request", "s", group="sim"),
    Var("BPOOL_SIM_SPLIT", Literal["none", "chars", "bytes"], "chars", "each chunk sent in two writes cut inside a string (`chars`) or a UTF-8 character (`bytes`)", group="sim"),
    Var("BPOOL_SIM_QUOTA", NonNegativeInt, 0, "GenerateContent requests per account and model per window (0 = unlimited)", "requests", group="sim"),
    Var("BPOOL_SIM_QUOTA_WINDOW_S", NonNegative, 60.0, "the quota's sliding window", "s", group="sim"),
    Var("BPOOL_SIM_QUOTA_KIND", Literal["burst", "daily"], "burst", "the quota message: a burst limit or the daily quota", group="sim"),
    Var("BPOOL_SIM_REQUIRE_TOKEN", bool, True, "GenerateContent must carry a token minted by a served page", group="sim"),
    Var("BPOOL_SIM_NESTING", Literal["nested", "flat"], "nested", "answer body `[[chunk, ...]]` (the real page) or the older `[chunk, ...]`", group="sim"),
    Var("BPOOL_SIM_METADATA_CHUNK", bool, True, "end the answer with the metadata-only chunk", group="sim"),
    Var("BPOOL_SIM_ERRORS", Literal["frame", "bare", "http"], "frame", "errors as a frame in a 200 body's chunk list, a bare frame body, or an HTTP 4xx", group="sim"),
    Var("BPOOL_SIM_REGION_BLOCKED", bool, False, "serve the \"Available regions\" page instead of the studio", group="sim"),
    Var("BPOOL_SIM_TRANSPORT", Literal["xhr", "fetch"], "xhr", "how the page calls its RPCs (`fetch`: an older page)", group="sim"),
    Var("BPOOL_SIM_SETTINGS_PANEL", Literal["collapsible", "always"], "collapsible", "run settings removed from the DOM while collapsed, or always shown (older)", group="sim"),
    Var("BPOOL_SIM_RUN_BUTTON", Literal["current", "legacy"], "current", "`ms-run-button button.ctrl-enter-submits`, or the older `type=submit` / `aria-label=Run`", group="sim"),
    Var("BPOOL_SIM_PROMPT_BOX", Literal["current", "legacy"], "current", "the prompt textarea in `ms-prompt-input-wrapper`, or in the older `ms-prompt-box`", group="sim"),
    Var("BPOOL_SIM_TEMP_CHAT", Literal["toggle", "legacy", "menu"], "toggle", "the temporary-chat toggle: current, older attribute, or behind \"View more actions\"", group="sim"),
    Var("BPOOL_SIM_WELCOME_DIALOG", bool, True, "the welcome dialog on a fresh profile", group="sim"),
    Var("BPOOL_SIM_COOKIE_BAR", bool, True, "the cookie notification bar on a fresh profile", group="sim"),
    Var("BPOOL_SIM_GOT_IT", bool, True, "a feature tip with a \"Got it\" button on a fresh profile", group="sim"),
    Var("BPOOL_SIM_PER_USER_QUOTA", bool, True, "the page sends StreamGenerateContentPerUserQuota (answered 404) before each answer", group="sim"),
    Var("BPOOL_SIM_COUNT_TOKENS", bool, True, "the page sends CountTokens while the prompt is edited", group="sim"),
    Var("BPOOL_SIM_AUTOSAVE", bool, True, "the page saves a chat that is not temporary after each answer", group="sim"),
)
# fmt: on


def default(name: str) -> Any:
    """The registered default of a variable (for struct field defaults: one place only)."""
    return REGISTRY[name].default


def value(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The variable's value from the environment, converted and checked; its default if unset."""
    var = REGISTRY[name]
    raw = (os.environ if env is None else env).get(name)
    if raw is None or raw.strip() == "":
        return var.default
    return _convert(var, raw.strip())


def _convert(var: Var, raw: Any) -> Any:
    if var.type is bool and isinstance(raw, str):
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{var.name}={raw!r}: use 1 or 0")
    choices = typing.get_args(var.type) if typing.get_origin(var.type) is Literal else ()
    if choices and isinstance(raw, str) and raw not in choices and raw.lower() in choices:
        raw = raw.lower()  # `Chromium` means chromium
    if choices and raw not in choices:
        raise ConfigError(f"{var.name}={raw!r}: use one of {', '.join(choices)}")
    try:
        return msgspec.convert(raw, var.type, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{var.name}={raw!r}: {_reason(exc)}") from None


def _dec_hook(typ: type, obj: Any) -> Any:
    """Types msgspec does not build itself: paths."""
    if typ is Path and isinstance(obj, (str, Path)):
        return Path(obj)
    raise NotImplementedError(f"{typ!r}")


def _reason(exc: msgspec.ValidationError) -> str:
    text = str(exc).split(" - at ")[0]
    if text.endswith("got `str`"):  # lax conversion failed: say it in words
        return {"Expected `int`": "not an integer", "Expected `float`": "not a number"}.get(
            text.split(",")[0], text)
    return text


S = TypeVar("S")


def build(cls: type[S], overrides: Mapping[str, Any] | None = None,
          env: Mapping[str, str] | None = None) -> S:
    """Settings dataclass `cls` from its variables (`cls.ENV`: field -> variable), then
    `overrides` (command-line flags; None means "not given") on top, converted and checked by
    msgspec against the fields' annotated types. ConfigError names what is wrong."""
    mapping: Mapping[str, str] = getattr(cls, "ENV")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for fname, vname in mapping.items():
        raw = (os.environ if env is None else env).get(vname)
        if raw is not None and raw.strip() != "":
            values[fname] = _convert(REGISTRY[vname], raw.strip())
    flags = set()
    for fname, given in (overrides or {}).items():
        if given is not None and fname in names:
            values[fname] = given
            flags.add(fname)
    try:
        return msgspec.convert(values, cls, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        where = str(exc).rsplit("$.", 1)[-1].strip("`") if "$." in str(exc) else ""
        fname = re.split(r"[.\[]", where)[0]
        if fname in flags or fname not in mapping:
            name = f"--{fname.replace('_', '-')}={values.get(fname)!r}" if fname else cls.__name__
        else:
            name = f"{mapping[fname]}={values.get(fname)!r}"
        raise ConfigError(f"{name}: {_reason(exc)}") from None


# ------------------------------------------------------------------------------ shared values


def run_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the pool's ipc sockets, logs and snapshots live (`BPOOL_RUN_DIR`, default `run/`)."""
    return Path(value("BPOOL_RUN_DIR", env) or REPO_ROOT / "run").resolve()


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed; tighten it if it exists with wider permissions."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def front_endpoint(rd: Path | None = None) -> str:
    """The broker's front-side ROUTER (the HTTP front connects here)."""
    return value("BPOOL_BROKER_FRONT") or f"ipc://{(rd or run_dir()) / 'front.sock'}"


def worker_endpoint(rd: Path | None = None) -> str:
    """The broker's worker-side ROUTER (browser and fake workers connect here)."""
    return value("BPOOL_BROKER_WORKERS") or f"ipc://{(rd or run_dir()) / 'workers.sock'}"


# ------------------------------------------------------------------------------ the README table


GROUPS = {"pool": "Every process", "front": "HTTP front", "broker": "Broker",
          "worker": "Browser workers", "ops": "Operating (supervisord, profiles)",
          "sim": "Studio simulator (demo mode and tests)", "sessions": "Browser sessions"}


def config_table() -> str:
    """The README's configuration tables (one per group), generated from the registry."""
    out: list[str] = []
    for group, title in GROUPS.items():
        out += [f"**{title}**", "", "| Variable | Default | Unit | Meaning |",
                "| --- | --- | --- | --- |"]
        for var in REGISTRY.values():
            if var.group == group:
                shown = var.shown_default or _show(var.default)
                out.append(f"| `{var.name}` | {shown} | {var.unit} | {var.meaning} |")
        out.append("")
    return "\n".join(out).rstrip("\n")


def _show(v: Any) -> str:
    if v == "" or v is None:
        return "*(none)*"
    if isinstance(v, bool):
        return "`1`" if v else "`0`"
    if isinstance(v, float) and v.is_integer():
        return f"`{int(v)}`"
    return f"`{v}`"


# ------------------------------------------------------------------------------ logging

_RESERVED = set(vars(logging.makeLogRecord({})))
_secrets: set[str] = set()
_state = {"process": "bpool", "profile": ""}


def add_secret(*values: str) -> None:
    """Never let these strings (cookie values, API keys) reach a log line: they become `***`."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def _scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": _state["process"],
            "profile": getattr(record, "profile", None) or _state["profile"] or None,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, val in vars(record).items():
            if key not in _RESERVED and key not in out and not key.startswith("_"):
                out[key] = val
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(out, ensure_ascii=False, default=str))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items()
                          if k in ("request_id", "job_id") and v)
        line = super().format(record)
        return _scrub(f"{line} [{extras}]" if extras else line)


def setup_logging(process: str, profile: str = "", env: Mapping[str, str] | None = None) -> None:
    """The one logging setup: level `BPOOL_LOG_LEVEL`, format `BPOOL_LOG_FORMAT`, to stderr.
    Safe to call again (replaces the handler). Raises ConfigError for a bad level or format."""
    level = value("BPOOL_LOG_LEVEL", env)
    fmt = value("BPOOL_LOG_FORMAT", env)
    _state.update(process=process, profile=profile)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        who = f"{process}[{profile}]" if profile else process
        handler.setFormatter(_TextFormatter(f"%(asctime)s {who} %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


# ------------------------------------------------------------------------------ stopping


def stop_on_signals(on_stop: Callable[[], None], loop: Any = None) -> None:
    """SIGTERM / SIGINT: the first one only records (`on_stop`; the process drains and exits by
    itself), a second one exits at once, for an operator who will not wait for the drain."""
    import signal

    received: list[int] = []

    def handle(signum: int, *_: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            on_stop()
            return
        logging.getLogger("bpool").warning("second %s: exiting without draining",
                                           signal.Signals(signum).name)
        logging.shutdown()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        if loop is not None:
            loop.add_signal_handler(sig, handle, sig)
        else:
            signal.signal(sig, handle)
