"""POST /v1/chat/completions: OpenAI's chat format over one answer (answers.py), as JSON or SSE.

Tool calls go out in OpenAI's shape: `message.tool_calls` with finish_reason "tool_calls", and in
a stream one delta per call (index, id, type, function.name, function.arguments).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from aiohttp import web

from bpool.front.answers import (Answering, Calls, Delta, End, answer, read_body, sse,
                                 stream_headers, write)
from bpool.front.attachments import attach
from bpool.front.appstate import REQUEST_ID, SETTINGS
from bpool.front.errors import ApiError, error_body
from bpool.front.plan import make_plan
from bpool.front.schema import (ChatRequest, chunk_json, completion_json, json_rule,
                                parse_chat_request, tool_call_json, tool_rule, to_job_spec)

log = logging.getLogger("bpool.front")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, request.app[SETTINGS])
    req = parse_chat_request(body)
    rules = tool_rule(req), json_rule(req.response_format)  # refused before any fetch
    plan = make_plan(await attach(req, to_job_spec(req)), *rules)
    render = _stream if req.stream else _collect
    return await answer(request, plan, req.model, lambda ans: render(request, req, ans))


async def _collect(request: web.Request, req: ChatRequest, ans: Answering
                   ) -> tuple[web.StreamResponse, str]:
    content: list[str] = []
    reasoning: list[str] = []
    calls = []
    async for event in ans.events():
        if isinstance(event, Delta):
            content.append(event.content)
            reasoning.append(event.reasoning)
        elif isinstance(event, Calls):
            calls = event.calls
        elif isinstance(event, End):
            data = completion_json(f"chatcmpl-{ans.job_id}", req.model, "".join(content),
                                   "".join(reasoning), event.reason, event.usage, calls=calls)
            resp = web.StreamResponse(headers={
                "Content-Type": "application/json",
                "x-bpool-profile": ans.profile or "",
                "x-request-id": request[REQUEST_ID],
            })
            payload = msgspec.json.encode(data)
            resp.content_length = len(payload)
            await resp.prepare(request)
            await write(resp, payload, request.app[SETTINGS], request, eof=True)
            return resp, event.reason
    raise ApiError(500, "The answer ended without a finish", code="internal")


async def _stream(request: web.Request, req: ChatRequest, ans: Answering
                  ) -> tuple[web.StreamResponse, str]:
    settings = request.app[SETTINGS]
    completion_id = f"chatcmpl-{ans.jobs[0] if ans.jobs else ''}"
    created = int(time.time())
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    resp: web.StreamResponse | None = None

    async def out(data: bytes, eof: bool = False) -> None:
        assert resp is not None
        await write(resp, data, settings, request, eof=eof)

    def chunk(delta: dict[str, Any], **kw: Any) -> bytes:
        return sse(chunk_json(completion_id, req.model, created, delta, **kw))

    try:
        async for event in ans.events():
            opening = b""
            if resp is None:
                # Headers wait for the first answer event, not just Assigned: a job that fails
                # before any output still gets its real HTTP status, and a job the broker moved
                # to another worker names the profile that actually served it.
                completion_id = f"chatcmpl-{ans.jobs[0]}"
                resp = web.StreamResponse(headers=stream_headers(request, ans,
                                                                 "text/event-stream"))
                await resp.prepare(request)
                # Written with the first delta: one write, one packet, for the first token.
                opening = chunk({"role": "assistant", "content": ""})
            if isinstance(event, Delta):
                delta: dict[str, Any] = {}
                if event.reasoning:
                    delta["reasoning_content"] = event.reasoning
                if event.content:
                    delta["content"] = event.content
                if delta or opening:
                    await out(opening + (chunk(delta) if delta else b""))
            elif isinstance(event, Calls):
                data = b"".join(chunk({"tool_calls": [tool_call_json(c, i)]})
                                for i, c in enumerate(event.calls))
                await out(opening + data)
            elif isinstance(event, End):
                if opening:
                    await out(opening)
                if include_usage:  # OpenAI's shape: usage on an extra chunk with no choices
                    await out(chunk({}, reason=event.reason))
                    await out(chunk({}, usage=event.usage, no_choices=True))
                else:
                    await out(chunk({}, reason=event.reason, usage=event.usage))
                await out(b"data: [DONE]\n\n", eof=True)
                return resp, event.reason
        raise ApiError(500, "The answer ended without a finish", code="internal")
    except ApiError as exc:
        if resp is None:
            raise
        # The status line is gone already: report in-band, the way OpenAI streams do.
        await out(sse(exc.body()), eof=True)
        return resp, exc.code or "error"
    except Exception as exc:
        if resp is None or isinstance(exc, ConnectionResetError):
            raise
        log.exception("stream for job %s broke", ans.job_id)
        await out(sse(error_body("Internal error", "server_error", None, "internal")), eof=True)
        return resp, "internal"
