"""Recording a session on its host, for GET /v1/sessions/{id}/recording.

The host owns the browser, so it opens its own CDP connection to it (the client's relay is
untouched): browser-level auto-attach (flat sessions) reaches every page the client opens;
on each page it enables Network and Page events for a HAR (bpool.sessions.recording's
HarRecorder) or starts a JPEG screencast for a video (VideoRecorder; the first open page is
filmed, the next one when it closes). New pages wait for the debugger until the recorder has
enabled its events, so their first requests are not missed. At the end the capture stops before
the browser is closed, and the file is encoded and stored afterwards (bpool.sessions.store:
files under the run directory, or S3); the location goes to the session log.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bpool.sessions.recording import HarRecorder, VideoRecorder
from bpool.sessions.store import open_store

log = logging.getLogger("bpool.sessions.host")

SCREENCAST = {"format": "jpeg", "quality": 60, "maxWidth": 1280, "maxHeight": 800}


class SessionRecorder:
    def __init__(self, session_id: str, kind: str, ws_url: str, home: Path, run_dir: Path
                 ) -> None:
        self.session_id = session_id
        self.kind = kind
        self.ws_url = ws_url
        self.home = home
        self.run_dir = run_dir
        self.har = HarRecorder() if kind == "har" else None
        self.scratch = Path(tempfile.mkdtemp(prefix=f"rec-{session_id}-", dir=home))
        self.video = VideoRecorder(self.scratch / "session.webm", spool_dir=self.scratch) \
            if kind == "video" else None
        self.filmed: str | None = None  # the page session being filmed
        self.pages: list[str] = []
        self._ids = itertools.count(1)
        self._task: asyncio.Task | None = None

    @classmethod
    def start(cls, session_id: str, kind: str, ws_url: str, home: Path, run_dir: Path
              ) -> "SessionRecorder":
        rec = cls(session_id, kind, ws_url, home, run_dir)
        rec._task = asyncio.ensure_future(rec._capture())
        return rec

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, method: str,
                    params: dict | None = None, session: str | None = None) -> None:
        msg: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        await ws.send_str(json.dumps(msg))

    async def _capture(self) -> None:
        try:
            async with aiohttp.ClientSession() as http, \
                    http.ws_connect(self.ws_url, max_msg_size=0) as ws:
                await self._send(ws, "Target.setAutoAttach", {
                    "autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True})
                async for frame in ws:
                    if frame.type is not aiohttp.WSMsgType.TEXT:
                        break
                    await self._on(ws, json.loads(frame.data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a recording must never take the session down
            log.warning("session %s: recording stopped: %r", self.session_id, exc)

    async def _on(self, ws: aiohttp.ClientWebSocketResponse, msg: dict) -> None:
        method, params, sid = msg.get("method"), msg.get("params") or {}, msg.get("sessionId")
        if method is None:
            return
        if method == "Target.attachedToTarget":
            page = params["sessionId"]
            if params.get("targetInfo", {}).get("type") == "page":
                self.pages.append(page)
                if self.har is not None:
                    await self._send(ws, "Network.enable", {}, page)
                    await self._send(ws, "Page.enable", {}, page)
                if self.video is not None and self.filmed is None:
                    await self._film(ws, page)
            await self._send(ws, "Runtime.runIfWaitingForDebugger", {}, page)
        elif method == "Target.detachedFromTarget":
            gone = params.get("sessionId")
            if gone in self.pages:
                self.pages.remove(gone)
            if gone == self.filmed:
                self.filmed = None
                if self.pages:
                    await self._film(ws, self.pages[-1])
        elif method == "Page.screencastFrame" and self.video is not None:
            await self._send(ws, "Page.screencastFrameAck", {"sessionId": params["sessionId"]},
                             sid)
            if sid == self.filmed:
                ts = params.get("metadata", {}).get("timestamp")
                self.video.feed_frame(base64.b64decode(params["data"]),
                                      float(ts) if ts is not None else asyncio.get_running_loop().time())
        elif self.har is not None:
            self.har.feed(method, params)

    async def _film(self, ws: aiohttp.ClientWebSocketResponse, page: str) -> None:
        self.filmed = page
        await self._send(ws, "Page.startScreencast", SCREENCAST, page)

    async def stop(self) -> None:
        """Stop capturing (before the browser is closed)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def save(self) -> str | None:
        """Encode and store what was captured; its location, or None (nothing, or no ffmpeg)."""
        try:
            if self.har is not None:
                path = self.scratch / "network.har"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(self.har.har(), f)
            else:
                assert self.video is not None
                found = await self.video.finish()
                if found is None:
                    return None
                path = found
            return await open_store(run_dir=self.run_dir).put(self.session_id, path.name, path)
        except Exception as exc:
            log.warning("session %s: recording not saved: %r", self.session_id, exc)
            return None
        finally:
            import shutil

            shutil.rmtree(self.scratch, ignore_errors=True)
