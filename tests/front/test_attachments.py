"""Images and files in messages: data URLs decoded, http(s) URLs fetched from a loopback server,
every limit and refusal a 400 naming the part (front/attachments.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from typing import AsyncIterator

import pytest
from aiohttp import web

from bpool.front.attachments import AttachmentLimits, attach, sniff
from bpool.front.errors import ApiError
from bpool.front.schema import parse_chat_request, to_job_spec
from bpool.protocol import JobSpec


def png(width: int = 1, height: int = 1) -> bytes:
    """A real, valid PNG (grey pixels), so nothing here depends on a hand-typed byte string."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PNG = png(3, 2)
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
OPEN = AttachmentLimits(private_urls=True, fetch_timeout_s=5.0)


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}


def request(*parts: dict, role: str = "user") -> object:
    body = {"model": "m", "messages": [{"role": role, "content": [
        {"type": "text", "text": "what is this?"}, *parts]}]}
    return parse_chat_request(json.dumps(body).encode())


async def spec_of(req: object, limits: AttachmentLimits = OPEN) -> JobSpec:
    return await attach(req, to_job_spec(req), limits)


async def refused(req: object, limits: AttachmentLimits = OPEN) -> ApiError:
    with pytest.raises(ApiError) as info:
        spec = await spec_of(req, limits)
        pytest.fail(f"accepted: {spec.messages[0].attachments}")
    err = info.value
    assert err.status == 400
    body = err.body()["error"]
    assert body["param"] == err.param and body["message"] == err.message
    return err


# ---------------------------------------------------------------------------- data URLs


async def test_a_data_url_image_arrives_whole_with_its_type() -> None:
    spec = await spec_of(request(image_part(data_url("image/png", PNG))))
    (msg,) = spec.messages
    assert msg.content == "what is this?"
    (att,) = msg.attachments
    assert (att.mime, att.data) == ("image/png", PNG)
    assert att.name.endswith(".png")


async def test_the_bytes_signature_wins_over_the_declared_type() -> None:
    spec = await spec_of(request(image_part(data_url("image/png", JPEG))))
    assert spec.messages[0].attachments[0].mime == "image/jpeg"
    assert spec.messages[0].attachments[0].name.endswith(".jpg")


async def test_no_attachment_leaves_the_spec_untouched() -> None:
    req = request()
    spec = to_job_spec(req)
    assert await attach(req, spec, OPEN) is spec


async def test_an_image_alone_is_a_valid_message() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [
        image_part(data_url("image/gif", b"GIF89a" + b"\x00" * 20))]}]}
    spec = await spec_of(parse_chat_request(json.dumps(body).encode()))
    assert spec.messages[0].content == ""
    assert spec.messages[0].attachments[0].mime == "image/gif"


@pytest.mark.parametrize("url, code", [
    (data_url("text/plain", b"hello there"), "unsupported_attachment"),
    (data_url("application/pdf", PDF), "unsupported_attachment"),  # a PDF goes in a file part
    ("data:image/png;base64,@@not base64@@", "invalid_attachment"),
    ("data:image/png,rawbytes", "invalid_attachment"),
    ("ftp://example.com/a.png", "invalid_attachment"),
])
async def test_bad_images_are_refused_naming_the_part(url: str, code: str) -> None:
    err = await refused(request(image_part(data_url("image/png", PNG)), image_part(url)))
    assert err.param == "messages[0].content[2].image_url.url"
    assert err.code == code


async def test_the_size_caps_per_file_and_per_request() -> None:
    small = AttachmentLimits(max_bytes=len(PNG) - 1, private_urls=True)
    err = await refused(request(image_part(data_url("image/png", PNG))), small)
    assert err.code == "attachment_too_large" and str(len(PNG) - 1) in err.message
    total = AttachmentLimits(max_bytes=len(PNG), max_total_bytes=len(PNG) + 10, private_urls=True)
    err = await refused(request(image_part(data_url("image/png", PNG)),
                                image_part(data_url("image/png", PNG))), total)
    assert err.code == "attachment_too_large"
    assert err.param == "messages[0].content[2].image_url.url"


async def test_file_parts_take_pdfs_and_refuse_file_ids() -> None:
    spec = await spec_of(request({"type": "file", "file": {
        "file_data": data_url("application/pdf", PDF), "filename": "report.pdf"}}))
    (att,) = spec.messages[0].attachments
    assert (att.name, att.mime, att.data) == ("report.pdf", "application/pdf", PDF)
    bare = await spec_of(request({"type": "file", "file": {
        "file_data": base64.b64encode(PDF).decode(), "filename": "notes.pdf"}}))
    assert bare.messages[0].attachments[0].data == PDF
    err = await refused(request({"type": "file", "file": {"file_id": "file-abc"}}))
    assert err.param == "messages[0].content[1].file.file_id"


async def test_images_outside_user_messages_and_other_part_types_are_refused() -> None:
    err = await refused(request(image_part(data_url("image/png", PNG)), role="system"))
    assert err.param == "messages[0].content[1].type"
    with pytest.raises(ApiError) as info:
        to_job_spec(request({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}))
    assert info.value.param == "messages[0].content[1].type"


def test_sniffing_knows_the_page_types() -> None:
    assert sniff(PNG) == "image/png"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"\x00\x00\x00\x18ftypheic") == "image/heic"
    assert sniff(b"<html>") is None


# ---------------------------------------------------------------------------- http(s) URLs


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A loopback server: /cat.png, /page (html), /big (endless), /slow (never answers until the
    test ends), /hop (a redirect to /cat.png)."""
    release = asyncio.Event()

    async def cat(_: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html>no</html>", content_type="text/html")

    async def big(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(req)
        while not release.is_set():
            await resp.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 65536)
        return resp

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=PNG, content_type="image/png")

    async def hop(_: web.Request) -> web.Response:
        raise web.HTTPFound("/cat.png")

    app = web.Application()
    app.router.add_get("/cat.png", cat)
    app.router.add_get("/page", page)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hop", hop)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", release
    finally:
        release.set()
        await runner.cleanup()


async def test_an_http_image_is_fetched_and_named_after_its_path(server) -> None:
    base, _ = server
    spec = await spec_of(request(image_part(base + "/cat.png")))
    (att,) = spec.messages[0].attachments
    assert (att.name, att.mime, att.data) == ("cat.png", "image/png", PNG)
    hopped = await spec_of(request(image_part(base + "/hop")))
    assert hopped.messages[0].attachments[0].data == PNG


async def test_loopback_and_private_addresses_are_not_fetched_by_default(server) -> None:
    base, _ = server
    port = base.rsplit(":", 1)[1]
    closed = AttachmentLimits()
    for url in (base + "/cat.png", f"http://localhost:{port}/cat.png",
                "http://10.1.2.3/x.png", "http://[::1]/x.png", "http://169.254.169.254/x.png"):
        err = await refused(request(image_part(url)), closed)
        assert err.code == "forbidden_url", (url, err.message)
        assert err.param == "messages[0].content[1].image_url.url"


async def test_a_non_image_answer_is_refused(server) -> None:
    base, _ = server
    err = await refused(request(image_part(base + "/page")))
    assert err.code == "unsupported_attachment" and "text/html" in err.message


async def test_an_endless_answer_is_cut_at_the_cap_while_it_streams(server) -> None:
    base, _ = server
    limits = AttachmentLimits(max_bytes=200_000, private_urls=True)
    err = await asyncio.wait_for(refused(request(image_part(base + "/big")), limits), 60)
    assert err.code == "attachment_too_large"


async def test_a_url_that_does_not_answer_times_out(server) -> None:
    base, _ = server
    limits = AttachmentLimits(fetch_timeout_s=0.3, private_urls=True)
    err = await refused(request(image_part(base + "/slow")), limits)
    assert err.code == "attachment_fetch_failed" and "0.3 s" in err.message


async def test_a_missing_file_names_the_status(server) -> None:
    base, _ = server
    err = await refused(request(image_part(base + "/nothing.png")))
    assert err.code == "attachment_fetch_failed" and "404" in err.message
