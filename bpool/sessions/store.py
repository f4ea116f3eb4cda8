"""Where finished recordings are kept: files under the run directory (the default) or an
S3-compatible store (MinIO, AWS S3) when BPOOL_S3_ENDPOINT is set.

`put` returns a location string that the session log keeps (`file:/abs/path` or
`s3://bucket/key`); `get` and `open` take it back. boto3 is blocking, so every S3 call runs in
a thread; transient failures (connection errors, timeouts, 5xx, throttling) are retried with
exponential backoff a bounded number of times, anything else is raised at once.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, ClassVar, TypeVar

from bpool import config

log = logging.getLogger("bpool.sessions.store")

T = TypeVar("T")
CHUNK = 256 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
CONTENT_TYPES = {".har": "application/json", ".json": "application/json",
                 ".webm": "video/webm", ".mp4": "video/mp4"}


class RecordingNotFound(LookupError):
    """No recording at that location (deleted, or never stored)."""


def _checked(session_id: str, filename: str) -> None:
    for what, name in (("session id", session_id), ("file name", filename)):
        if not _NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"{what} {name!r} cannot name a stored recording")


@dataclass(frozen=True)
class StoreSettings:
    ENV: ClassVar[dict[str, str]] = {
        "s3_endpoint": "BPOOL_S3_ENDPOINT", "s3_region": "BPOOL_S3_REGION",
        "s3_access_key": "BPOOL_S3_ACCESS_KEY", "s3_secret_key": "BPOOL_S3_SECRET_KEY",
        "bucket": "MINIO_BUCKET",
    }
    s3_endpoint: str = config.default("BPOOL_S3_ENDPOINT")
    s3_region: str = config.default("BPOOL_S3_REGION")
    s3_access_key: str = field(default=config.default("BPOOL_S3_ACCESS_KEY"), repr=False)
    s3_secret_key: str = field(default=config.default("BPOOL_S3_SECRET_KEY"), repr=False)
    bucket: str = config.default("MINIO_BUCKET")

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> "StoreSettings":
        return config.build(cls, overrides)


class RecordingStore(abc.ABC):
    @abc.abstractmethod
    async def put(self, session_id: str, filename: str, path: Path) -> str:
        """Store the file at `path` as `filename` of `session_id`; its location."""

    @abc.abstractmethod
    async def get(self, location: str) -> bytes:
        """The whole recording (RecordingNotFound if there is none)."""

    @abc.abstractmethod
    async def open(self, location: str) -> AsyncIterator[bytes]:
        """The recording in pieces, for a streamed response (RecordingNotFound at once if
        there is none): `async for piece in await store.open(loc)`."""

    @abc.abstractmethod
    async def delete(self, location: str) -> None:
        """Remove a recording; no error if it is already gone."""


def open_store(settings: StoreSettings | None = None, run_dir: Path | None = None,
               **s3_options: Any) -> RecordingStore:
    """The pool's recording store: S3 when BPOOL_S3_ENDPOINT is set, else files under
    `<run dir>/recordings`. `s3_options` go to S3Store (attempts, backoff_s)."""
    settings = settings or StoreSettings.from_env()
    if settings.s3_endpoint:
        return S3Store(settings, **s3_options)
    return LocalStore((run_dir or config.run_dir()) / "recordings")


# ------------------------------------------------------------------------------ files


class LocalStore(RecordingStore):
    """`<root>/<session id>/<file name>`, directories 0700 and files 0600 (a recording shows
    what a client did in its browser)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    async def put(self, session_id: str, filename: str, path: Path) -> str:
        _checked(session_id, filename)
        return await asyncio.to_thread(self._put, session_id, filename, Path(path))

    def _put(self, session_id: str, filename: str, src: Path) -> str:
        folder = config.ensure_private_dir(config.ensure_private_dir(self.root) / session_id)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=folder)  # 0600; renamed when complete
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, CHUNK)
            os.replace(tmp, folder / filename)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"file:{folder / filename}"

    def _path(self, location: str) -> Path:
        if not location.startswith("file:"):
            raise ValueError(f"not a location of this store: {location!r}")
        path = Path(location[len("file:"):]).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{location!r} is outside the recordings directory")
        return path

    async def get(self, location: str) -> bytes:
        path = self._path(location)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise RecordingNotFound(location) from None

    async def open(self, location: str) -> AsyncIterator[bytes]:
        path = self._path(location)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise RecordingNotFound(location) from None
        return _pieces(lambda: f.read(CHUNK), f.close)

    async def delete(self, location: str) -> None:
        await asyncio.to_thread(self._path(location).unlink, missing_ok=True)


async def _pieces(read: Callable[[], bytes], close: Callable[[], Any]) -> AsyncIterator[bytes]:
    try:
        while piece := await asyncio.to_thread(read):
            yield piece
    finally:
        await asyncio.to_thread(close)


# ------------------------------------------------------------------------------ S3


class S3Store(RecordingStore):
    """Objects `<session id>/<file name>` in one bucket, created when missing. Path-style
    addressing: MinIO and other self-hosted stores on an address, not a bucket domain."""

    def __init__(self, settings: StoreSettings, *, attempts: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 8.0) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.settings = settings
        config.add_secret(settings.s3_secret_key)
        self.bucket = settings.bucket
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client: Any = None
        self._bucket_ready = False

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            s = self.settings
            self._client = boto3.client(
                "s3", endpoint_url=s.s3_endpoint or None, region_name=s.s3_region or None,
                aws_access_key_id=s.s3_access_key or None,
                aws_secret_access_key=s.s3_secret_key or None,
                # the retries are ours (below): one attempt per call here
                config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                              connect_timeout=10, read_timeout=60,
                              s3={"addressing_style": "path"}))
        return self._client

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn` in a thread, again after a transient failure, at most `attempts` times."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await asyncio.to_thread(fn)
            except Exception as exc:
                if not is_transient(exc) or attempt == self.attempts:
                    raise
                delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
                delay *= random.uniform(0.5, 1.0)  # spread the retries of many hosts
                log.warning("recording store: %s failed (%s), attempt %d of %d; again in "
                            "%.2f s", what, _brief(exc), attempt, self.attempts, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError

        def ensure() -> None:
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _status(exc) != 404:
                    raise
            extra: dict[str, Any] = {}
            region = self.settings.s3_region
            if region and region != "us-east-1":
                extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self.client.create_bucket(Bucket=self.bucket, **extra)
                log.info("recording store: bucket %s created", self.bucket)
            except ClientError as exc:  # another host created it first
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        await self._call(f"creating bucket {self.bucket}", ensure)
        self._bucket_ready = True

    async def put(self, session_id: str, filename: str, path: Path) -> str:
        _checked(session_id, filename)
        await self._ensure_bucket()
        key = f"{session_id}/{filename}"
        kind = CONTENT_TYPES.get(Path(filename).suffix.lower(), "application/octet-stream")

        def upload() -> None:
            with open(path, "rb") as body:  # a fresh file object per attempt
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=kind)

        await self._call(f"storing {key}", upload)
        return f"s3://{self.bucket}/{key}"

    def _key(self, location: str) -> tuple[str, str]:
        m = re.fullmatch(r"s3://([^/]+)/(.+)", location)
        if not m:
            raise ValueError(f"not a location of this store: {location!r}")
        return m.group(1), m.group(2)

    async def _get_object(self, location: str) -> Any:
        from botocore.exceptions import ClientError

        bucket, key = self._key(location)
        try:
            return await self._call(f"reading {key}",
                                    lambda: self.client.get_object(Bucket=bucket, Key=key))
        except ClientError as exc:
            if _status(exc) == 404:
                raise RecordingNotFound(location) from None
            raise

    async def get(self, location: str) -> bytes:
        obj = await self._get_object(location)
        body = obj["Body"]
        try:
            return await asyncio.to_thread(body.read)
        finally:
            body.close()

    async def open(self, location: str) -> AsyncIterator[bytes]:
        body = (await self._get_object(location))["Body"]
        return _pieces(lambda: body.read(CHUNK), body.close)

    async def delete(self, location: str) -> None:
        bucket, key = self._key(location)
        await self._call(f"deleting {key}",
                         lambda: self.client.delete_object(Bucket=bucket, Key=key))


# ------------------------------------------------------------------------------ errors

_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "RequestTimeTooSkewed", "Throttling", "ThrottlingException",
                    "RequestLimitExceeded"}


def _response(exc: Any) -> dict[str, Any]:
    response = getattr(exc, "response", None)  # ClientError's; some errors carry None
    return response if isinstance(response, dict) else {}


def _status(exc: Any) -> int:
    return int(_response(exc).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: Any) -> str:
    return str(_response(exc).get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: the network or the server, not the request."""
    from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError,
                                     HTTPClientError)

    if isinstance(exc, ClientError):
        return _status(exc) >= 500 or _status(exc) == 429 or _code(exc) in _TRANSIENT_CODES
    return isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError))


def _brief(exc: BaseException) -> str:
    code = _code(exc)
    return f"{type(exc).__name__} {code}".strip() if code else type(exc).__name__
