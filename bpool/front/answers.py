"""One answer through the pool, for any client format: submit, read the job's events with a
deadline per phase, hold back what the plan says must be judged first, retry once when the
model broke the requested format, and hand the format's renderer a small stream of events.

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
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bpool.front import tools
from bpool.front.appstate import LINK, REQUEST_ID, SETTINGS
from bpool.front.broker_link import JobEvent
from bpool.front.errors import ApiError, error_of
from bpool.front.metrics import CHAT_OBS, METRICS, ChatObs
from bpool.front.plan import AnswerInvalid, Plan, invalid_answer
from bpool.front.schema import estimate_usage
from bpool.front.settings import FrontSettings
from bpool.front.tools import ToolCall
from bpool.protocol import Assigned, Chunk, Done, Failed, JobSpec, Usage

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


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + msgspec.json.encode(data) + b"\n\n"


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


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Delta:
    content: str = ""
    reasoning: str = ""


@dataclass(frozen=True)
class Calls:
    calls: list[ToolCall]


@dataclass(frozen=True)
class End:
    reason: str  # stop | length | tool_calls | content_filter | cancelled
    usage: Usage


AnswerEvent = Delta | Calls | End


def _add(a: Usage | None, b: Usage) -> Usage:
    if a is None:
        return b
    return Usage(a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens,
                 a.total_tokens + b.total_tokens, a.reasoning_tokens + b.reasoning_tokens)


@dataclass
class Answering:
    """One client request's answer: at most two jobs (the second only to correct the first)."""

    request: web.Request
    plan: Plan
    obs: ChatObs | None = None
    job_id: str | None = None
    wait: JobWait | None = None
    jobs: list[str] = field(default_factory=list)

    @property
    def profile(self) -> str | None:
        return self.wait.profile if self.wait is not None else None

    def _submit(self, spec: JobSpec) -> JobWait:
        settings, link = self.request.app[SETTINGS], self.request.app[LINK]
        self.job_id = uuid.uuid4().hex
        self.jobs.append(self.job_id)
        wait = JobWait(link.submit(self.job_id, spec, settings.queue_timeout_s), settings)
        wait.obs = self.obs
        self.wait = wait
        return wait

    def cancel_open(self) -> None:
        link = self.request.app[LINK]
        if self.job_id is not None and self.job_id in link.jobs:
            link.cancel(self.job_id)

    async def events(self) -> AsyncIterator[AnswerEvent]:
        """Events for the renderer. The first one comes with the first answer event of the
        pool (a failure before it raises ApiError with the real status instead)."""
        spec = self.plan.spec
        usage: Usage | None = None
        for attempt in (0, 1):
            wait = self._submit(spec)
            mode = self.plan.mode
            content: list[str] = []
            reasoning: list[str] = []
            native: list[ToolCall] = []  # function-call parts of the page's own answer
            while True:
                event = await wait.next()
                if isinstance(event, Assigned):
                    continue
                if isinstance(event, Failed):
                    raise error_of(event.error)
                if isinstance(event, Chunk):
                    native += [ToolCall(tools.new_call_id(), c.name, c.arguments)
                               for c in event.tool_calls]
                    if event.reasoning:
                        reasoning.append(event.reasoning)
                    if event.content:
                        content.append(event.content)
                    out = event.content if mode == "stream" else ""
                    if mode == "decide" and event.content:
                        seen = "".join(content)
                        kind = tools.classify(seen)
                        if kind == "text":
                            mode, out = "stream", seen
                        elif kind == "call":
                            mode = "whole"
                    if out or event.reasoning:
                        yield Delta(out, event.reasoning)
                    continue
                assert isinstance(event, Done)
                text = "".join(content)
                this = event.usage or estimate_usage(spec, text, "".join(reasoning))
                usage = _add(usage, this)
                if native:  # the page called functions itself: passed on as they are
                    if mode != "stream" and text:
                        yield Delta(text)
                    yield Calls(native)
                    yield End("tool_calls", usage)
                    return
                if mode == "stream" or event.finish_reason == "cancelled":
                    yield End(event.finish_reason, usage)
                    return
                try:
                    final, calls = self.plan.judge(text)
                except AnswerInvalid as exc:
                    log.info("job %s: the answer broke the requested format (%s)%s",
                             self.job_id, exc, "; asking once more" if attempt == 0 else "")
                    if attempt == 1:
                        raise invalid_answer(str(exc)) from None
                    spec = self.plan.retry_spec(spec, text, str(exc))
                    break
                if calls:
                    yield Calls(calls)
                    yield End("tool_calls", usage)
                else:
                    if final:
                        yield Delta(final)
                    yield End(event.finish_reason, usage)
                return


Render = Callable[[Answering], Awaitable[tuple[web.StreamResponse, str]]]


async def answer(request: web.Request, plan: Plan, model: str, render: Render
                 ) -> web.StreamResponse:
    """Run `render` over one answer; log one line and free the worker whatever happens."""
    request[CHAT_OBS] = obs = request.app[METRICS].chat(model)
    ans = Answering(request, plan, obs)
    outcome = "error"
    t0 = time.monotonic()
    try:
        resp, outcome = await render(ans)
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
        ans.cancel_open()
        rid = request[REQUEST_ID]
        log.info("request %s job %s profile %s: %s in %.2f s", rid, " ".join(ans.jobs),
                 ans.profile, outcome, time.monotonic() - t0,
                 extra={"request_id": rid, "job_id": ans.job_id, "profile": ans.profile})


def stream_headers(request: web.Request, ans: Answering, content_type: str) -> dict[str, str]:
    return {"Content-Type": content_type, "Cache-Control": "no-cache",
            "x-bpool-profile": ans.profile or "", "x-request-id": request[REQUEST_ID]}
