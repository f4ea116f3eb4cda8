"""The front's Prometheus metrics: GET /metrics, from this front's own observations and the
broker's status.

What the front sees itself (requests, time to first token, latency, queue wait, relayed chunks,
failures by kind) is counted as it happens; what only the broker knows (worker states, queue
length, its counters) is read with one status query per scrape, so there is no second server.
Each app has its own registry, so two fronts in one process (tests) never share numbers.

Labels stay bounded: a model label is one of the models the pool's workers announced (learnt
from every status reply), anything else is "other"; a profile label is a profile the broker
named; an error kind outside protocol.ERROR_KINDS is "other".
"""

from __future__ import annotations

import asyncio
import time
from typing import Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from bpool import config
from bpool.front.appstate import LINK, SETTINGS
from bpool.front.errors import ApiError
from bpool.protocol import ERROR_KINDS, Assigned, Chunk, Failed, PoolStatus

OTHER = "other"
NONE = "none"  # no profile: the request never reached a worker
# Every state a worker can be in (protocol.WorkerStatus.state), and "gone": a profile this front
# saw before that is no longer registered (killed, expired, removed).
WORKER_STATES = ("idle", "busy", "cooling", "paused", "logged_out", "needs_consent", "draining", "leased",
                 "gone")
# Broker counters (pool/state.py COUNTERS) shown as bpool_jobs_total{event}.
JOB_EVENTS = {"submitted": "jobs_submitted", "started": "jobs_started", "finished": "jobs_done",
              "failed": "jobs_failed", "moved": "jobs_moved", "cancelled": "cancelled"}
COOLDOWN_PREFIX = "cooldowns:"  # broker counter per profile: "cooldowns:<profile>"
# Answers take seconds to minutes (long reasoning); first tokens arrive within seconds.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900)
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_MISSING = object()


class ChatObs:
    """One chat request's observations; JobWait feeds it every job event."""

    __slots__ = ("metrics", "model", "profile", "t0", "assigned", "first")

    def __init__(self, metrics: "Metrics", model: str) -> None:
        self.metrics = metrics
        self.model = metrics.model_label(model)
        self.profile = NONE
        self.t0 = time.monotonic()
        self.assigned = False
        self.first = False

    def saw(self, event: object) -> None:
        m = self.metrics
        if isinstance(event, Chunk):
            m.chunks.inc()
            if not self.first:
                self.first = True
                m.child(m.ttft, self.model).observe(time.monotonic() - self.t0)
        elif isinstance(event, Assigned):
            # Profile ids come from the broker (one per cookie file), never from the client.
            self.profile = event.profile_id
            m.profiles.add(event.profile_id)
            if not self.assigned:  # a moved job is assigned again: its wait counted once
                self.assigned = True
                m.queue_wait.observe(time.monotonic() - self.t0)
        elif isinstance(event, Failed):
            kind = event.error.kind
            m.child(m.failures, kind if kind in ERROR_KINDS else OTHER).inc()


class PoolCollector:
    """The broker's side, from the status read just before each scrape."""

    def __init__(self, metrics: "Metrics") -> None:
        self.metrics = metrics
        self.status: PoolStatus | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # collected fresh at each scrape; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        status = self.status
        up = GaugeMetricFamily("bpool_broker_up", "1 if the broker answered this scrape's status "
                               "query")
        up.add_metric([], 0 if status is None else 1)
        yield up
        if status is None:
            return
        yield GaugeMetricFamily("bpool_queue_length", "requests waiting at the broker for a free "
                                "worker", value=status.queue_length)
        states = GaugeMetricFamily("bpool_worker_state", "1 for the state each profile's worker "
                                   "is in (gone: no longer registered)", labels=["profile", "state"])
        served = GaugeMetricFamily("bpool_worker_jobs_served", "jobs the profile's current "
                                   "worker has finished", labels=["profile"])
        cooldown = GaugeMetricFamily("bpool_worker_cooldown_remaining_seconds", "time left in "
                                     "cooling or paused", labels=["profile"])
        expiry = GaugeMetricFamily("bpool_worker_cookie_expiry_timestamp_seconds", "Unix time "
                                   "at which the profile's first Google session cookie expires",
                                   labels=["profile"])
        answered = GaugeMetricFamily("bpool_worker_last_answer_age_seconds", "time since the "
                                     "profile's last successful answer", labels=["profile"])
        by_model: dict[tuple[str, str], float] = {}  # (profile, model) -> seconds left
        current: dict[str, str] = {}
        jobs: dict[str, int] = {}
        for w in status.workers:
            # A re-registered profile may be listed twice for a moment; the newest entry counts.
            current[w.profile_id] = w.state
            jobs[w.profile_id] = w.jobs_served
            if w.cooldown_remaining_s is not None:
                cooldown.add_metric([w.profile_id], w.cooldown_remaining_s)
            for model, left in w.cooling.items():
                by_model[w.profile_id, self.metrics.model_label(model)] = left
            if w.cookie_expires_at is not None:
                expiry.add_metric([w.profile_id], w.cookie_expires_at)
            if w.last_answer_s is not None:
                answered.add_metric([w.profile_id], w.last_answer_s)
        for profile in sorted(self.metrics.profiles):
            now = current.get(profile, "gone")
            for state in WORKER_STATES:
                states.add_metric([profile, state], 1 if state == now else 0)
            if profile in jobs:
                served.add_metric([profile], jobs[profile])
        model_cooldown = GaugeMetricFamily(
            "bpool_model_cooldown_remaining_seconds", "time left in a profile's rate-limit "
            "cool-down for one model (quotas are per account and model)",
            labels=["profile", "model"])
        for (profile, model), left in sorted(by_model.items()):
            model_cooldown.add_metric([profile, model], left)
        yield model_cooldown
        yield from (states, served, cooldown, expiry, answered)
        c = status.counters
        events = CounterMetricFamily("bpool_jobs", "jobs at the broker by event", labels=["event"])
        for event, name in JOB_EVENTS.items():
            events.add_metric([event], c.get(name, 0))
        yield events
        yield CounterMetricFamily("bpool_job_moves", "jobs moved to another worker before any "
                                  "output", value=c.get("jobs_moved", 0))
        yield CounterMetricFamily("bpool_heartbeat_expiries", "workers removed after missing "
                                  "their heartbeats", value=c.get("workers_expired", 0))
        cool = CounterMetricFamily("bpool_cooldowns", "times a profile's account was rate-limited "
                                   "and cooled down", labels=["profile"])
        for profile in sorted(self.metrics.profiles):
            cool.add_metric([profile], c.get(COOLDOWN_PREFIX + profile, 0))
        yield cool
        raw = CounterMetricFamily("bpool_broker_events", "every plain counter of the broker "
                                  "(see its /health counters)", labels=["counter"])
        for name, value in sorted(c.items()):
            if not name.startswith(COOLDOWN_PREFIX):
                raw.add_metric([name], value)
        yield raw


class Metrics:
    def __init__(self, public: bool = False) -> None:
        self.public = public  # BPOOL_METRICS_PUBLIC: scrapers need no API key
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("bpool_requests", "HTTP requests answered by the front",
                                ["route", "status", "model", "profile"], registry=r)
        self.latency = Histogram("bpool_request_duration_seconds", "chat request to the end of "
                                 "its answer", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("bpool_time_to_first_token_seconds", "chat request to the first "
                              "piece of its answer", ["model"], buckets=LATENCY_BUCKETS,
                              registry=r)
        self.queue_wait = Histogram("bpool_queue_wait_seconds", "chat request to a worker taking "
                                    "it", buckets=WAIT_BUCKETS, registry=r)
        self.chunks = Counter("bpool_relayed_chunks", "answer chunks relayed from workers to "
                              "clients", registry=r)
        self.failures = Counter("bpool_job_failures", "jobs of this front that failed, by "
                                "error kind", ["kind"], registry=r)
        self.in_flight = Gauge("bpool_front_in_flight", "jobs this front waits on", registry=r)
        self.pool = PoolCollector(self)
        r.register(self.pool)
        self.models: frozenset[str] = frozenset()
        self.profiles: set[str] = set()
        self._children: dict[tuple, object] = {}

    def child(self, metric, *labels: str):
        """metric.labels(...), cached: labels() validates and locks on every call."""
        key = (id(metric), labels)
        found = self._children.get(key, _MISSING)
        if found is _MISSING:
            found = self._children[key] = metric.labels(*labels)
        return found

    def model_label(self, model: str) -> str:
        return model if model in self.models else OTHER

    def saw_status(self, status: PoolStatus) -> None:
        """Learn the pool's models and profiles (the only values a label may take)."""
        models = {m for w in status.workers for m in w.models}
        if models != self.models:
            self.models = frozenset(models)
        self.profiles.update(w.profile_id for w in status.workers)

    def chat(self, model: str) -> ChatObs:
        return ChatObs(self, model)

    def request_done(self, route: str, status: int, obs: ChatObs | None, chat: bool) -> None:
        model, profile = (obs.model, obs.profile) if obs is not None else (NONE, NONE)
        self.child(self.requests, route, str(status), model, profile).inc()
        if chat and obs is not None:
            self.child(self.latency, model).observe(time.monotonic() - obs.t0)


METRICS = web.AppKey("metrics", Metrics)
CHAT_OBS = web.RequestKey("chat_obs", ChatObs)
CHAT_ROUTE = "/v1/chat/completions"


def route_of(request: web.Request) -> str:
    """The route's pattern (bounded), "other" for a path no route matches."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else OTHER


@web.middleware
async def count_requests(request: web.Request, handler) -> web.StreamResponse:
    """Outermost middleware: every answer, errors included, counted once with its status."""
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = 499  # the client went away before its answer was complete
        raise
    finally:
        route = route_of(request)
        request.app[METRICS].request_done(route, status, request.get(CHAT_OBS),
                                          route == CHAT_ROUTE)


async def metrics_view(request: web.Request) -> web.Response:
    metrics, link = request.app[METRICS], request.app[LINK]
    try:
        status = await link.status(request.app[SETTINGS].status_timeout_s)
    except ApiError:
        status = None  # the front's own numbers still matter most when the broker is away
    if status is not None:
        metrics.saw_status(status)
    metrics.pool.status = status
    metrics.in_flight.set(len(link.jobs))
    return web.Response(body=generate_latest(metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def install(app: web.Application) -> None:
    """GET /metrics and the request counter on `app` (call once its own routes are added)."""
    app[METRICS] = Metrics(public=config.value("BPOOL_METRICS_PUBLIC"))
    app.middlewares.insert(0, count_requests)
    app.router.add_get("/metrics", metrics_view)


def is_public(request: web.Request) -> bool:
    """/metrics without a key, when the operator asked for it."""
    return request.path == "/metrics" and request.app[METRICS].public
