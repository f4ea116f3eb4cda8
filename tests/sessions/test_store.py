"""The recording store: files under the run directory, and S3 against a real S3-compatible
server (moto's standalone server) with failures injected by a loopback proxy."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Iterator

import aiohttp
import boto3
import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from bpool.sessions.store import (LocalStore, RecordingNotFound, S3Store, StoreSettings,
                                  open_store)
from bpool.testing.s3 import FlakyProxy, MotoServer

BODY = os.urandom(700 * 1024)  # several read pieces


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "made" / "screen.webm"
    path.parent.mkdir()
    path.write_bytes(BODY)
    return path


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


def settings(endpoint: str, bucket: str) -> StoreSettings:
    return StoreSettings(s3_endpoint=endpoint, s3_region="us-east-1", s3_access_key="test",
                         s3_secret_key="test-secret", bucket=bucket)


def admin(moto: MotoServer) -> object:
    return boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


async def read_all(store: object, location: str) -> bytes:
    pieces = [p async for p in await store.open(location)]  # type: ignore[attr-defined]
    assert len(pieces) > 1  # streamed, not one read
    return b"".join(pieces)


# ---------------------------------------------------------------------------- files


async def test_files_under_the_run_directory_are_private(tmp_path: Path,
                                                         recording: Path) -> None:
    run_dir = tmp_path / "run"
    store = open_store(StoreSettings(), run_dir=run_dir)
    assert isinstance(store, LocalStore)
    location = await store.put("sess-1", "screen.webm", recording)
    stored = run_dir / "recordings" / "sess-1" / "screen.webm"
    assert location == f"file:{stored.resolve()}"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert [p.name for p in stored.parent.iterdir()] == ["screen.webm"]  # no part file left
    assert await store.get(location) == BODY
    assert await read_all(store, location) == BODY
    await store.delete(location)
    with pytest.raises(RecordingNotFound):
        await store.get(location)
    with pytest.raises(RecordingNotFound):
        await store.open(location)


async def test_a_recording_streams_through_an_aiohttp_response(tmp_path: Path,
                                                              recording: Path) -> None:
    store = LocalStore(tmp_path / "rec")
    location = await store.put("sess-1", "screen.webm", recording)

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=await store.open(location), content_type="video/webm")

    app = web.Application()
    app.router.add_get("/r", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/r") as resp:
                assert resp.status == 200 and await resp.read() == BODY
    finally:
        await runner.cleanup()


def test_the_store_is_chosen_by_the_environment(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPOOL_RUN_DIR", str(tmp_path / "run"))
    for name in ("BPOOL_S3_ENDPOINT", "MINIO_BUCKET", "BPOOL_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    local = open_store()
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "run" / "recordings").resolve()
    monkeypatch.setenv("BPOOL_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("BPOOL_S3_SECRET_KEY", "s3-secret-value")
    remote = open_store()
    assert isinstance(remote, S3Store) and remote.bucket == "recordings"
    assert "s3-secret-value" not in repr(remote.settings)
    monkeypatch.setenv("MINIO_BUCKET", "other")
    assert open_store().bucket == "other"  # type: ignore[attr-defined]


@pytest.mark.parametrize("sid, name", [("../x", "a.har"), ("s", "../../etc/passwd"),
                                       ("s", ".hidden"), ("", "a.har"), ("s/t", "a.har")])
async def test_names_cannot_leave_the_store(tmp_path: Path, recording: Path, sid: str,
                                            name: str) -> None:
    store = LocalStore(tmp_path / "rec")
    with pytest.raises(ValueError):
        await store.put(sid, name, recording)


async def test_a_location_outside_the_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    store = LocalStore(tmp_path / "rec")
    for location in (f"file:{tmp_path / 'secret'}", f"file:{tmp_path}/rec/../secret",
                     "s3://recordings/x"):
        with pytest.raises(ValueError):
            await store.get(location)


# ---------------------------------------------------------------------------- S3


async def test_s3_creates_its_bucket_and_keeps_recordings(moto: MotoServer,
                                                          recording: Path) -> None:
    s3 = admin(moto)
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket="rec-a")  # type: ignore[attr-defined]
    store = open_store(settings(moto.url, "rec-a"))
    assert isinstance(store, S3Store)
    location = await store.put("sess-1", "screen.webm", recording)
    assert location == "s3://rec-a/sess-1/screen.webm"
    head = s3.head_object(Bucket="rec-a", Key="sess-1/screen.webm")  # type: ignore[attr-defined]
    assert head["ContentType"] == "video/webm" and head["ContentLength"] == len(BODY)
    assert await store.get(location) == BODY
    assert await read_all(store, location) == BODY
    # a second store (another host) finds the bucket there
    other = open_store(settings(moto.url, "rec-a"))
    har = recording.with_name("network.har")
    har.write_text('{"log": {}}')
    assert await other.put("sess-1", "network.har", har) == "s3://rec-a/sess-1/network.har"
    await store.delete(location)
    with pytest.raises(RecordingNotFound):
        await store.get(location)
    with pytest.raises(RecordingNotFound):
        await store.open(location)


@pytest.mark.parametrize("status", [500, 503, 0], ids=["500", "503", "dropped"])
async def test_transient_failures_are_retried(moto: MotoServer, recording: Path, status: int,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bpool.sessions.store")
    bucket = f"rec-retry-{status}"
    async with FlakyProxy(moto.port, failures=2, status=status) as proxy:
        store = S3Store(settings(proxy.url, bucket), attempts=4, backoff_s=0.01)
        location = await store.put("s1", "screen.webm", recording)
        assert proxy.failed == 2 and proxy.requests > 2
    assert await S3Store(settings(moto.url, bucket)).get(location) == BODY
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "attempt 1 of 4" in warnings[0]
    assert "test-secret" not in caplog.text


async def test_retries_are_bounded(moto: MotoServer, recording: Path) -> None:
    admin(moto).create_bucket(Bucket="rec-bounded")  # type: ignore[attr-defined]
    async with FlakyProxy(moto.port, failures=100, methods=frozenset({"PUT"})) as proxy:
        store = S3Store(settings(proxy.url, "rec-bounded"), attempts=3, backoff_s=0.01)
        with pytest.raises(ClientError) as err:
            await store.put("s1", "screen.webm", recording)
        assert err.value.response["Error"]["Code"] == "InternalError"
        assert proxy.failed == 3  # the upload, three times; the bucket was found


async def test_a_refusal_is_not_retried(moto: MotoServer, recording: Path) -> None:
    async with FlakyProxy(moto.port, failures=100, status=403, code="AccessDenied") as proxy:
        store = S3Store(settings(proxy.url, "rec-denied"), attempts=5, backoff_s=0.01)
        with pytest.raises(ClientError):
            await store.put("s1", "screen.webm", recording)
        assert proxy.requests == 1
