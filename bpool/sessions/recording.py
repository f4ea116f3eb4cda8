"""Recordings of a browser session, built from the CDP events the relay already sees.

`HarRecorder` (here) turns Network.* and Page.* events into a HAR 1.2 log (the format every
browser's devtools imports); credentials in headers are redacted unless asked otherwise.
`VideoRecorder` (recording_video.py) turns Page.screencastFrame images into a video file.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bpool.sessions.recording_video import VideoRecorder

__all__ = ["HAR_EVENTS", "HarRecorder", "VideoRecorder", "REDACTED"]

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization"})
CREATOR = {"name": "bpool", "version": "0.1.0"}


@dataclass
class _Entry:
    request_id: str
    started_wall: float
    started_mono: float
    request: dict[str, Any]
    pageref: str | None
    resource_type: str = ""
    response: dict[str, Any] | None = None
    timing: dict[str, float] | None = None
    response_mono: float | None = None
    ended_mono: float | None = None
    encoded_length: int = -1
    data_length: int = 0
    error: str | None = None
    server_ip: str | None = None


@dataclass
class _Page:
    id: str
    title: str
    started_wall: float
    started_mono: float | None
    on_content_load: float = -1
    on_load: float = -1


@dataclass
class HarRecorder:
    """Feed it every CDP event of a session (`feed(method, params)`; others are ignored), then
    take `.har()`. At most `max_entries` requests are kept (a HAR is one JSON document); the
    rest are counted in the log's comment."""

    redact: bool = True
    max_entries: int = 20000
    _entries: list[_Entry] = field(default_factory=list)
    _open: dict[str, _Entry] = field(default_factory=dict)
    _pages: list[_Page] = field(default_factory=list)
    _dropped: int = 0
    _wall_offset: float | None = None  # wall clock - CDP's monotonic clock
    _loader_start: dict[str, tuple[float, float]] = field(default_factory=dict)

    def feed(self, method: str, params: dict[str, Any]) -> None:
        handler = _HANDLERS.get(method)
        if handler is not None:
            handler(self, params)

    # -------------------------------------------------------------------------- Network

    def _request(self, p: dict[str, Any]) -> None:
        rid, req, mono = p["requestId"], p["request"], float(p["timestamp"])
        wall = float(p.get("wallTime") or self._wall(mono))
        self._wall_offset = wall - mono
        if p.get("redirectResponse") and rid in self._open:  # same id, next hop
            self._response(rid, p["redirectResponse"], mono)
            self._finish(rid, mono)
        if rid == p.get("loaderId"):  # a navigation: where its page's timings count from
            self._loader_start[rid] = (wall, mono)
        if len(self._entries) >= self.max_entries:
            self._dropped += 1
            return
        url = req["url"] + req.get("urlFragment", "")
        har_req: dict[str, Any] = {
            "method": req["method"], "url": url, "httpVersion": "",
            "cookies": [], "headers": self._headers(req.get("headers", {})),
            "queryString": [{"name": k, "value": v}
                            for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)],
            "headersSize": -1, "bodySize": 0,
        }
        post = _post_text(req)
        if post is not None:
            mime = _header(req.get("headers", {}), "content-type") or "application/octet-stream"
            har_req["postData"] = {"mimeType": mime, "text": post}
            har_req["bodySize"] = len(post.encode())
        entry = _Entry(rid, wall, mono, har_req, self._pages[-1].id if self._pages else None,
                       p.get("type", ""))
        self._entries.append(entry)
        self._open[rid] = entry

    def _on_response(self, p: dict[str, Any]) -> None:
        self._response(p["requestId"], p["response"], float(p["timestamp"]))

    def _response(self, rid: str, resp: dict[str, Any], mono: float) -> None:
        entry = self._open.get(rid)
        if entry is None:
            return
        entry.response = resp
        entry.response_mono = mono
        entry.timing = resp.get("timing")
        entry.server_ip = resp.get("remoteIPAddress")

    def _data(self, p: dict[str, Any]) -> None:
        entry = self._open.get(p["requestId"])
        if entry is not None:
            entry.data_length += int(p.get("dataLength", 0))

    def _finished(self, p: dict[str, Any]) -> None:
        entry = self._open.get(p["requestId"])
        if entry is not None:
            entry.encoded_length = int(p.get("encodedDataLength", -1))
        self._finish(p["requestId"], float(p["timestamp"]))

    def _failed(self, p: dict[str, Any]) -> None:
        entry = self._open.get(p["requestId"])
        if entry is not None:
            entry.error = "canceled" if p.get("canceled") else p.get("errorText", "failed")
        self._finish(p["requestId"], float(p["timestamp"]))

    def _finish(self, rid: str, mono: float) -> None:
        entry = self._open.pop(rid, None)
        if entry is not None:
            entry.ended_mono = mono

    # -------------------------------------------------------------------------- Page

    def _navigated(self, p: dict[str, Any]) -> None:
        frame = p["frame"]
        if frame.get("parentId"):
            return  # an iframe: part of the page it is in
        start = self._loader_start.get(frame.get("loaderId", ""))
        wall, mono = start if start else (self._wall(None), None)
        page = _Page(f"page_{len(self._pages) + 1}", frame.get("url", ""), wall, mono)
        self._pages.append(page)
        # the document request came before its page existed: it belongs to it
        for entry in reversed(self._entries):
            if entry.request_id == frame.get("loaderId"):
                entry.pageref = page.id
                break

    def _page_event(self, p: dict[str, Any], attr: str) -> None:
        page = self._pages[-1] if self._pages else None
        if page is not None and page.started_mono is not None:
            setattr(page, attr, round((float(p["timestamp"]) - page.started_mono) * 1000, 3))

    def _wall(self, mono: float | None) -> float:
        if mono is not None and self._wall_offset is not None:
            return mono + self._wall_offset
        return dt.datetime.now(dt.timezone.utc).timestamp()

    def _headers(self, headers: dict[str, Any]) -> list[dict[str, str]]:
        out = []
        for name, val in headers.items():
            for part in str(val).split("\n"):  # CDP joins repeated headers with newlines
                secret = self.redact and name.lower() in SECRET_HEADERS
                out.append({"name": name, "value": REDACTED if secret else part})
        return out

    # -------------------------------------------------------------------------- output

    def har(self) -> dict[str, Any]:
        """The HAR 1.2 document of everything fed so far (requests still open included, with
        status 0); a new dict on every call."""
        out: dict[str, Any] = {
            "version": "1.2", "creator": dict(CREATOR),
            "pages": [{"startedDateTime": _iso(pg.started_wall), "id": pg.id, "title": pg.title,
                       "pageTimings": {"onContentLoad": pg.on_content_load,
                                       "onLoad": pg.on_load}} for pg in self._pages],
            "entries": [self._har_entry(e) for e in self._entries],
        }
        if self._dropped:
            out["comment"] = f"{self._dropped} requests past the first {self.max_entries} left out"
        if self.redact:
            out["creator"]["comment"] = "Cookie, Set-Cookie and Authorization values redacted"
        return {"log": out}

    def _har_entry(self, e: _Entry) -> dict[str, Any]:
        resp = e.response or {}
        version = _http_version(resp.get("protocol", ""))
        headers = resp.get("headers", {})
        size = e.data_length
        # CDP counts bytes on the wire: the response's encodedDataLength is its headers (all
        # that had arrived then), loadingFinished's is headers and body together
        head = resp.get("encodedDataLength")
        head = int(head) if isinstance(head, (int, float)) and head > 0 else -1
        body_size = -1
        if e.encoded_length >= 0:
            body_size = max(e.encoded_length - max(head, 0), 0)
        response = {
            "status": int(resp.get("status", 0)), "statusText": resp.get("statusText", ""),
            "httpVersion": version, "cookies": [], "headers": self._headers(headers),
            "content": {"size": size, "mimeType": resp.get("mimeType", "x-unknown")},
            "redirectURL": _header(headers, "location") or "",
            "headersSize": head, "bodySize": body_size,
        }
        if e.error:
            response["_error"] = e.error
        timings = _timings(e)
        entry: dict[str, Any] = {
            "startedDateTime": _iso(e.started_wall),
            "time": round(sum(v for k, v in timings.items() if v > 0 and k != "ssl"), 3),
            "request": {**e.request, "httpVersion": version}, "response": response,
            "cache": {}, "timings": timings, "_resourceType": e.resource_type.lower(),
        }
        if e.pageref:
            entry["pageref"] = e.pageref
        if e.server_ip:
            entry["serverIPAddress"] = e.server_ip.strip("[]")
        return entry


def _timings(e: _Entry) -> dict[str, float]:
    """HAR phases in ms from CDP's ResourceTiming (offsets in ms from `requestTime`, -1 when a
    phase did not happen, e.g. no DNS or connection for a reused socket)."""
    end = e.ended_mono if e.ended_mono is not None else e.response_mono
    t = e.timing
    if not t or e.response_mono is None:
        wait = ((e.response_mono or end or e.started_mono) - e.started_mono) * 1000
        receive = ((end or e.started_mono) - (e.response_mono or end or e.started_mono)) * 1000
        return {"blocked": -1, "dns": -1, "connect": -1, "send": 0,
                "wait": round(max(wait, 0), 3), "receive": round(max(receive, 0), 3), "ssl": -1}

    def span(a: str, b: str) -> float:
        return round(t[b] - t[a], 3) if t.get(a, -1) >= 0 and t.get(b, -1) >= 0 else -1

    queued = (t["requestTime"] - e.started_mono) * 1000
    first = next((t[k] for k in ("dnsStart", "connectStart", "sendStart") if t.get(k, -1) >= 0), 0)
    headers_end = t["requestTime"] + t.get("receiveHeadersEnd", 0) / 1000
    return {
        "blocked": round(max(queued + first, 0), 3), "dns": span("dnsStart", "dnsEnd"),
        "connect": span("connectStart", "connectEnd"), "ssl": span("sslStart", "sslEnd"),
        "send": max(span("sendStart", "sendEnd"), 0),
        "wait": round(max(t.get("receiveHeadersEnd", 0) - t.get("sendEnd", 0), 0), 3),
        "receive": round(max(((end or headers_end) - headers_end) * 1000, 0), 3),
    }


def _post_text(req: dict[str, Any]) -> str | None:
    if "postData" in req:
        return str(req["postData"])
    entries = req.get("postDataEntries")
    if entries:  # newer Chromium: base64 pieces; shown as sent only when it is text
        raw = b"".join(base64.b64decode(x.get("bytes", "")) for x in entries)
        return raw.decode("utf-8", "replace")
    return "" if req.get("hasPostData") else None


def _header(headers: dict[str, Any], name: str) -> str | None:
    for key, val in headers.items():
        if key.lower() == name:
            return str(val)
    return None


def _http_version(protocol: str) -> str:
    p = protocol.lower()
    return {"h2": "HTTP/2", "h3": "HTTP/3", "http/1.1": "HTTP/1.1",
            "http/1.0": "HTTP/1.0"}.get(p, protocol.upper() if p else "")


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).isoformat(timespec="milliseconds")


_HANDLERS = {
    "Network.requestWillBeSent": HarRecorder._request,
    "Network.responseReceived": HarRecorder._on_response,
    "Network.dataReceived": HarRecorder._data,
    "Network.loadingFinished": HarRecorder._finished,
    "Network.loadingFailed": HarRecorder._failed,
    "Page.frameNavigated": HarRecorder._navigated,
    "Page.domContentEventFired": lambda self, p: self._page_event(p, "on_content_load"),
    "Page.loadEventFired": lambda self, p: self._page_event(p, "on_load"),
}
# What a HarRecorder reads: the CDP events to pass to `feed` (after Network.enable and Page.enable).
HAR_EVENTS: tuple[str, ...] = tuple(_HANDLERS)
