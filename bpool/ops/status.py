"""`bpool status`: the pool as the front's /health sees it, as a table in the terminal.

    bpool status [--json] [--watch [S]] [--url URL]

One row per worker (profile, state, the models it serves, jobs served, when its login's first
session cookie expires, cool-down left, last error), then one row per
profile and model it worked for (requests, tokens, errors by kind). The cool-down column shows
the account-wide rest of a cooling or paused worker and the rate-limit cool-downs per model of an
idle or busy one ("gemini-2.5-pro 40 min": quotas are per account and model, so such a worker
still serves its other models). Exit status 0 when at least one worker can serve (idle or busy),
1 when none can or the front does not answer.
`--watch` redraws every S seconds (default 2) until Ctrl-C. /health is read with the pool's key
when keys are configured (without one it shows only counts), the way `bpool wait-profile` reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, TextIO

from bpool.ops import wait as waiting

SERVING = ("idle", "busy")
COLUMNS = ("PROFILE", "STATE", "MODELS", "JOBS", "LOGIN", "COOL-DOWN", "LAST ERROR")
USAGE_COLUMNS = ("PROFILE", "MODEL", "REQUESTS", "PROMPT", "COMPLETION", "ERRORS")
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def can_serve(body: Any) -> bool:
    return isinstance(body, dict) and body.get("status") == "ok"


def _duration(left: Any) -> str:
    left = float(left)
    return f"{left:.0f} s" if left < 120 else f"{left / 60:.0f} min"


def _cooldown(w: dict[str, Any]) -> str:
    parts = []
    if w.get("cooldown_remaining_s") is not None:
        parts.append(_duration(w["cooldown_remaining_s"]))
    cooling = w.get("cooling")
    if isinstance(cooling, dict):
        parts += [f"{model} {_duration(left)}" for model, left in sorted(cooling.items())]
    return ", ".join(parts) or "-"


def _expiry(at: Any, now: float) -> str:
    """When the login's first session cookie expires, as one token: "9d", "5h", "40m",
    "expired", or "-" when the worker did not say (attached or no session cookie)."""
    if not isinstance(at, (int, float)):
        return "-"
    left = at - now
    if left <= 0:
        return "expired"
    return f"{left / 86400:.0f}d" if left >= 2 * 86400 else (
        f"{left / 3600:.0f}h" if left >= 7200 else f"{max(1, left // 60):.0f}m")


def _models(w: dict[str, Any]) -> str:
    models = w.get("models")
    return ",".join(str(m) for m in models) if isinstance(models, list) and models else "-"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Aligned columns; the last one is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + "  " + r[-1]
            for r in rows]


def _usage(rows: Any) -> list[str]:
    if not isinstance(rows, list) or not rows:
        return []
    table = [USAGE_COLUMNS] + [
        (str(u.get("profile_id", "?")), str(u.get("model", "?")), str(u.get("requests", 0)),
         str(u.get("prompt_tokens", 0)), str(u.get("completion_tokens", 0)),
         ", ".join(f"{k} {v}" for k, v in sorted((u.get("errors") or {}).items())) or "-")
        for u in rows if isinstance(u, dict)
    ]
    return [""] + _table(table)


def _cell(text: Any, width: int) -> str:
    text = " ".join(str(text).split())  # an error message on one line
    return text if len(text) <= width else text[: width - 1] + "…"


def render(body: Any, url: str, now: float | None = None) -> str:
    """The table (and a summary line) for one /health answer; None means no answer."""
    now = time.time() if now is None else now
    if not isinstance(body, dict):
        return f"the front does not answer at {url}\n"
    head = [f"pool: {body.get('status', '?')}"]
    for name in ("idle", "busy", "queue_length"):
        if isinstance(body.get(name), int):
            head.append(f"{name.replace('_length', '')} {body[name]}")
    lines = [", ".join(head)]
    if isinstance(body.get("error"), dict) and body["error"].get("message"):
        lines.append(f"  {body['error']['message']}")
    workers = body.get("workers")
    if not isinstance(workers, list):
        if "worker_count" in body:
            lines.append(f"{body['worker_count']} worker(s); the front shows their details only "
                         "with an API key (BPOOL_API_KEYS / BPOOL_API_KEYS_FILE)")
        return "\n".join(lines) + "\n"
    rows = [COLUMNS] + [
        (str(w.get("profile_id", "?")), str(w.get("state", "?")), _models(w),
         str(w.get("jobs_served", 0)), _expiry(w.get("cookie_expires_at"), now), _cooldown(w),
         _cell(w.get("last_error") or "-", 70))
        for w in sorted(workers, key=lambda w: str(w.get("profile_id")))
    ]
    lines += _table(rows)
    if not workers:
        lines.append("(no worker has registered with the broker)")
    lines += _usage(body.get("usage"))
    return "\n".join(lines) + "\n"


def show(body: Any, url: str, as_json: bool, out: TextIO) -> int:
    if as_json:
        out.write(json.dumps(body, indent=2) + "\n")
    else:
        out.write(render(body, url))
        from bpool.config import run_dir
        from bpool.ops.members import read_waiting

        left = read_waiting(run_dir())
        if left:  # kept out by the pool cap at the last sync
            out.write(f"waiting for a place (MAX_BROWSER_POOL_SIZE): {', '.join(left)}\n")
    out.flush()
    return 0 if can_serve(body) else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print /health's JSON (null if no answer)")
    p.add_argument("--watch", type=float, nargs="?", const=2.0, default=None, metavar="S",
                   help="redraw every S seconds (default 2) until Ctrl-C")
    p.add_argument("--url", default=None,
                   help="the front's /health (default from BPOOL_HOST / BPOOL_PORT)")


def run(args: argparse.Namespace, out: TextIO | None = None,
        fetch: Callable[[str], Any] = waiting.fetch_health,
        sleep: Callable[[float], None] = time.sleep) -> int:
    out = out or sys.stdout
    url = args.url or waiting.health_url()
    if args.watch is None:
        return show(fetch(url), url, args.json, out)
    interval = max(0.2, args.watch)
    code = 1
    try:
        while True:
            body = fetch(url)
            if not args.json and out.isatty():
                out.write(CLEAR)
            code = show(body, url, args.json, out)
            sleep(interval)
    except KeyboardInterrupt:
        return code  # Ctrl-C is how a watch ends: report the last state seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bpool status", description="The pool as a table.")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
