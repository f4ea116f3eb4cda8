"""Anthropic's Messages API (`POST /v1/messages`) on the same pool: a thin translation to the
internal request (plan.py) and back, JSON or SSE.

`system`, `max_tokens`, `stop_sequences`, `temperature`, `top_p`, `tools` / `tool_choice`,
`tool_use` and `tool_result` blocks, and `thinking` (its budget picks a reasoning effort; the
answer's reasoning comes back as a `thinking` block). Errors use Anthropic's shape
`{"type": "error", "error": {"type", "message"}}` (errors made in errors.py are reshaped by
shapes.py). Images and documents are not taken here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from bpool.front import structured, tools
from bpool.front.answers import (Answering, Calls, Delta, End, answer, read_body, sse,
                                 stream_headers, write)
from bpool.front.appstate import REQUEST_ID, SETTINGS
from bpool.front.errors import ApiError
from bpool.front.plan import check_conversation, make_plan
from bpool.front.schema import MAX_STOP, Tokens, _param_of
from bpool.front.tools import Tool, ToolCall, ToolRule
from bpool.protocol import ChatMessage, JobSpec


class Block(msgspec.Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list["Block"] | None = None
    is_error: bool | None = None
    thinking: str | None = None


class Message(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolIn(msgspec.Struct):
    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None


class ToolChoiceIn(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class MessagesRequest(msgspec.Struct):
    model: Annotated[str, msgspec.Meta(min_length=1)]
    max_tokens: Tokens
    messages: list[Message]
    system: str | list[Block] | None = None
    stream: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    stop_sequences: list[str] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    thinking: Thinking | None = None


_decoder = msgspec.json.Decoder(MessagesRequest)
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def error_json(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def parse(body: bytes) -> MessagesRequest:
    try:
        req = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        msg, param = _param_of(str(exc))
        raise ApiError(400, f"{param}: {msg}" if param else msg, param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "The request body is not valid JSON") from None
    if not req.messages:
        raise ApiError(400, "messages: at least one message is required", param="messages")
    if req.stop_sequences and len(req.stop_sequences) > MAX_STOP:
        raise ApiError(400, f"stop_sequences: at most {MAX_STOP} are supported here")
    return req


def _text(blocks: str | list[Block] | None, where: str) -> str:
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    out = []
    for i, b in enumerate(blocks):
        if b.type == "text":
            out.append(b.text or "")
        elif b.type not in ("thinking", "redacted_thinking"):  # earlier reasoning: not resent
            raise ApiError(400, f"{where}.{i}.type: blocks of type '{b.type}' are not supported "
                           "here")
    return "\n".join(out)


def _turns(req: MessagesRequest) -> list[ChatMessage]:
    turns: list[ChatMessage] = []
    system = _text(req.system, "system")
    if system.strip():
        turns.append(ChatMessage("system", system))
    names: dict[str, str] = {}
    for i, m in enumerate(req.messages):
        blocks = [Block("text", text=m.content)] if isinstance(m.content, str) else m.content
        texts: list[str] = []
        calls: list[ToolCall] = []
        for j, b in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            if b.type == "tool_use" and m.role == "assistant":
                if not b.id or not b.name:
                    raise ApiError(400, f"{where}: a tool_use block needs 'id' and 'name'")
                names[b.id] = b.name
                calls.append(ToolCall(b.id, b.name, msgspec.json.encode(b.input or {}).decode()))
            elif b.type == "tool_result" and m.role == "user":
                result = _text(b.content, f"{where}.content")
                if b.is_error:
                    result = f"(the tool failed) {result}"
                call_id = b.tool_use_id
                turns.append(ChatMessage("tool", tools.render_result(
                    call_id, names.get(call_id or ""), result)))
            else:
                texts.append(_text([b], f"messages.{i}.content"))
        text = "\n".join(t for t in texts if t)
        if calls:
            turns.append(ChatMessage("assistant", tools.render_calls(text, calls)))
        elif text:  # a user turn holding only tool results adds nothing more
            turns.append(ChatMessage(m.role, text))
    return turns


def _tool_rule(req: MessagesRequest) -> ToolRule | None:
    choice = req.tool_choice
    if not req.tools:
        if choice is not None and choice.type in ("any", "tool"):
            raise ApiError(400, "tool_choice: needs 'tools'")
        return None
    declared = []
    for i, t in enumerate(req.tools):
        if t.type not in (None, "custom"):
            raise ApiError(400, f"tools.{i}.type: server tools ('{t.type}') are not supported")
        if not tools.NAME.match(t.name):
            raise ApiError(400, f"tools.{i}.name: must be 1-64 letters, digits, '_', '.' or '-'")
        if t.input_schema is not None and (problem := structured.schema_problem(t.input_schema)):
            raise ApiError(400, f"tools.{i}.input_schema: {problem}")
        declared.append(Tool(t.name, t.description or "", t.input_schema or {}))
    single = bool(choice and choice.disable_parallel_tool_use)
    if choice is None or choice.type == "auto":
        return ToolRule(tuple(declared), "auto", None, single)
    if choice.type == "none":
        return ToolRule(tuple(declared), "none")
    if choice.type == "any":
        return ToolRule(tuple(declared), "required", None, single)
    if not any(d.name == choice.name for d in declared):
        raise ApiError(400, f"tool_choice.name: '{choice.name}' is not one of the tools")
    return ToolRule(tuple(declared), "required", choice.name, single)


def _effort(thinking: Thinking | None) -> str | None:
    """Anthropic's budget as the page's reasoning effort (docs/thinking.md)."""
    if thinking is None or thinking.type == "disabled":
        return None
    budget = thinking.budget_tokens or 0
    if thinking.type == "adaptive" or budget == 0:
        return "medium"
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


async def messages(request: web.Request) -> web.StreamResponse:
    req = parse(await read_body(request, request.app[SETTINGS]))
    turns = _turns(req)
    check_conversation(turns)
    spec = JobSpec(model=req.model, messages=tuple(turns), temperature=req.temperature,
                   top_p=req.top_p, max_tokens=req.max_tokens,
                   stop=tuple(req.stop_sequences or ()), reasoning_effort=_effort(req.thinking))
    plan = make_plan(spec, _tool_rule(req), None)
    render = _stream if req.stream else _collect
    return await answer(request, plan, req.model, lambda ans: render(request, req, ans))


def _shows_thinking(req: MessagesRequest) -> bool:
    """Reasoning goes back as thinking blocks only to a client that asked for thinking."""
    return req.thinking is not None and req.thinking.type != "disabled"


def _usage(u: Any) -> dict[str, int]:
    return {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens}


def _tool_use(c: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": c.id, "name": c.name, "input": c.args}


async def _collect(request: web.Request, req: MessagesRequest, ans: Answering
                   ) -> tuple[web.StreamResponse, str]:
    text: list[str] = []
    thought: list[str] = []
    calls: list[ToolCall] = []
    async for ev in ans.events():
        if isinstance(ev, Delta):
            text.append(ev.content)
            thought.append(ev.reasoning if _shows_thinking(req) else "")
        elif isinstance(ev, Calls):
            calls = ev.calls
        elif isinstance(ev, End):
            content: list[dict[str, Any]] = []
            if "".join(thought):
                content.append({"type": "thinking", "thinking": "".join(thought),
                                "signature": ""})
            if "".join(text) or not calls:
                content.append({"type": "text", "text": "".join(text)})
            content += [_tool_use(c) for c in calls]
            body = {"id": f"msg_{ans.jobs[0]}", "type": "message", "role": "assistant",
                    "model": req.model, "content": content,
                    "stop_reason": STOP_REASONS.get(ev.reason, "end_turn"),
                    "stop_sequence": None, "usage": _usage(ev.usage)}
            payload = msgspec.json.encode(body)
            resp = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "x-bpool-profile": ans.profile or "",
                                               "x-request-id": request[REQUEST_ID]})
            resp.content_length = len(payload)
            await resp.prepare(request)
            await write(resp, payload, request.app[SETTINGS], request, eof=True)
            return resp, ev.reason
    raise ApiError(500, "The answer ended without a finish", code="internal")


async def _stream(request: web.Request, req: MessagesRequest, ans: Answering
                  ) -> tuple[web.StreamResponse, str]:
    settings = request.app[SETTINGS]
    resp: web.StreamResponse | None = None
    index = -1
    open_kind: str | None = None  # the type of the open content block

    async def out(data: bytes, eof: bool = False) -> None:
        assert resp is not None
        await write(resp, data, settings, request, eof=eof)

    def ev(name: str, **data: Any) -> bytes:
        return sse({"type": name, **data}, event=name)

    def switch(kind: str, start: dict[str, Any]) -> bytes:
        nonlocal index, open_kind
        data = b""
        if open_kind is not None:
            data += ev("content_block_stop", index=index)
        index += 1
        open_kind = kind
        return data + ev("content_block_start", index=index, content_block=start)

    try:
        async for event in ans.events():
            data = b""
            if resp is None:
                resp = web.StreamResponse(headers=stream_headers(request, ans,
                                                                 "text/event-stream"))
                await resp.prepare(request)
                data = ev("message_start", message={
                    "id": f"msg_{ans.jobs[0]}", "type": "message", "role": "assistant",
                    "model": req.model, "content": [], "stop_reason": None,
                    "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}})
            if isinstance(event, Delta):
                if event.reasoning and _shows_thinking(req):
                    if open_kind != "thinking":
                        data += switch("thinking", {"type": "thinking", "thinking": "",
                                                    "signature": ""})
                    data += ev("content_block_delta", index=index, delta={
                        "type": "thinking_delta", "thinking": event.reasoning})
                if event.content:
                    if open_kind != "text":
                        data += switch("text", {"type": "text", "text": ""})
                    data += ev("content_block_delta", index=index, delta={
                        "type": "text_delta", "text": event.content})
            elif isinstance(event, Calls):
                for c in event.calls:
                    data += switch("tool_use", {"type": "tool_use", "id": c.id, "name": c.name,
                                                "input": {}})
                    data += ev("content_block_delta", index=index, delta={
                        "type": "input_json_delta", "partial_json": c.arguments})
            elif isinstance(event, End):
                if open_kind is not None:
                    data += ev("content_block_stop", index=index)
                data += ev("message_delta", delta={
                    "stop_reason": STOP_REASONS.get(event.reason, "end_turn"),
                    "stop_sequence": None}, usage=_usage(event.usage))
                await out(data + ev("message_stop"), eof=True)
                return resp, event.reason
            if data:
                await out(data)
        raise ApiError(500, "The answer ended without a finish", code="internal")
    except ApiError as exc:
        if resp is None:
            raise
        await out(sse(error_json(exc.status, exc.message), event="error"), eof=True)
        return resp, exc.code or "error"
