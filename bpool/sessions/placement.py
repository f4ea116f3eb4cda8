"""Where sessions run: the broker's pure session placement (no sockets, no clock).

Hosts register their capacity (`HostReady`); a new session goes to the live host with the most
free capacity (ties: the host registered first), or waits in a FIFO for at most its `queue_s`,
or is refused (no_capacity, with a Retry-After). The core keeps the session -> host map, ends
sessions that the sweeper (sweeper.py) finds due and every session of a host that stopped
beating. Every call gets `now` (Unix seconds) and returns actions for the shell
(placement_shell.py) to perform: messages to hosts and fronts, and log writes.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import msgspec

from bpool.sessions import protocol as sp
from bpool.sessions.sweeper import Timing, due

RECENT_ENDED = 1000  # ended sessions kept in memory (the log keeps all of them)


@dataclass(frozen=True)
class ToHost:
    identity: bytes
    msg: object


@dataclass(frozen=True)
class ToFront:
    identity: bytes
    msg: object


@dataclass(frozen=True)
class LogCreated:
    info: sp.SessionInfo


@dataclass(frozen=True)
class LogUpdate:
    session_id: str
    fields: dict


Action = ToHost | ToFront | LogCreated | LogUpdate


@dataclass
class Host:
    identity: bytes
    host_id: str
    capacity: int
    last_seen: float
    order: int
    sessions: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.capacity - len(self.sessions)


@dataclass
class Live:
    info: sp.SessionInfo
    timing: Timing
    waiter: tuple[bytes, int] | None = None  # the front request waiting for "ready"


class PlacementCore:
    def __init__(self, heartbeat_interval_s: float, heartbeat_liveness: int,
                 start_timeout_s: float = 60.0) -> None:
        # A host gives up on a browser after its own start timeout and says so; past this
        # (its own timeout plus a margin) it is taken not to answer at all.
        self.start_limit_s = start_timeout_s + 5.0
        self.placement_id = os.urandom(6).hex()
        self.interval_s = heartbeat_interval_s
        self.dead_after_s = heartbeat_interval_s * heartbeat_liveness
        self.hosts: dict[bytes, Host] = {}
        self.live: dict[str, Live] = {}
        self.queue: deque[str] = deque()
        self.ended: OrderedDict[str, sp.SessionInfo] = OrderedDict()
        self.sweeps: dict[str, int] = {}
        self._order = 0
        self._next_beat = 0.0

    # ------------------------------------------------------------------ hosts

    def on_host(self, ident: bytes, msg: object, now: float) -> list[Action]:
        host = self.hosts.get(ident)
        if isinstance(msg, sp.HostReady):
            return self._host_ready(ident, msg, now)
        if host is None:
            return [ToHost(ident, sp.HostDisconnect())]
        host.last_seen = now
        match msg:
            case sp.SessionStarted(session_id=sid, ws_url=url):
                live = self.live.get(sid)
                if live is None or live.info.state != "starting":  # ended meanwhile
                    return [ToHost(ident, sp.StopSession(sid, "deleted"))] if live is None else []
                live.info = msgspec.structs.replace(live.info, state="ready", ws_url=url)
                live.timing.state = "ready"
                live.timing.last_activity = now
                live.timing.start_deadline = None
                out: list[Action] = [LogUpdate(sid, {"state": "ready", "host": host.host_id})]
                if live.waiter is not None:
                    out.append(ToFront(live.waiter[0], sp.SessionReply(live.waiter[1], live.info)))
                    live.waiter = None
                return out
            case sp.StartFailed(session_id=sid, reason=reason):
                return self._end(sid, "start_failed", now, message=reason)
            case sp.SessionEnded(session_id=sid, reason=reason, recording=rec):
                out = self._end(sid, reason, now, tell_host=False) if sid in self.live else []
                if rec is not None:
                    if sid in self.ended:
                        self.ended[sid] = msgspec.structs.replace(self.ended[sid], recording=rec)
                    out.append(LogUpdate(sid, {"recording": rec}))
                host.sessions.discard(sid)
                return out + self._place_queued(now)
            case sp.HostGoodbye():
                return self._host_gone(ident, "host_stopping", now)
        return []

    def _host_ready(self, ident: bytes, msg: sp.HostReady, now: float) -> list[Action]:
        out: list[Action] = []
        if msg.version != sp.SESSION_PROTOCOL_VERSION:
            return [ToHost(ident, sp.HostDisconnect())]
        if ident in self.hosts:
            return []  # a duplicate Ready: already registered
        for other in [h for h in self.hosts.values() if h.host_id == msg.host_id]:
            # The same host again under a new identity: what it no longer runs has ended.
            still = {s.id for s in msg.sessions}
            for sid in sorted(other.sessions - still):
                out += self._end(sid, "host_lost", now, tell_host=False)
            del self.hosts[other.identity]
            other.sessions &= still
        self._order += 1
        host = Host(ident, msg.host_id, max(0, msg.capacity), now, self._order)
        self.hosts[ident] = host
        for s in msg.sessions:
            live = self.live.get(s.id)
            if live is not None and live.info.host == msg.host_id:
                host.sessions.add(s.id)
            else:  # a broker restart forgot it: its limits and owner are unknown
                out.append(ToHost(ident, sp.StopSession(s.id, "broker_restart")))
        return out + self._place_queued(now)

    def _host_gone(self, ident: bytes, reason: str, now: float) -> list[Action]:
        host = self.hosts.pop(ident, None)
        if host is None:
            return []
        out: list[Action] = []
        for sid in sorted(host.sessions):
            out += self._end(sid, reason if reason != "host_stopping" else "host_lost", now,
                             tell_host=False)
        return out + self._place_queued(now)

    def host_unreachable(self, ident: bytes, now: float) -> list[Action]:
        return self._host_gone(ident, "host_lost", now)

    # ------------------------------------------------------------------ fronts

    def on_front(self, ident: bytes, msg: object, now: float) -> list[Action]:
        match msg:
            case sp.CreateSession():
                return self._create(ident, msg, now)
            case sp.GetSession(req=req, session_id=sid):
                info = self.get(sid)
                return [ToFront(ident, sp.SessionReply(req, info, None if info else "not_found"))]
            case sp.DeleteSession(req=req, session_id=sid):
                if sid not in self.live:
                    info = self.ended.get(sid)
                    return [ToFront(ident, sp.SessionReply(req, info,
                                                           None if info else "not_found"))]
                out = self._end(sid, "deleted", now)
                return out + [ToFront(ident, sp.SessionReply(req, self.ended[sid]))]
            case sp.ListSessions(req=req, state=state, limit=limit):
                return [ToFront(ident, sp.SessionListReply(req, tuple(self.list(state, limit))))]
            case sp.Activity(traffic=traffic):
                return self._activity(traffic, now)
            case sp.FrontPing(nonce=nonce):
                return [ToFront(ident, self.pong(nonce))]
        return []

    def _create(self, ident: bytes, msg: sp.CreateSession, now: float) -> list[Action]:
        sid = "s-" + os.urandom(12).hex()
        info = sp.SessionInfo(sid, "queued", "", "", now, now + msg.timeout_s, msg.timeout_s,
                              msg.idle_timeout_s, msg.record, key_id=msg.key_id)
        timing = Timing(sid, "queued", now, msg.timeout_s, msg.idle_timeout_s, now,
                        now + msg.queue_s)
        host = self._best_host()
        if host is None and msg.queue_s <= 0:
            return [ToFront(ident, sp.SessionReply(
                msg.req, None, "no_capacity", self._no_capacity_text(),
                self.retry_after_s(now)))]
        self.live[sid] = Live(info, timing, (ident, msg.req))
        out: list[Action] = [LogCreated(info)]
        if host is None:
            self.queue.append(sid)
            return out
        return out + self._start_on(host, sid, now)

    def _no_capacity_text(self) -> str:
        if not self.hosts:
            return "no session host is registered"
        return f"every session host is full ({sum(h.capacity for h in self.hosts.values())} " \
               "browsers in all)"

    def retry_after_s(self, now: float) -> float:
        """When a slot is sure to be free: the soonest end of a live session's lifetime
        (idle ones end sooner), within 1 s .. 60 s."""
        ends = [lv.info.expires_at for lv in self.live.values() if lv.info.state != "queued"]
        return min(60.0, max(1.0, (min(ends) - now) if ends else 5.0))

    def _best_host(self) -> Host | None:
        best = None
        for h in self.hosts.values():
            if h.free > 0 and (best is None or (h.free, -h.order) > (best.free, -best.order)):
                best = h
        return best

    def _start_on(self, host: Host, sid: str, now: float) -> list[Action]:
        live = self.live[sid]
        host.sessions.add(sid)
        live.info = msgspec.structs.replace(live.info, state="starting", host=host.host_id)
        live.timing.state = "starting"
        live.timing.queue_deadline = None
        live.timing.start_deadline = now + self.start_limit_s
        return [ToHost(host.identity, sp.StartSession(sid, live.info.record)),
                LogUpdate(sid, {"state": "starting", "host": host.host_id})]

    def _place_queued(self, now: float) -> list[Action]:
        out: list[Action] = []
        while self.queue:
            if self.queue[0] not in self.live:
                self.queue.popleft()
                continue
            host = self._best_host()
            if host is None:
                break
            out += self._start_on(host, self.queue.popleft(), now)
        return out

    def _activity(self, traffic: tuple[sp.Traffic, ...], now: float) -> list[Action]:
        out: list[Action] = []
        for t in traffic:
            live = self.live.get(t.session_id)
            if live is None or live.info.state not in ("ready", "connected"):
                continue
            info = live.info
            if (t.bytes_to_browser, t.bytes_from_browser) != (info.bytes_to_browser,
                                                             info.bytes_from_browser):
                live.timing.last_activity = now
            state = "connected" if t.connected else "ready"
            changes: dict = {"bytes_to_browser": t.bytes_to_browser,
                             "bytes_from_browser": t.bytes_from_browser, "state": state}
            if t.connected and info.connected_at is None:
                changes["connected_at"] = now
            live.info = msgspec.structs.replace(info, **changes)
            live.timing.state = state
            if state != info.state or "connected_at" in changes:
                out.append(LogUpdate(t.session_id, changes))
        return out

    # ------------------------------------------------------------------ ending, queries

    def _end(self, sid: str, reason: str, now: float, *, tell_host: bool = True,
             message: str = "") -> list[Action]:
        live = self.live.pop(sid, None)
        if live is None:
            return []
        info = msgspec.structs.replace(live.info, state="ended", ended_at=now, end_reason=reason)
        self.ended[sid] = info
        while len(self.ended) > RECENT_ENDED:
            self.ended.popitem(last=False)
        self.sweeps[reason] = self.sweeps.get(reason, 0) + 1
        out: list[Action] = [LogUpdate(sid, {
            "state": "ended", "ended_at": now, "end_reason": reason,
            "bytes_to_browser": info.bytes_to_browser,
            "bytes_from_browser": info.bytes_from_browser})]
        for host in self.hosts.values():
            if sid in host.sessions:
                host.sessions.discard(sid)
                if tell_host:
                    out.append(ToHost(host.identity, sp.StopSession(sid, reason)))
        if live.waiter is not None:
            ident, req = live.waiter
            if reason == "queue_timeout":
                err = sp.SessionReply(req, None, "no_capacity", self._no_capacity_text(),
                                      self.retry_after_s(now))
            else:
                err = sp.SessionReply(req, info, "start_failed",
                                      message or f"the session ended while starting ({reason})")
            out.append(ToFront(ident, err))
        return out + (self._place_queued(now) if live.timing.state != "queued" else [])

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        for ident in [i for i, h in self.hosts.items() if now - h.last_seen > self.dead_after_s]:
            out += self._host_gone(ident, "host_lost", now)
        for sid, reason in due([lv.timing for lv in self.live.values()], now):
            out += self._end(sid, reason, now)
        if now >= self._next_beat:
            self._next_beat = now + self.interval_s
            out += [ToHost(i, sp.HostBeat()) for i in self.hosts]
        return out

    def get(self, sid: str) -> sp.SessionInfo | None:
        live = self.live.get(sid)
        return live.info if live is not None else self.ended.get(sid)

    def list(self, state: str | None, limit: int) -> list[sp.SessionInfo]:
        every = [lv.info for lv in self.live.values()] + list(reversed(self.ended.values()))
        return [i for i in every if state is None or i.state == state][:limit]

    def pong(self, nonce: int) -> sp.FrontPong:
        states = {s: 0 for s in sp.STATES if s != "ended"}
        for lv in self.live.values():
            states[lv.info.state] += 1
        return sp.FrontPong(nonce, self.placement_id, states, dict(self.sweeps),
                            sum(h.capacity for h in self.hosts.values()), len(self.hosts))
