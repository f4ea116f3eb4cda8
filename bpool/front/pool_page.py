"""The live pool page: GET / and /pool, and the JSON it polls, GET /pool/data.

The page (front/static/pool.html, .css, .js: plain files, no build step) is public: it holds no
data. Its data endpoint is an API route like any other: with keys configured it needs one, which
the page asks for once and keeps in the browser's localStorage; with no keys (open mode) it just
works. The page polls rather than holding an SSE stream: a poll carries the key in a header
(EventSource cannot), survives a front restart without reconnect logic, and costs one status
query to the broker per poll and viewer, which /health costs already.

The request rate comes from the broker's `jobs_submitted` counter (every front's requests),
sampled at each poll: requests per minute over the last minute of samples.

The broker's status has no snapshot for a last error, so the page offers the newest snapshot a
worker on this host saved (`<run dir>/snapshots/<profile>/<time>-<step>.png`, named with its time
and step so it can be matched with the error); GET /pool/snapshot/NAME needs the key like the
data (a snapshot shows the account and the prompt).
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import web

from bpool import config
from bpool.front.appstate import LINK, SETTINGS
from bpool.front.errors import ApiError, json_response
from bpool.protocol import PoolStatus, WorkerStatus
from bpool.worker.profiles import valid_profile_id

STATIC_DIR = Path(__file__).parent / "static"
PAGE_PATHS = ("/", "/pool")
ASSET_URL = "/pool/static/"
ASSETS = {"pool.css": "text/css", "pool.js": "text/javascript"}
DATA_PATH = "/pool/data"
SNAPSHOT_URL = "/pool/snapshot/"
PUBLIC_PATHS = frozenset({*PAGE_PATHS, *(ASSET_URL + name for name in ASSETS)})
RATE_WINDOW_S = 60.0
# The page loads only its own files and talks only to its own origin.
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class RateMeter:
    """Requests per minute from samples of a counter that only grows while its broker lives."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()
        self.broker_id = ""

    def add(self, now: float, broker_id: str, count: int) -> float | None:
        if broker_id != self.broker_id or (self.samples and count < self.samples[-1][1]):
            self.samples.clear()  # a new broker counts from zero
            self.broker_id = broker_id
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()  # keep one sample at least a window old as the base
        t0, c0 = self.samples[0]
        if now - t0 < 1.0:
            return None  # too little time seen to say
        return round((count - c0) * 60.0 / (now - t0), 2)


RATE = web.AppKey("pool_rate", RateMeter)
RUN_DIR = web.AppKey("pool_run_dir", Path)


def newest_snapshot(run_dir: Path, profile: str) -> Path | None:
    """The profile's newest screenshot (names start with their time, so the last sorts last)."""
    if not valid_profile_id(profile):
        return None
    try:
        shots = sorted((run_dir / "snapshots" / profile).glob("*.png"))
    except OSError:
        return None
    return shots[-1] if shots else None


def worker_view(w: WorkerStatus, wall_now: float, snapshot: Path | None = None) -> dict[str, Any]:
    expires = w.cookie_expires_at
    return {
        "profile_id": w.profile_id, "account": w.account, "state": w.state,
        "since_s": round(w.since_s, 1), "jobs_served": w.jobs_served,
        "last_error": w.last_error, "job_id": w.job_id, "engine": w.engine,
        "cooldown_remaining_s": w.cooldown_remaining_s,
        "cooling": {m: round(s, 1) for m, s in sorted(getattr(w, "cooling", {}).items())},
        "cookie_expires_at": expires,
        "cookie_expires_in_s": None if expires is None else round(expires - wall_now),
        "last_answer_s": w.last_answer_s,
        "snapshot": snapshot.stem if snapshot is not None and w.last_error else None,
    }


def view(status: PoolStatus, rate: float | None, front: dict[str, Any], wall_now: float,
         run_dir: Path | None = None) -> dict[str, Any]:
    workers = [worker_view(w, wall_now, run_dir and newest_snapshot(run_dir, w.profile_id))
               for w in status.workers]
    return {
        "ok": True, "time": wall_now, "broker_id": status.broker_id,
        "queue_length": status.queue_length, "requests_per_min": rate,
        "serving": sum(w.state in ("idle", "busy") for w in status.workers),
        "workers": sorted(workers, key=lambda w: w["profile_id"]), "front": front,
    }


async def page(request: web.Request) -> web.Response:
    return web.Response(text=(STATIC_DIR / "pool.html").read_text(encoding="utf-8"),
                        content_type="text/html", headers=HEADERS)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(text=(STATIC_DIR / name).read_text(encoding="utf-8"),
                        content_type=ASSETS[name], headers=HEADERS)


async def data(request: web.Request) -> web.Response:
    link = request.app[LINK]
    front = {"in_flight": len(link.jobs), "broker_ok": link.broker_ok}
    try:
        status = await link.status(request.app[SETTINGS].status_timeout_s)
    except ApiError as exc:
        return json_response({"ok": False, "time": time.time(), "front": front,
                              **exc.body()}, 503)
    rate = request.app[RATE].add(time.monotonic(), status.broker_id,
                                 status.counters.get("jobs_submitted", 0))
    return json_response(view(status, rate, front, time.time(), request.app[RUN_DIR]))


async def snapshot(request: web.Request) -> web.FileResponse:
    shot = newest_snapshot(request.app[RUN_DIR], request.match_info["profile"])
    if shot is None:
        raise web.HTTPNotFound()
    return web.FileResponse(shot, headers={**HEADERS, "Content-Type": "image/png"})


def install(app: web.Application) -> None:
    """The page's routes; PUBLIC_PATHS are the ones that need no key."""
    app[RATE] = RateMeter()
    app[RUN_DIR] = config.run_dir()
    for path in PAGE_PATHS:
        app.router.add_get(path, page)
    app.router.add_get(ASSET_URL + "{name}", asset)
    app.router.add_get(DATA_PATH, data)
    app.router.add_get(SNAPSHOT_URL + "{profile}", snapshot)
