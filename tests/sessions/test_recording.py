"""Recordings from a real Chromium's CDP events (HAR and screencast video), and the video
encoder's edges with frames made by ffmpeg itself."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from bpool.sessions import recording_video
from bpool.sessions.recording import HAR_EVENTS, REDACTED, HarRecorder, VideoRecorder

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-sync", "--disable-background-networking",
                 "--disable-component-update"]
NETWORK_EVENTS = ("Network.requestWillBeSent", "Network.responseReceived",
                  "Network.dataReceived", "Network.loadingFinished", "Network.loadingFailed",
                  "Page.frameNavigated", "Page.domContentEventFired", "Page.loadEventFired")
TOKEN, COOKIE = "tok-4f1c9a", "cookie-77e0b2"

PAGE = """<!doctype html><title>recorded</title><body><h1 id=n>0</h1><script>
let n = 0;
const tick = setInterval(() => {
  document.getElementById('n').textContent = ++n;
  document.body.style.background = n % 2 ? '#fc8' : '#8cf';
}, 60);
(async () => {
  await fetch('/api/data', {headers: {Authorization: 'Bearer TOKEN'}});
  await fetch('/api/data?again=1');  // now carries the cookie set by the first answer
  await fetch('/redirect');
  await fetch('/missing');
  window.done = true;
})();
</script>""".replace("TOKEN", TOKEN)


async def poll(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "format=duration,format_name:stream=codec_name,width,height,"
                          "nb_read_frames", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def check_har_shape(har: dict[str, Any]) -> None:
    """The fields HAR 1.2 requires, with their types (the spec's `required` set)."""
    log = har["log"]
    assert log["version"] == "1.2" and isinstance(log["creator"]["name"], str)
    assert isinstance(log["creator"]["version"], str)
    for page in log["pages"]:
        dt.datetime.fromisoformat(page["startedDateTime"])
        assert isinstance(page["id"], str) and isinstance(page["title"], str)
        assert set(page["pageTimings"]) >= {"onContentLoad", "onLoad"}
    for e in log["entries"]:
        dt.datetime.fromisoformat(e["startedDateTime"])
        assert isinstance(e["time"], (int, float)) and e["time"] >= 0
        req, resp = e["request"], e["response"]
        for key, typ in (("method", str), ("url", str), ("httpVersion", str), ("cookies", list),
                         ("headers", list), ("queryString", list), ("headersSize", int),
                         ("bodySize", int)):
            assert isinstance(req[key], typ), (key, req)
        for key, typ in (("status", int), ("statusText", str), ("httpVersion", str),
                         ("cookies", list), ("headers", list), ("content", dict),
                         ("redirectURL", str), ("headersSize", int), ("bodySize", int)):
            assert isinstance(resp[key], typ), (key, resp)
        assert isinstance(resp["content"]["size"], int) and "mimeType" in resp["content"]
        assert isinstance(e["cache"], dict)
        t = e["timings"]
        assert all(t[k] >= 0 for k in ("send", "wait", "receive")), t
        assert all(t.get(k, -1) >= -1 for k in ("blocked", "dns", "connect", "ssl")), t
        assert all(set(h) == {"name", "value"} for h in req["headers"] + resp["headers"])


@pytest.fixture
async def site() -> Any:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def data(_: web.Request) -> web.Response:
        resp = web.json_response({"ok": True})
        resp.set_cookie("sid", COOKIE)
        return resp

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/api/data?x=1")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/api/data", data)
    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore
    await runner.cleanup()


async def test_a_real_chromium_session_gives_a_har_and_a_video(site: str, tmp_path: Path) -> None:
    har, video = HarRecorder(), VideoRecorder(tmp_path / "out" / "screen.webm", fps=10,
                                              spool_dir=tmp_path)
    acks: list[asyncio.Task[Any]] = []
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(tmp_path / "user-data"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 640, "height": 480})
        try:
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            cdp = await ctx.new_cdp_session(page)
            assert set(NETWORK_EVENTS) <= set(HAR_EVENTS)
            for method in HAR_EVENTS:
                cdp.on(method, lambda params, m=method: har.feed(m, params))

            def frame(params: dict[str, Any]) -> None:
                video.feed_frame(base64.b64decode(params["data"]), params["metadata"]["timestamp"])
                acks.append(asyncio.ensure_future(cdp.send(
                    "Page.screencastFrameAck", {"sessionId": params["sessionId"]})))

            cdp.on("Page.screencastFrame", frame)
            await cdp.send("Network.enable")
            await cdp.send("Page.enable")
            await cdp.send("Page.startScreencast", {"format": "jpeg", "quality": 60,
                                                    "maxWidth": 640, "maxHeight": 480})
            await page.goto(site + "/")
            await page.wait_for_function("window.done === true", timeout=30_000)
            urls = lambda: {e["request"]["url"]: e for e in har.har()["log"]["entries"]  # noqa
                            if e["response"]["status"]}
            await poll(lambda: site + "/missing" in urls(), "the last request's answer")
            await poll(lambda: video.frame_count >= 5, "five screencast frames")
            await cdp.send("Page.stopScreencast")
        finally:
            await ctx.close()
    await asyncio.gather(*acks, return_exceptions=True)

    doc = har.har()
    check_har_shape(doc)
    text = json.dumps(doc)
    assert TOKEN not in text and COOKIE not in text
    log = doc["log"]
    assert [p["title"] for p in log["pages"]] == [site + "/"]
    assert log["pages"][0]["pageTimings"]["onLoad"] > 0
    by_url = {e["request"]["url"]: e for e in log["entries"]}
    root = by_url[site + "/"]
    assert (root["request"]["method"], root["response"]["status"]) == ("GET", 200)
    assert root["response"]["content"]["mimeType"] == "text/html"
    assert root["response"]["content"]["size"] == len(PAGE.encode())
    assert root["response"]["bodySize"] == len(PAGE.encode())  # sent uncompressed
    assert root["response"]["headersSize"] > len("HTTP/1.1 200 OK\r\n\r\n")
    assert root["pageref"] == log["pages"][0]["id"] and root["_resourceType"] == "document"
    assert root["request"]["httpVersion"] == "HTTP/1.1" and root["serverIPAddress"] == "127.0.0.1"
    api = by_url[site + "/api/data"]
    assert api["response"]["status"] == 200
    assert {"name": "Authorization", "value": REDACTED} in api["request"]["headers"]
    moved = by_url[site + "/redirect"]
    assert (moved["response"]["status"], moved["response"]["redirectURL"]) == (302, "/api/data?x=1")
    assert by_url[site + "/api/data?x=1"]["request"]["queryString"] == [{"name": "x", "value": "1"}]
    assert by_url[site + "/missing"]["response"]["status"] == 404

    out = await video.finish()
    assert out == tmp_path / "out" / "screen.webm"
    probe = ffprobe(out)
    stream = probe["streams"][0]
    assert stream["codec_name"] == "vp8" and "webm" in probe["format"]["format_name"]
    assert int(stream["nb_read_frames"]) > 0 and float(probe["format"]["duration"]) > 0
    assert (stream["width"], stream["height"]) == (640, 480)
    assert [p.name for p in tmp_path.glob("bpool-video-*")] == []  # the spool is gone


# ---------------------------------------------------------------------------- no browser


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Two JPEG images of different sizes, made by ffmpeg."""
    out = []
    for colour, size in (("red", "160x120"), ("blue", "99x201")):
        path = tmp_path_factory.mktemp("jpeg") / f"{colour}.jpg"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color={colour}:s={size}",
                        "-frames:v", "1", str(path)], check=True, timeout=60)
        out.append(path.read_bytes())
    return out


async def test_frames_are_shown_for_their_time_in_the_first_frames_size(
        jpegs: list[bytes], tmp_path: Path) -> None:
    video = VideoRecorder(tmp_path / "v.webm", fps=10, spool_dir=tmp_path)
    video.feed_frame(jpegs[0], 100.0)
    video.feed_frame(b"not a jpeg", 100.5)
    video.feed_frame(jpegs[1], 102.0)  # a resized screen, two seconds later
    for n in range(30):  # then 100 changes a second for 0.3 s
        video.feed_frame(jpegs[n % 2], 102.01 + n / 100)
    assert video.frame_count == 32
    out = await video.finish()
    assert out is not None
    probe = ffprobe(out)
    stream = probe["streams"][0]
    # 2.3 s of frames + 1/fps for the last one
    assert 2.3 <= float(probe["format"]["duration"]) <= 2.5
    # 10 a second, whatever came in: the still first frame repeated, the burst thinned out
    assert 2.3 * 10 <= int(stream["nb_read_frames"]) <= 2.5 * 10 + 1
    assert (stream["width"], stream["height"]) == (160, 120)
    assert list(tmp_path.glob("bpool-video-*")) == []


async def test_without_ffmpeg_there_is_no_video_and_one_warning(
        jpegs: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(recording_video, "_warned_missing", False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    caplog.set_level(logging.WARNING, "bpool.sessions.recording")
    for n in range(2):
        video = VideoRecorder(tmp_path / f"v{n}.webm", spool_dir=tmp_path)
        video.feed_frame(jpegs[0], 1.0)
        assert await video.finish() is None
    assert [r.getMessage() for r in caplog.records if "ffmpeg" in r.getMessage()] == [
        "ffmpeg not found: session videos are not recorded (install ffmpeg)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


async def test_a_failing_encoder_leaves_nothing_behind(jpegs: list[bytes], tmp_path: Path) -> None:
    video = VideoRecorder(tmp_path / "v.webm", spool_dir=tmp_path, ffmpeg="/bin/false")
    video.feed_frame(jpegs[0], 1.0)
    assert await video.finish() is None
    assert list(tmp_path.iterdir()) == []
    assert await VideoRecorder(tmp_path / "none.webm").finish() is None  # no frames at all


def slow_encoder(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for ffmpeg that records its pid and never finishes."""
    pidfile, script = tmp_path / "encoder.pid", tmp_path / "slow-ffmpeg"
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 300\n")
    script.chmod(0o755)
    return script, pidfile


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_a_stopped_encoding_kills_ffmpeg_and_cleans_up(
        jpegs: list[bytes], tmp_path: Path, how: str) -> None:
    script, pidfile = slow_encoder(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    video = VideoRecorder(tmp_path / "v.webm", spool_dir=spool, ffmpeg=str(script),
                          encode_timeout_s=300 if how == "cancelled" else 0.5)
    video.feed_frame(jpegs[0], 1.0)
    task = asyncio.create_task(video.finish())
    await poll(lambda: pidfile.exists() and pidfile.read_text().strip(), "the encoder to start")
    pid = int(pidfile.read_text())
    if how == "cancelled":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        assert await task is None
    assert gone(pid)  # reaped, not left running
    assert list(spool.iterdir()) == [] and not (tmp_path / "v.webm").exists()


def test_a_failed_request_and_the_entry_bound() -> None:
    har = HarRecorder(max_entries=1)
    req = {"url": "http://127.0.0.1:1/x", "method": "POST", "postData": "a=1",
           "headers": {"Content-Type": "application/x-www-form-urlencoded", "Cookie": "s=1"}}
    har.feed("Network.requestWillBeSent", {"requestId": "1", "loaderId": "L", "timestamp": 10.0,
                                           "wallTime": 1_700_000_000.0, "request": req})
    har.feed("Network.loadingFailed", {"requestId": "1", "timestamp": 10.25,
                                       "errorText": "net::ERR_CONNECTION_REFUSED"})
    har.feed("Network.requestWillBeSent", {"requestId": "2", "timestamp": 11.0,
                                           "wallTime": 1_700_000_001.0, "request": req})
    log = har.har()["log"]
    check_har_shape({"log": log})
    [entry] = log["entries"]
    assert entry["response"]["status"] == 0
    assert entry["response"]["_error"] == "net::ERR_CONNECTION_REFUSED"
    assert entry["request"]["postData"] == {"mimeType": "application/x-www-form-urlencoded",
                                            "text": "a=1"}
    assert entry["timings"]["wait"] == 250.0 and entry["timings"]["receive"] == 0
    assert entry["startedDateTime"] == "2023-11-14T22:13:20.000+00:00"
    assert {"name": "Cookie", "value": REDACTED} in entry["request"]["headers"]
    assert "1 requests" in log["comment"]
    plain = HarRecorder(redact=False)
    plain.feed("Network.requestWillBeSent", {"requestId": "1", "timestamp": 1.0, "request": req})
    assert {"name": "Cookie", "value": "s=1"} in plain.har()["log"]["entries"][0]["request"]["headers"]
