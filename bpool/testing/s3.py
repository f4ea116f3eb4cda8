"""An S3-compatible server for tests (moto's standalone server, a real HTTP server in its own
process on a free loopback port) and a loopback proxy in front of it that fails the first
requests, to see retries happen over a real connection."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """`python -m moto.server` on 127.0.0.1; `url` once started. Any access key is accepted."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "MotoServer":
        self.port = _free_port()
        log = open(self.log_path, "wb")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({self.proc.returncode}): "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server not answering after {timeout_s:.0f} s")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class FlakyProxy:
    """A loopback HTTP proxy to `upstream`: the first `failures` requests are answered with
    `status` (an S3 error document) or, with status 0, the connection is closed without an
    answer; every later one is passed through. With `methods`, only requests of those HTTP
    methods fail. `requests` counts what arrived, `failed` what was failed."""

    def __init__(self, upstream_port: int, failures: int, status: int = 500,
                 code: str = "InternalError", methods: frozenset[str] | None = None) -> None:
        self.upstream_port = upstream_port
        self.failures = failures
        self.status = status
        self.code = code
        self.methods = methods
        self.requests = 0
        self.failed = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "FlakyProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.requests += 1
        method = head.split(b" ", 1)[0].decode("latin-1")
        if self.failed < self.failures and (self.methods is None or method in self.methods):
            self.failed += 1
            await self._fail(head, reader, writer)
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _fail(self, head: bytes, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            if self.status:
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, val = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(val.strip())
                if length:
                    await reader.readexactly(length)
                body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{self.code}"
                        f"</Code><Message>injected by the test</Message></Error>").encode()
                writer.write(f"HTTP/1.1 {self.status} Injected\r\nContent-Type: application/xml"
                             f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                             .encode() + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
