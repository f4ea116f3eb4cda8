"""Images and files in chat messages: decoded or fetched, checked, and put on the job.

OpenAI clients send an image as a content part `{"type": "image_url", "image_url": {"url": U}}`
where U is a `data:` URL or an http(s) URL, and a file (a PDF) as `{"type": "file", "file":
{"file_data": "data:application/pdf;base64,...", "filename": "a.pdf"}}`. The worker uploads
each one to the page, so the front does all the checking here, before a job exists:

* a size cap per file and per request (`BPOOL_MAX_ATTACHMENT_BYTES`, `..._ATTACHMENTS_BYTES`),
  enforced while a URL is still streaming, not after it has all arrived;
* a type the page takes: images (png, jpeg, webp, gif, heic, heif) in image parts, those and PDFs
  in file parts; the bytes' own signature wins over a declared type that disagrees;
* URLs are fetched with a timeout and never from loopback, private, link-local or otherwise
  non-public addresses (each redirect and each resolved address is checked, so a name that
  resolves to 127.0.0.1 is refused as well) unless `BPOOL_ATTACHMENT_PRIVATE_URLS=1`.

Every failure is a 400 in OpenAI's error shape whose `param` names the part.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from bpool import config
from bpool.front.errors import ApiError
from bpool.protocol import Attachment, JobSpec

IMAGE_TYPES: dict[str, str] = {
    "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif",
    "image/heic": "heic", "image/heif": "heif",
}
FILE_TYPES: dict[str, str] = {**IMAGE_TYPES, "application/pdf": "pdf"}
PART_TYPES = ("image_url", "file")  # routed here by schema.py
# Types a server gives when it does not know better: the bytes' signature decides then.
GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")
MAX_REDIRECTS = 5
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),(?P<data>.*)", re.S)


@dataclass(frozen=True)
class AttachmentLimits:
    ENV: ClassVar[dict[str, str]] = {
        "max_bytes": "BPOOL_MAX_ATTACHMENT_BYTES", "max_total_bytes": "BPOOL_MAX_ATTACHMENTS_BYTES",
        "fetch_timeout_s": "BPOOL_ATTACHMENT_FETCH_TIMEOUT_S",
        "private_urls": "BPOOL_ATTACHMENT_PRIVATE_URLS",
    }
    max_bytes: config.Count = config.default("BPOOL_MAX_ATTACHMENT_BYTES")
    max_total_bytes: config.Count = config.default("BPOOL_MAX_ATTACHMENTS_BYTES")
    fetch_timeout_s: config.Positive = config.default("BPOOL_ATTACHMENT_FETCH_TIMEOUT_S")
    private_urls: bool = config.default("BPOOL_ATTACHMENT_PRIVATE_URLS")

    @classmethod
    def from_env(cls) -> "AttachmentLimits":
        return config.build(cls)


def sniff(data: bytes) -> str | None:
    """The type the bytes' signature says, for the types we take; None when it says nothing."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"heim", b"heis"):
        return "image/heic"
    if data[4:8] == b"ftyp" and data[8:12] in (b"mif1", b"msf1"):
        return "image/heif"
    return None


def _bad(message: str, param: str, code: str = "invalid_attachment") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _too_large(where: str, size: int | str, limit: int, param: str) -> ApiError:
    return _bad(f"{where} is {size} bytes; the limit is {limit} bytes", param, "attachment_too_large")


def checked_type(declared: str, data: bytes, allowed: dict[str, str], param: str) -> str:
    """The attachment's type: its signature's when it has one, else the declared one; 400 when
    that is not a type the page takes."""
    declared = declared.strip().lower()
    mime = sniff(data) or ("" if declared in GENERIC_TYPES else declared)
    if mime == "image/jpg":
        mime = "image/jpeg"
    if mime not in allowed:
        what = mime or "unknown"
        raise _bad(f"The content type {what!r} is not supported here; send one of "
                   f"{', '.join(allowed)}", param, "unsupported_attachment")
    return mime


def decode_data_url(url: str, max_bytes: int, param: str) -> tuple[str, bytes]:
    """(declared type, bytes) of a base64 `data:` URL."""
    m = _DATA_URL.fullmatch(url.strip())
    if not m or ";base64" not in m.group("params").lower():
        raise _bad("A data: URL must look like data:<type>;base64,<data>", param)
    return m.group("mime"), decode_base64(m.group("data"), max_bytes, param)


def decode_base64(text: str, max_bytes: int, param: str) -> bytes:
    text = re.sub(r"\s+", "", text)
    if len(text) // 4 * 3 > max_bytes + 3:  # refused before decoding anything
        raise _too_large("The attachment", f"about {len(text) // 4 * 3}", max_bytes, param)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("The attachment's base64 data is malformed", param) from None
    if not data:
        raise _bad("The attachment is empty", param)
    if len(data) > max_bytes:
        raise _too_large("The attachment", len(data), max_bytes, param)
    return data


# ---------------------------------------------------------------------------- fetching URLs


def is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _Refused(OSError):
    pass


class GuardedResolver(AbstractResolver):
    """Resolves as usual and drops every non-public address: the connection can only go where
    the check allowed (no second lookup that could answer differently)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()
        self.refused: str | None = None

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[dict[str, Any]]:
        infos = await self._inner.resolve(host, port, family)
        ok = [i for i in infos if is_public(i["host"])]
        if not ok:
            self.refused = host
            raise _Refused(f"{host} resolves only to non-public addresses")
        return ok

    async def close(self) -> None:
        await self._inner.close()


def _check_url(url: str, private_ok: bool, param: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad("An image URL must be a data: URL or an http(s) URL with a host", param)
    if private_ok:
        return
    try:
        literal = ipaddress.ip_address(parts.hostname.strip("[]"))
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if not is_public(str(literal)):
        raise _bad(f"The image URL points at a non-public address ({parts.hostname}); it is "
                   "not fetched", param, "forbidden_url")


def _name_from(url: str) -> str:
    last = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return last if _NAME.fullmatch(last) else ""


async def fetch(session: aiohttp.ClientSession, url: str, limits: AttachmentLimits,
                max_bytes: int, param: str) -> tuple[str, bytes, str]:
    """(content type, bytes, name from the URL) of an http(s) URL, streamed under the cap."""
    try:
        async with asyncio.timeout(limits.fetch_timeout_s):
            for _ in range(MAX_REDIRECTS + 1):
                _check_url(url, limits.private_urls, param)
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise _bad(f"Fetching the image URL gave HTTP {resp.status}", param,
                                   "attachment_fetch_failed")
                    if resp.content_length is not None and resp.content_length > max_bytes:
                        raise _too_large("The image URL's content", resp.content_length,
                                         max_bytes, param)
                    data = bytearray()
                    async for piece in resp.content.iter_chunked(64 * 1024):
                        data += piece
                        if len(data) > max_bytes:
                            raise _too_large("The image URL's content", f"over {max_bytes}",
                                             max_bytes, param)
                    return resp.headers.get("Content-Type", "").split(";")[0], bytes(data), \
                        _name_from(url)
            raise _bad(f"The image URL redirected more than {MAX_REDIRECTS} times", param,
                       "attachment_fetch_failed")
    except TimeoutError:
        raise _bad(f"Fetching the image URL took longer than {limits.fetch_timeout_s:g} s",
                   param, "attachment_fetch_failed") from None
    except (aiohttp.ClientError, OSError) as exc:
        resolver = getattr(session.connector, "_resolver", None)
        if isinstance(resolver, GuardedResolver) and resolver.refused:
            raise _bad(f"The image URL's host {resolver.refused} resolves to a non-public "
                       "address; it is not fetched", param, "forbidden_url") from None
        raise _bad(f"Fetching the image URL failed: {type(exc).__name__}", param,
                   "attachment_fetch_failed") from None


def new_session(limits: AttachmentLimits) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=None if limits.private_urls else GuardedResolver(), limit=4, force_close=True)
    return aiohttp.ClientSession(connector=connector, trust_env=False,
                                 headers={"User-Agent": "bpool-attachments"})


# ---------------------------------------------------------------------------- the parts


def has_attachments(messages: Any) -> bool:
    return any(isinstance(m.content, list) and any(p.type in PART_TYPES for p in m.content)
               for m in messages)


class _Collector:
    def __init__(self, limits: AttachmentLimits):
        self.limits = limits
        self.total = 0
        self.count = 0
        self.session: aiohttp.ClientSession | None = None

    def _name(self, name: str, mime: str, allowed: dict[str, str]) -> str:
        ext = allowed[mime]
        stem = name.rsplit(".", 1)[0] if name else ""
        return f"{stem or f'attachment-{self.count}'}.{ext}"

    def _count(self, size: int, param: str) -> None:
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise _too_large("The request's attachments together", self.total,
                             self.limits.max_total_bytes, param)

    async def image(self, raw: Any, param: str) -> Attachment:
        url = raw.get("url") if isinstance(raw, dict) else raw
        param += ".image_url"
        if not isinstance(url, str) or not url.strip():
            raise _bad("An image_url part needs 'image_url.url'", param + ".url")
        param += ".url"
        self.count += 1
        if url.strip().lower().startswith("data:"):
            declared, data = decode_data_url(url, self.limits.max_bytes, param)
            name = ""
        else:
            if self.session is None:
                self.session = new_session(self.limits)
            # A URL is cut off at what the request may still carry, not only at the file cap.
            room = max(0, min(self.limits.max_bytes, self.limits.max_total_bytes - self.total))
            declared, data, name = await fetch(self.session, url.strip(), self.limits, room, param)
        self._count(len(data), param)
        mime = checked_type(declared, data, IMAGE_TYPES, param)
        return Attachment(self._name(name, mime, IMAGE_TYPES), mime, data)

    async def file(self, raw: Any, param: str) -> Attachment:
        param += ".file"
        if not isinstance(raw, dict):
            raise _bad("A file part needs a 'file' object", param)
        if raw.get("file_id") and not raw.get("file_data"):
            raise _bad("Uploaded file ids are not supported; send the file as 'file_data'",
                       param + ".file_id", "unsupported_attachment")
        data_field = raw.get("file_data")
        if not isinstance(data_field, str) or not data_field.strip():
            raise _bad("A file part needs 'file.file_data'", param + ".file_data")
        self.count += 1
        filename = raw.get("filename") if isinstance(raw.get("filename"), str) else ""
        name = filename.rsplit("/", 1)[-1] if _NAME.fullmatch(filename.rsplit("/", 1)[-1]) else ""
        if data_field.strip().lower().startswith("data:"):
            declared, data = decode_data_url(data_field, self.limits.max_bytes,
                                             param + ".file_data")
        else:  # bare base64: the file name's extension is the declared type
            data = decode_base64(data_field, self.limits.max_bytes, param + ".file_data")
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            declared = next((m for m, e in FILE_TYPES.items() if e == ext), "")
        self._count(len(data), param)
        mime = checked_type(declared, data, FILE_TYPES, param + ".file_data")
        return Attachment(self._name(name, mime, FILE_TYPES), mime, data)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def attach(req: Any, spec: JobSpec, limits: AttachmentLimits | None = None) -> JobSpec:
    """`spec` with the attachments of `req`'s messages (a ChatRequest whose messages line up with
    spec.messages); the same spec when there are none, at no cost."""
    if not has_attachments(req.messages):
        return spec
    collector = _Collector(limits or AttachmentLimits.from_env())
    messages = list(spec.messages)
    try:
        for i, m in enumerate(req.messages):
            if not isinstance(m.content, list):
                continue
            found = []
            for j, part in enumerate(m.content):
                if part.type not in PART_TYPES:
                    continue
                param = f"messages[{i}].content[{j}]"
                if m.role != "user":
                    raise _bad(f"Images and files are only taken in user messages, not in a "
                               f"'{m.role}' message", param + ".type", "unsupported_content")
                if part.type == "image_url":
                    found.append(await collector.image(part.image_url, param))
                else:
                    found.append(await collector.file(part.file, param))
            if found:
                messages[i] = msgspec.structs.replace(messages[i], attachments=tuple(found))
    finally:
        await collector.close()
    return msgspec.structs.replace(spec, messages=tuple(messages))
