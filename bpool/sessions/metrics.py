"""Session numbers in the front's /metrics (bpool/front/metrics.py's registry): sessions by
state and ended by reason (from the placement's latest ping answer, at most one heartbeat
old), host capacity, and the bytes this front relayed in each direction."""

from __future__ import annotations

from typing import Iterable

from aiohttp import web
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bpool.front.metrics import METRICS
from bpool.sessions import protocol as sp
from bpool.sessions.relay import Relays


class SessionCollector:
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        from bpool.sessions.api import LINK

        link = self.app.get(LINK)
        pong = link.last_pong if link is not None else None
        up = GaugeMetricFamily("bpool_session_placement_up", "1 if the broker's session "
                               "placement answered the front's last ping")
        up.add_metric([], 0 if pong is None else 1)
        yield up
        if pong is None:
            return
        states = GaugeMetricFamily("bpool_sessions", "browser sessions by state",
                                   labels=["state"])
        for state in sp.STATES:
            if state != "ended":
                states.add_metric([state], pong.states.get(state, 0))
        yield states
        sweeps = CounterMetricFamily("bpool_session_ends", "sessions ended since the broker "
                                     "started, by reason (idle and timeout are the sweeper's)",
                                     labels=["reason"])
        for reason in sp.END_REASONS:
            sweeps.add_metric([reason], pong.sweeps.get(reason, 0))
        yield sweeps
        yield GaugeMetricFamily("bpool_session_capacity", "browsers the registered session "
                                "hosts can run at once", value=pong.capacity)
        yield GaugeMetricFamily("bpool_session_hosts", "registered session hosts",
                                value=pong.hosts)


def install_metrics(app: web.Application, relays: Relays) -> None:
    registry = app[METRICS].registry
    relayed = Counter("bpool_session_relay_bytes", "CDP bytes this front relayed",
                      ["direction"], registry=registry)
    children = {d: relayed.labels(d) for d in ("to_browser", "from_browser")}
    relays.on_bytes = lambda direction, n: children[direction].inc(n)
    registry.register(SessionCollector(app))
