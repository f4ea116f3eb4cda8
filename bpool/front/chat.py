"""POST /v1/chat/completions: one job through the broker, answered as JSON or as SSE.

Every wait is bounded: until a worker holds the job, by the broker's queue deadline plus a margin
(`FrontSettings.assign_wait_s`); after that, by the job timeout. A job the client stops waiting
for, for whatever reason (disconnect, timeout, our own error), is cancelled at the broker at once
so its worker becomes free.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bpool.front.attachments import attach
from bpool.front.broker_link import JobEvent
from bpool.front.errors import ApiError, error_body, error_of
from bpool.front.appstate import LINK, REQUEST_ID, SETTINGS
from bpool.front.metrics import CHAT_OBS, METRICS, ChatObs
from bpool.front.settings import FrontSettings
from bpool.front.schema import (
    ChatRequest, chunk_json, completion_json, estimate_usage, parse_chat_request, to_job_spec,
)
from bpool.protocol import Assigned, Chunk, Done, Failed, JobSpec

log = logging.getLogger("bpool.front")


class JobWait:
    """Reads one job's events with the right deadline for each phase."""

    def __init__(self, queue: asyncio.Queue[JobEvent], settings: FrontSettings) -> None:
        self.queue = queue
        self.settings = settings
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self.deadline = self.started + settings.assign_wait_s
        self.profile: str | None = None
        self.obs: ChatObs | None = None

    async def next(self) -> JobEvent:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(self.deadline):
                event = await self.queue.get()
        except TimeoutError:
            if self.profile is None:
                raise ApiError(503, "No worker became free in time", code="queue_timeout",
                               retry_after_s=1.0) from None
            raise ApiError(504, f"The worker {self.profile} did not finish within "
                           f"{self.settings.job_timeout_s:g} s", code="timeout") from None
        if self.obs is not None:
            self.obs.saw(event)
        if isinstance(event, Assigned):
            if self.profile is None:
                self.deadline = loop.time() + self.settings.job_timeout_s
            self.profile = event.profile_id
        return event


def sse(data: Any) -> bytes:
    return b"data: " + msgspec.json.encode(data) + b"\n\n"


JSON_TYPES = ("application/json",)


async def read_body(request: web.Request, settings: FrontSettings) -> bytes:
    """The request body, bounded in size (client_max_size: 413) and in time (408)."""
    # A missing Content-Type is read as JSON (hand-written clients); any other type is refused:
    # text/plain and form posts are what a web page can send without a CORS preflight.
    ctype = request.headers.get("Content-Type")
    if ctype is not None and request.content_type not in JSON_TYPES:
        raise ApiError(415, "Send the request body as JSON (Content-Type: application/json)",
                       code="unsupported_media_type")
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, f"The request body did not arrive within "
                       f"{settings.body_timeout_s:g} s", code="request_timeout") from None
    except HttpProcessingError:  # e.g. broken chunked encoding, a body shorter than announced
        raise ApiError(400, "The request body is malformed", code="bad_request") from None


async def write(resp: web.StreamResponse, data: bytes, settings: FrontSettings,
                request: web.Request, *, eof: bool = False) -> None:
    """Write to a client that must keep reading: aiohttp waits (drain) once its buffer is full,
    and a client that reads nothing for write_timeout_s is cut off, which cancels its job."""
    try:
        async with asyncio.timeout(settings.write_timeout_s):
            if eof:
                await resp.write_eof(data)
            else:
                await resp.write(data)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ClientStalled(f"the client read nothing for {settings.write_timeout_s:g} s"
                            ) from None


class ClientStalled(ConnectionResetError):
    """The client stopped reading its answer; treated as a client that went away."""


async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    link = request.app[LINK]
    body = await read_body(request, settings)
    req = parse_chat_request(body)
    request[CHAT_OBS] = obs = request.app[METRICS].chat(req.model)
    spec = await attach(req, to_job_spec(req))
    job_id = uuid.uuid4().hex
    queue = link.submit(job_id, spec, settings.queue_timeout_s)
    wait = JobWait(queue, settings)
    wait.obs = obs
    outcome = "error"
    t0 = time.monotonic()
    try:
        if req.stream:
            resp, outcome = await _stream(request, req, spec, wait, job_id)
        else:
            resp, outcome = await _collect(request, req, spec, wait, job_id)
        return resp
    except ApiError as exc:
        outcome = exc.code or str(exc.status)
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        outcome = "client_gone"
        raise
    finally:
        # The link stops tracking a job when the broker ends it (Done/Failed) or is lost; a job
        # still tracked here is one nobody waits for any more (client gone, timeout, our error).
        if job_id in link.jobs:
            link.cancel(job_id)
        log.info("request %s job %s profile %s: %s in %.2f s", request[REQUEST_ID], job_id,
                 wait.profile, outcome, time.monotonic() - t0,
                 extra={"request_id": request[REQUEST_ID], "job_id": job_id,
                        "profile": wait.profile})


async def _collect(
    request: web.Request, req: ChatRequest, spec: JobSpec, wait: JobWait, job_id: str
) -> tuple[web.StreamResponse, str]:
    content: list[str] = []
    reasoning: list[str] = []
    while True:
        event = await wait.next()
        if isinstance(event, Chunk):
            content.append(event.content)
            reasoning.append(event.reasoning)
        elif isinstance(event, Failed):
            raise error_of(event.error)
        elif isinstance(event, Done):
            text, thought = "".join(content), "".join(reasoning)
            usage = event.usage or estimate_usage(spec, text, thought)
            data = completion_json(f"chatcmpl-{job_id}", req.model, text, thought,
                                   event.finish_reason, usage)
            resp = web.StreamResponse(headers={
                "Content-Type": "application/json",
                "x-bpool-profile": wait.profile or "",
                "x-request-id": request[REQUEST_ID],
            })
            payload = msgspec.json.encode(data)
            resp.content_length = len(payload)
            await resp.prepare(request)
            await write(resp, payload, wait.settings, request, eof=True)
            return resp, event.finish_reason


async def _stream(
    request: web.Request, req: ChatRequest, spec: JobSpec, wait: JobWait, job_id: str
) -> tuple[web.StreamResponse, str]:
    completion_id = f"chatcmpl-{job_id}"
    created = int(time.time())
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    content: list[str] = []
    reasoning: list[str] = []
    resp: web.StreamResponse | None = None

    async def out(data: bytes, eof: bool = False) -> None:
        assert resp is not None
        await write(resp, data, wait.settings, request, eof=eof)

    def chunk(delta: dict[str, Any], **kw: Any) -> bytes:
        return sse(chunk_json(completion_id, req.model, created, delta, **kw))

    try:
        while True:
            event = await wait.next()
            if isinstance(event, Assigned):
                continue
            opening = b""
            if resp is None:
                # Headers wait for the first answer event, not just Assigned: a job that fails
                # before any output still gets its real HTTP status, and a job the broker moved
                # to another worker names the profile that actually served it.
                if isinstance(event, Failed):
                    raise error_of(event.error)
                resp = web.StreamResponse(headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "x-bpool-profile": wait.profile or "",
                    "x-request-id": request[REQUEST_ID],
                })
                await resp.prepare(request)
                # Written with the first delta: one write, one packet, for the first token.
                opening = chunk({"role": "assistant", "content": ""})
            if isinstance(event, Chunk):
                delta: dict[str, Any] = {}
                if event.reasoning:
                    delta["reasoning_content"] = event.reasoning
                    reasoning.append(event.reasoning)
                if event.content:
                    delta["content"] = event.content
                    content.append(event.content)
                if delta or opening:
                    await out(opening + (chunk(delta) if delta else b""))
            elif isinstance(event, Failed):
                raise error_of(event.error)
            elif isinstance(event, Done):
                if opening:
                    await out(opening)
                usage = event.usage or estimate_usage(spec, "".join(content), "".join(reasoning))
                if include_usage:  # OpenAI's shape: usage on an extra chunk with no choices
                    await out(chunk({}, reason=event.finish_reason))
                    await out(chunk({}, usage=usage, no_choices=True))
                else:
                    await out(chunk({}, reason=event.finish_reason, usage=usage))
                await out(b"data: [DONE]\n\n", eof=True)
                return resp, event.finish_reason
    except ApiError as exc:
        if resp is None:
            raise
        # The status line is gone already: report in-band, the way OpenAI streams do.
        await out(sse(exc.body()), eof=True)
        return resp, exc.code or "error"
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        if resp is None:
            raise
        log.exception("stream for job %s broke", job_id)
        await out(sse(error_body("Internal error", "server_error", None, "internal")), eof=True)
        return resp, "internal"
