"""A session's screen as a video: Page.screencastFrame JPEGs encoded by ffmpeg.

Frames are spooled to a private temporary directory as they come (a long session must not sit
in memory) with their timestamps, and encoded once at the end: the screencast sends a frame only
when the screen changes, so each frame is shown until the next one (ffmpeg's concat list with
durations; ffmpeg's image demuxer counts time in 1/25 s), and the video has a constant `fps`
(players and editors seek it well; VP8 codes an unchanged picture in a few bytes). The output is WebM with VP8, the format
Playwright records in and every browser plays. Without ffmpeg there is no video: `finish()`
returns None and one warning per process says so. The spool is deleted on every path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("bpool.sessions.recording")

_warned_missing = False


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment; None if there is none."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (int.from_bytes(data[i + 7:i + 9], "big"),
                    int.from_bytes(data[i + 5:i + 7], "big"))
        i += 2 + length
    return None


class VideoRecorder:
    def __init__(self, path: Path, fps: float = 10.0, *, spool_dir: Path | None = None,
                 encode_timeout_s: float = 600.0, ffmpeg: str | None = None) -> None:
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.path = Path(path)
        self.fps = fps
        self.encode_timeout_s = encode_timeout_s
        self._ffmpeg = ffmpeg
        self._spool_parent = spool_dir
        self._spool: Path | None = None
        self._frames: list[tuple[str, float]] = []
        self._size: tuple[int, int] | None = None
        self._done = False

    @property
    def frame_count(self) -> int:
        return len(self._frames)

    def feed_frame(self, jpeg: bytes, ts: float) -> None:
        """One screencast frame (the decoded `data`) shown from `ts` (seconds, e.g. the
        frame's metadata.timestamp). Frames that are not JPEG images are skipped."""
        if self._done:
            raise RuntimeError("feed_frame after finish")
        size = jpeg_size(jpeg) if jpeg[:2] == b"\xff\xd8" else None
        if size is None:
            log.debug("screencast frame skipped: not a JPEG image")
            return
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="bpool-video-", dir=self._spool_parent))
            self._size = size
        name = f"f{len(self._frames):07d}.jpg"
        fd = os.open(self._spool / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(jpeg)
        self._frames.append((name, float(ts)))

    def discard(self) -> None:
        """Drop the frames without encoding (a session whose recording is not wanted)."""
        self._done = True
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None

    async def finish(self) -> Path | None:
        """Encode the frames into `path` (WebM); None when there were no frames, ffmpeg is
        missing or failed (logged). The spool is removed in every case."""
        self._done = True
        try:
            if not self._frames:
                return None
            ffmpeg = self._ffmpeg or shutil.which("ffmpeg")
            if ffmpeg is None:
                _warn_missing()
                return None
            return await self._encode(ffmpeg)
        finally:
            self.discard()

    async def _encode(self, ffmpeg: str) -> Path | None:
        assert self._spool is not None and self._size is not None
        listing = self._spool / "frames.ffconcat"
        lines = ["ffconcat version 1.0"]
        for (name, ts), nxt in zip(self._frames, [*self._frames[1:], None]):
            lines.append(f"file '{name}'")
            lines.append(f"duration {max(nxt[1] - ts, 0.0) if nxt else 1 / self.fps:.6f}")
        lines.append(f"file '{self._frames[-1][0]}'")  # the concat demuxer's last-duration rule
        listing.write_text("\n".join(lines) + "\n")
        # Every frame into one even-sized picture (the screen can be resized mid-session; VP8 in
        # yuv420p needs even sizes).
        w, h = (max(2, d - d % 2) for d in self._size)
        vf = (f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
              f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,fps={self.fps:g},format=yuv420p")
        out = self._spool / "out.webm"
        proc = await asyncio.create_subprocess_exec(
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "concat", "-safe", "0", "-i", str(listing), "-vf", vf, "-an",
            "-vsync", "cfr", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M",
            # one encoder thread: several cost VP8 here far more CPU than they save, and
            # the pool's browsers need the other cores
            "-threads", "1",
            "-f", "webm", str(out),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.encode_timeout_s)
        except asyncio.TimeoutError:
            log.warning("video of %d frames: ffmpeg took longer than %.0f s; no video",
                        len(self._frames), self.encode_timeout_s)
            return None
        finally:
            if proc.returncode is None:  # timed out or cancelled: ffmpeg must not outlive us
                proc.kill()
                await proc.wait()
        if proc.returncode != 0 or not out.exists():
            log.warning("video of %d frames: ffmpeg failed (%s): %s", len(self._frames),
                        proc.returncode, err.decode(errors="replace").strip()[-500:])
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        out.chmod(0o600)
        shutil.move(out, self.path)
        return self.path


def _warn_missing() -> None:
    global _warned_missing
    if not _warned_missing:
        _warned_missing = True
        log.warning("ffmpeg not found: session videos are not recorded (install ffmpeg)")
