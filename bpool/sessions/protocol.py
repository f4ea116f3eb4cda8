"""Every message of the session side, one msgspec Struct each (house style of bpool/protocol.py:
tagged by class name, array-like, frozen; add fields with defaults at the END only).

Two conversations, each on its own broker ROUTER (bpool/sessions/placement.py):

    session host (DEALER) ──► placement "hosts" side     HostToPlacement / PlacementToHost
    front (DEALER)        ──► placement "front" side     FrontToPlacement / PlacementToFront

Host rules: it opens with `HostReady` (version, host id, capacity, the sessions it still runs,
so a restarted broker adopts them); it is never sent `StartSession` before that. Both sides send
`HostBeat` while silent; a host silent for interval × liveness is dead and its sessions end
("host_lost"). `StartSession` is answered by exactly one `SessionStarted` (the browser's CDP
ws URL) or `StartFailed`; `StopSession` and a browser that exits by itself are answered by
`SessionEnded`. A message from an unknown host identity gets `HostDisconnect` and the host
sends `HostReady` again.

Front rules: every request carries a `req` number and is answered by one `SessionReply` or
`SessionListReply` with the same number; `Activity` (relay traffic since the last report) and
`FrontPing` have no reply except `FrontPong`.
"""

from __future__ import annotations

from typing import Union

import msgspec

SESSION_PROTOCOL_VERSION = 1

STATES = ("queued", "starting", "ready", "connected", "ended")
# Why a session ended (the log's end_reason and the sweep metric's label).
END_REASONS = ("deleted", "idle", "timeout", "host_lost", "browser_exited", "start_failed",
               "queue_timeout", "host_stopping", "broker_restart")
RECORD_KINDS = ("none", "har", "video")


class _Msg(msgspec.Struct, tag=True, array_like=True, frozen=True):
    """Base of every top-level message (tag = class name)."""


class _Part(msgspec.Struct, array_like=True, frozen=True):
    """Base of nested, untagged parts."""


class SessionInfo(_Part):
    """One session as the front shows it (times are Unix seconds)."""

    id: str
    state: str  # see STATES
    host: str  # host id; "" while queued
    ws_url: str  # the browser's own CDP endpoint on its host ("" until ready); never shown
    created_at: float
    expires_at: float
    timeout_s: float
    idle_timeout_s: float
    record: str
    connected_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    bytes_to_browser: int = 0
    bytes_from_browser: int = 0
    recording: str | None = None  # where the recording was stored
    key_id: str = ""  # which API key created it (bpool.sessions.log.key_id_of; not secret)
    profile: str | None = None  # an account lease: the leased profile (docs/sessions.md)


class HostSession(_Part):
    """A session a host still runs when it (re-)registers."""

    id: str
    ws_url: str


class Traffic(_Part):
    session_id: str
    bytes_to_browser: int
    bytes_from_browser: int
    connected: bool  # a client is attached now


# ---------------------------------------------------------------------------- host side


class HostReady(_Msg):
    version: int
    host_id: str
    pid: int
    incarnation: str
    capacity: int
    sessions: tuple[HostSession, ...] = ()


class HostBeat(_Msg):
    pass


class SessionStarted(_Msg):
    session_id: str
    ws_url: str
    browser_pid: int


class StartFailed(_Msg):
    session_id: str
    reason: str


class SessionEnded(_Msg):
    session_id: str
    reason: str
    recording: str | None = None


class HostGoodbye(_Msg):
    reason: str


class StartSession(_Msg):
    session_id: str
    record: str = "none"


class StopSession(_Msg):
    session_id: str
    reason: str


class HostDisconnect(_Msg):
    pass


# ---------------------------------------------------------------------------- front side


class CreateSession(_Msg):
    req: int
    timeout_s: float
    idle_timeout_s: float
    record: str
    queue_s: float
    key_id: str = "anonymous"


class GetSession(_Msg):
    req: int
    session_id: str


class ListSessions(_Msg):
    req: int
    state: str | None = None
    limit: int = 100


class DeleteSession(_Msg):
    req: int
    session_id: str


class Activity(_Msg):
    traffic: tuple[Traffic, ...]


class FrontPing(_Msg):
    nonce: int


class SessionReply(_Msg):
    req: int
    session: SessionInfo | None
    error: str | None = None  # "not_found" | "no_capacity" | "start_failed" | "bad_request"
    message: str = ""
    retry_after_s: float | None = None


class SessionListReply(_Msg):
    req: int
    sessions: tuple[SessionInfo, ...]


class FrontPong(_Msg):
    nonce: int
    placement_id: str
    states: dict[str, int]  # live sessions by state
    sweeps: dict[str, int]  # sessions ended, by reason, since the broker started
    capacity: int  # sum over live hosts
    hosts: int


HostToPlacement = Union[HostReady, HostBeat, SessionStarted, StartFailed, SessionEnded,
                        HostGoodbye]
PlacementToHost = Union[StartSession, StopSession, HostBeat, HostDisconnect]
FrontToPlacement = Union[CreateSession, GetSession, ListSessions, DeleteSession, Activity,
                         FrontPing]
PlacementToFront = Union[SessionReply, SessionListReply, FrontPong]


def encoder() -> msgspec.msgpack.Encoder:
    return msgspec.msgpack.Encoder()


def decoder(direction: object) -> msgspec.msgpack.Decoder:
    return msgspec.msgpack.Decoder(direction)
