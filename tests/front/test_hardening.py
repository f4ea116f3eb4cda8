"""Hostile and broken input against a real front (production runner over TCP, scripted broker):
every refusal is an OpenAI-shaped 4xx, nothing hangs, no job leaks, no secret reaches the log."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from bpool import config, protocol
from bpool.front.broker_link import BrokerLink
from bpool.front.settings import load_api_keys
from bpool.front.errors import ApiError
from bpool.protocol import Assigned, Cancel, Chunk, PoolStatus, Submit, WorkerStatus
from support import ScriptedBroker, chat_body
from front_server import (
    Front, assert_next_submit_is, assert_openai_4xx, post_bytes, raw_request, start_front,
    wait_for,
)

KEY = "sk-hardening-0123456789"
StartFront = Callable[..., Awaitable[Front]]


@pytest.fixture
async def make_front(tmp_path: Path, scripted_broker: ScriptedBroker
                     ) -> AsyncIterator[StartFront]:
    fronts: list[Front] = []

    async def make(**kw: Any) -> Front:
        front = await start_front(tmp_path, scripted_broker, **kw)
        fronts.append(front)
        return front

    yield make
    for front in fronts:
        await front.runner.cleanup()


def body_of(**extra: Any) -> bytes:
    return json.dumps(chat_body("marker", **extra)).encode()


# ---------------------------------------------------------------------------- bad bytes


@pytest.mark.parametrize("body", [
    b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    b'{"model": "m", "x": ' + b"[" * 50_000 + b"]" * 50_000
    + b', "messages": [{"role": "user", "content": "hi"}]}',
    json.dumps(chat_body("hi", max_tokens=2**64)).encode(),
    json.dumps(chat_body("hi", max_tokens=2**64 - 1)).encode(),
    json.dumps(chat_body("hi", max_completion_tokens=10**30)).encode(),
    json.dumps(chat_body("hi", n=2**70)).encode(),
])
async def test_bad_bodies_are_400_and_submit_nothing(
    make_front: StartFront, scripted_broker: ScriptedBroker, body: bytes
) -> None:
    front = await make_front()
    reply = await raw_request(front.port, post_bytes(body))
    assert_openai_4xx(reply.status, reply.json(), 400)
    assert not front.link.jobs
    asyncio.create_task(raw_request(front.port, post_bytes(body_of())))
    sub = await assert_next_submit_is(scripted_broker, "marker")
    scripted_broker.send(protocol.Failed(sub.job_id, protocol.error("internal", "end")))


async def test_a_submit_that_cannot_be_encoded_leaves_no_entry(
    tmp_path: Path, scripted_broker: ScriptedBroker
) -> None:
    link = BrokerLink(f"ipc://{tmp_path}/front.sock", 0.2, 3)
    await link.start()
    try:
        spec = protocol.JobSpec(model="m", messages=(protocol.ChatMessage("user", "x"),),
                                max_tokens=2**70)
        with pytest.raises(ApiError) as err:
            link.submit("job-1", spec, 5.0)
        assert err.value.status == 400
        assert link.jobs == {} and link.counters["submitted"] == 0
    finally:
        await link.close()


async def test_non_utf8_bearer_is_401(make_front: StartFront) -> None:
    front = await make_front(api_keys=(KEY,))
    data = post_bytes(body_of()).replace(b"Connection: close\r\n",
                                         b"Connection: close\r\nAuthorization: Bearer \xff\r\n")
    reply = await raw_request(front.port, data)
    assert_openai_4xx(reply.status, reply.json(), 401)
    assert reply.json()["error"]["code"] == "invalid_api_key"


# ---------------------------------------------------------------------------- /health


def _status() -> PoolStatus:
    return PoolStatus("broker-1", (WorkerStatus("alice", "idle", 1.0, 0, None, 4242, "fake",
                                                "alice@example.com", ("m",)),), 0, {})


async def test_health_shows_details_only_with_a_key(
    make_front: StartFront, scripted_broker: ScriptedBroker
) -> None:
    scripted_broker.status = _status()
    front = await make_front(api_keys=(KEY,))
    async with aiohttp.ClientSession() as s:
        async with s.get(front.url + "/health") as resp:
            public = await resp.json()
        async with s.get(front.url + "/health", headers={"X-API-Key": KEY}) as resp:
            full = await resp.json()
    assert public["status"] == "ok" and public["idle"] == 1 and public["worker_count"] == 1
    text = json.dumps(public)
    assert "alice" not in text and "4242" not in text and "workers" not in public
    assert full["workers"][0]["account"] == "alice@example.com"
    assert full["workers"][0]["pid"] == 4242


async def test_open_mode_health_keeps_details(
    make_front: StartFront, scripted_broker: ScriptedBroker
) -> None:
    scripted_broker.status = _status()
    front = await make_front()
    async with aiohttp.ClientSession() as s:
        async with s.get(front.url + "/health") as resp:
            body = await resp.json()
    assert body["workers"][0]["account"] == "alice@example.com"


# ---------------------------------------------------------------------------- the keys file


def test_keys_file_comments_are_whole_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# team keys\n   # laptop\nab#cdef-0123\n\nsk-2\n")
    assert load_api_keys("", str(path)) == ("ab#cdef-0123", "sk-2")


@pytest.mark.parametrize("text", ["", "# only a comment\n\n   \n", "sk-1  # trailing\n"])
def test_a_keys_file_without_usable_keys_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=str(path)):
        load_api_keys("inline-key", str(path))


def test_front_refuses_to_start_with_an_empty_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bpool.http_front", "--port", "0"],
        env={"PATH": "/usr/bin:/bin", "BPOOL_API_KEYS_FILE": str(path),
             "BPOOL_RUN_DIR": str(tmp_path / "run")},
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == config.EX_CONFIG, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr


# ---------------------------------------------------------------------------- slow clients


async def test_a_trickling_body_gets_408(make_front: StartFront,
                                         scripted_broker: ScriptedBroker) -> None:
    front = await make_front(body_timeout_s=0.5)
    whole = post_bytes(body_of())
    reply = await raw_request(front.port, whole[:-10])  # the last 10 bytes never come
    assert_openai_4xx(reply.status, reply.json(), 408)
    assert not front.link.jobs and scripted_broker.inbox.empty()


async def test_idle_keepalive_connections_are_closed(make_front: StartFront) -> None:
    front = await make_front(keepalive_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    try:
        writer.write(b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 404 " in head
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        # The server, not the client, ends the idle connection.
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def test_a_client_that_stops_reading_is_cut_off_and_its_job_cancelled(
    make_front: StartFront, scripted_broker: ScriptedBroker
) -> None:
    front = await make_front(write_timeout_s=0.5)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", front.port))
    sock.setblocking(False)
    try:
        sock.sendall(post_bytes(json.dumps(chat_body("marker", stream=True)).encode()))
        sub = await scripted_broker.expect(Submit)
        scripted_broker.send(Assigned(sub.job_id, "alice"))
        piece = "x" * 16_384
        # Far more than any socket buffer holds; the client reads none of it.
        for i in range(400):
            scripted_broker.send(Chunk(sub.job_id, i, piece))
        cancel = await scripted_broker.expect(Cancel, timeout_s=10)
        assert cancel.job_id == sub.job_id
        await wait_for(lambda: not front.link.jobs, 5, "the job to be forgotten")
    finally:
        sock.close()


# ---------------------------------------------------------------------------- parser errors


async def test_oversized_headers_get_an_openai_error(make_front: StartFront) -> None:
    front = await make_front()
    data = post_bytes(body_of(), {"X-Filler": "y" * 20_000})
    reply = await raw_request(front.port, data)
    assert_openai_4xx(reply.status, reply.json())
    assert reply.headers["content-type"].startswith("application/json")


async def test_bad_chunking_gets_an_openai_error_and_the_line_is_not_logged(
    make_front: StartFront, scripted_broker: ScriptedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    front = await make_front()
    caplog.set_level(logging.DEBUG)
    secret = "sk-secret-in-the-request-line"
    data = (f"POST /v1/chat/completions?{secret} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n").encode()
    reply = await raw_request(front.port, data)
    assert_openai_4xx(reply.status, reply.json(), 400)
    bad_line = f"GET /{secret}\x01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    reply = await raw_request(front.port, bad_line)
    assert_openai_4xx(reply.status, reply.json(), 400)
    assert secret not in caplog.text
    assert scripted_broker.inbox.empty() and not front.link.jobs


# ---------------------------------------------------------------------------- web pages


async def test_requests_from_web_pages_are_refused(
    make_front: StartFront, scripted_broker: ScriptedBroker
) -> None:
    front = await make_front()
    for origin in ("https://evil.example", "null", "http://127.0.0.1:2048"):
        reply = await raw_request(front.port, post_bytes(body_of(), {"Origin": origin}))
        assert_openai_4xx(reply.status, reply.json(), 403)
        assert reply.json()["error"]["code"] == "origin_not_allowed"
    preflight = (b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n"
                 b"Connection: close\r\n\r\n")
    reply = await raw_request(front.port, preflight)
    assert reply.status == 403 and "access-control-allow-origin" not in reply.headers
    reply = await raw_request(front.port, post_bytes(body_of(), {"Content-Type": "text/plain"}))
    assert_openai_4xx(reply.status, reply.json(), 415)
    assert not front.link.jobs and scripted_broker.inbox.empty()


async def test_allowed_origins_get_cors(make_front: StartFront,
                                        scripted_broker: ScriptedBroker) -> None:
    origin = "https://app.example"
    front = await make_front(cors_origins=(origin,))
    preflight = (f"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n"
                 "Access-Control-Request-Method: POST\r\n"
                 "Access-Control-Request-Headers: authorization, content-type\r\n"
                 "Connection: close\r\n\r\n").encode()
    reply = await raw_request(front.port, preflight)
    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == origin
    assert "POST" in reply.headers["access-control-allow-methods"]
    call = asyncio.create_task(raw_request(front.port, post_bytes(body_of(), {"Origin": origin})))
    sub = await assert_next_submit_is(scripted_broker, "marker")
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(protocol.Done(sub.job_id, "stop", None))
    reply = await call
    assert reply.status == 200 and reply.headers["access-control-allow-origin"] == origin
