"""The Gemini API's own format on the same pool: `POST /v1beta/models/{model}:generateContent`,
`:streamGenerateContent` (`?alt=sse`; without it one JSON array at the end) and
`GET /v1beta/models`. A thin translation to the internal request (plan.py) and back.

`contents` (text, `functionCall`, `functionResponse` parts), `systemInstruction`, `tools`
(`functionDeclarations`) with `toolConfig.functionCallingConfig`, `generationConfig`
(temperature, topP, maxOutputTokens, stopSequences, `responseMimeType: application/json` with
`responseSchema` or `responseJsonSchema`, `thinkingConfig`). Thoughts come back as parts with
`thought: true` when `includeThoughts` is set. Errors: `{"error": {"code", "message",
"status"}}` (shapes.py).
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from bpool.front import structured, tools
from bpool.front.answers import Answering, Calls, Delta, End, answer, read_body, write
from bpool.front.appstate import LINK, REQUEST_ID, SETTINGS
from bpool.front.errors import ApiError
from bpool.front.plan import check_conversation, make_plan
from bpool.front.gemini_request import (CallingConfig, GenerateRequest, GenerationConfig, Part,
                                        ThinkingConfig, json_schema_of, parse)
from bpool.front.structured import JsonRule
from bpool.front.tools import Tool, ToolCall, ToolRule, new_call_id
from bpool.protocol import ChatMessage, JobSpec, Usage

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 408: "DEADLINE_EXCEEDED",
          413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
          499: "CANCELLED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY",
          "tool_calls": "STOP", "cancelled": "OTHER"}
LEVELS = ("minimal", "low", "medium", "high")


def error_json(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message,
                      "status": STATUS.get(status, "UNKNOWN")}}


def _text(parts: list[Part]) -> str:
    return "\n".join(p.text for p in parts if p.text is not None and not p.thought)


def _turns(req: GenerateRequest) -> list[ChatMessage]:
    turns: list[ChatMessage] = []
    if req.system_instruction is not None and _text(req.system_instruction.parts).strip():
        turns.append(ChatMessage("system", _text(req.system_instruction.parts)))
    for i, c in enumerate(req.contents):
        role = "assistant" if c.role == "model" else "user"
        calls: list[ToolCall] = []
        for j, p in enumerate(c.parts):
            if p.inline_data is not None or p.file_data is not None:
                raise ApiError(400, f"contents[{i}].parts[{j}]: inline and file data are not "
                               "supported here")
            if p.function_call is not None:
                name, args = p.function_call.get("name"), p.function_call.get("args") or {}
                if not isinstance(name, str) or not isinstance(args, dict):
                    raise ApiError(400, f"contents[{i}].parts[{j}].functionCall needs a name "
                                   "and object args")
                calls.append(ToolCall(p.function_call.get("id") or new_call_id(), name,
                                      msgspec.json.encode(args).decode()))
            if p.function_response is not None:
                fr = p.function_response
                result = msgspec.json.encode(fr.get("response", {})).decode()
                turns.append(ChatMessage("tool", tools.render_result(fr.get("id"),
                                                                     fr.get("name"), result)))
        text = _text(c.parts)
        if calls:
            turns.append(ChatMessage("assistant", tools.render_calls(text, calls)))
        elif text:
            turns.append(ChatMessage(role, text))
    return turns


def _tool_rule(req: GenerateRequest) -> ToolRule | None:
    declared: list[Tool] = []
    for i, t in enumerate(req.tools or []):
        for j, d in enumerate(t.function_declarations or []):
            where = f"tools[{i}].functionDeclarations[{j}]"
            if not tools.NAME.match(d.name):
                raise ApiError(400, f"{where}.name: must be 1-64 letters, digits, '_', '.' "
                               "or '-'")
            params = d.parameters_json_schema or json_schema_of(d.parameters or {})
            if params and (problem := structured.schema_problem(params)):
                raise ApiError(400, f"{where}.parameters: {problem}")
            declared.append(Tool(d.name, d.description or "", params))
    if not declared:
        return None
    cfg = (req.tool_config.function_calling_config if req.tool_config else None) or \
        CallingConfig()
    mode = (cfg.mode or "AUTO").upper()
    allowed = cfg.allowed_function_names or []
    if any(not any(d.name == a for d in declared) for a in allowed):
        raise ApiError(400, "toolConfig.functionCallingConfig.allowedFunctionNames names an "
                       "undeclared function")
    if mode == "NONE":
        return ToolRule(tuple(declared), "none")
    if mode in ("ANY", "VALIDATED"):
        if len(allowed) == 1:
            return ToolRule(tuple(declared), "required", allowed[0])
        if allowed:
            declared = [d for d in declared if d.name in allowed]
        return ToolRule(tuple(declared), "required")
    if mode != "AUTO":
        raise ApiError(400, f"toolConfig.functionCallingConfig.mode: unknown mode '{mode}'")
    return ToolRule(tuple(declared), "auto")


def _json_rule(g: GenerationConfig) -> JsonRule | None:
    schema = g.response_json_schema or (json_schema_of(g.response_schema)
                                        if g.response_schema else None)
    if g.response_mime_type not in (None, "text/plain", "application/json"):
        raise ApiError(400, f"generationConfig.responseMimeType '{g.response_mime_type}' is "
                       "not supported")
    if schema is not None and g.response_mime_type != "application/json":
        raise ApiError(400, "generationConfig.responseSchema needs responseMimeType "
                       "application/json")
    if g.response_mime_type != "application/json":
        return None
    if schema is None:
        return JsonRule("json_object")
    if (problem := structured.schema_problem(schema)):
        raise ApiError(400, f"generationConfig.responseSchema: {problem}")
    # Gemini allows any JSON value; an object schema is by far the common case.
    return JsonRule("json_schema", schema)


def _effort(t: ThinkingConfig | None) -> str | None:
    if t is None:
        return None
    if t.thinking_level is not None:
        level = t.thinking_level.lower()
        if level not in LEVELS:
            raise ApiError(400, f"thinkingConfig.thinkingLevel must be one of {LEVELS}")
        return level
    budget = t.thinking_budget
    if budget is None or budget < 0:
        return None
    return "none" if budget == 0 else "low" if budget <= 2048 else \
        "medium" if budget <= 8192 else "high"


def _usage(u: Usage) -> dict[str, int]:
    return {"promptTokenCount": u.prompt_tokens,
            "candidatesTokenCount": u.completion_tokens - u.reasoning_tokens,
            "totalTokenCount": u.total_tokens or u.prompt_tokens + u.completion_tokens,
            "thoughtsTokenCount": u.reasoning_tokens}


def _response(model: str, ans: Answering, parts: list[dict[str, Any]], end: End | None
              ) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    out: dict[str, Any] = {"candidates": [cand], "modelVersion": model,
                           "responseId": ans.jobs[0] if ans.jobs else ""}
    if end is not None:
        cand["finishReason"] = FINISH.get(end.reason, "STOP")
        out["usageMetadata"] = _usage(end.usage)
    return out


def _parts(ev: Delta | Calls, thoughts: bool) -> list[dict[str, Any]]:
    if isinstance(ev, Calls):
        return [{"functionCall": {"id": c.id, "name": c.name, "args": c.args}}
                for c in ev.calls]
    parts: list[dict[str, Any]] = []
    if ev.reasoning and thoughts:
        parts.append({"text": ev.reasoning, "thought": True})
    if ev.content:
        parts.append({"text": ev.content})
    return parts


async def generate(request: web.Request) -> web.StreamResponse:
    model, _, method = request.match_info["target"].rpartition(":")
    if method not in ("generateContent", "streamGenerateContent") or not model:
        raise ApiError(404, f"Method '{method}' is not supported; use generateContent or "
                       "streamGenerateContent")
    req = parse(await read_body(request, request.app[SETTINGS]))
    g = req.generation_config or GenerationConfig()
    turns = _turns(req)
    check_conversation(turns, "contents")
    spec = JobSpec(model=model.removeprefix("models/"), messages=tuple(turns),
                   temperature=g.temperature, top_p=g.top_p, max_tokens=g.max_output_tokens,
                   stop=tuple(g.stop_sequences or ()),
                   reasoning_effort=_effort(g.thinking_config))
    plan = make_plan(spec, _tool_rule(req), _json_rule(g))
    thoughts = bool(g.thinking_config and g.thinking_config.include_thoughts)
    sse_out = method == "streamGenerateContent" and request.query.get("alt") == "sse"

    async def render(ans: Answering) -> tuple[web.StreamResponse, str]:
        if sse_out:
            return await _stream(request, spec.model, ans, thoughts)
        return await _collect(request, spec.model, ans, thoughts,
                              as_list=method == "streamGenerateContent")

    return await answer(request, plan, spec.model, render)


def _headers(request: web.Request, ans: Answering, ctype: str) -> dict[str, str]:
    return {"Content-Type": ctype, "x-bpool-profile": ans.profile or "",
            "x-request-id": request[REQUEST_ID]}


async def _collect(request: web.Request, model: str, ans: Answering, thoughts: bool,
                   as_list: bool) -> tuple[web.StreamResponse, str]:
    parts: list[dict[str, Any]] = []
    thought, text = [], []
    async for ev in ans.events():
        if isinstance(ev, Delta):
            thought.append(ev.reasoning)
            text.append(ev.content)
        elif isinstance(ev, Calls):
            parts += _parts(ev, thoughts)
        elif isinstance(ev, End):
            whole = _parts(Delta("".join(text), "".join(thought)), thoughts)
            body: Any = _response(model, ans, whole + parts, ev)
            payload = msgspec.json.encode([body] if as_list else body)
            resp = web.StreamResponse(headers=_headers(request, ans, "application/json"))
            resp.content_length = len(payload)
            await resp.prepare(request)
            await write(resp, payload, request.app[SETTINGS], request, eof=True)
            return resp, ev.reason
    raise ApiError(500, "The answer ended without a finish", code="internal")


async def _stream(request: web.Request, model: str, ans: Answering, thoughts: bool
                  ) -> tuple[web.StreamResponse, str]:
    settings = request.app[SETTINGS]
    resp: web.StreamResponse | None = None

    async def out(body: dict[str, Any], eof: bool = False) -> None:
        assert resp is not None
        await write(resp, b"data: " + msgspec.json.encode(body) + b"\r\n\r\n", settings,
                    request, eof=eof)

    try:
        async for ev in ans.events():
            if resp is None:
                resp = web.StreamResponse(headers={
                    **_headers(request, ans, "text/event-stream"), "Cache-Control": "no-cache"})
                await resp.prepare(request)
            if isinstance(ev, End):
                await out(_response(model, ans, [], ev), eof=True)
                return resp, ev.reason
            parts = _parts(ev, thoughts)
            if parts:
                await out(_response(model, ans, parts, None))
        raise ApiError(500, "The answer ended without a finish", code="internal")
    except ApiError as exc:
        if resp is None:
            raise
        await out(error_json(exc.status, exc.message), eof=True)
        return resp, exc.code or "error"


async def list_models(request: web.Request) -> web.Response:
    settings, link = request.app[SETTINGS], request.app[LINK]
    status = await link.status(settings.status_timeout_s)
    names = sorted({m for w in status.workers if w.state not in ("logged_out", "needs_consent")
                    for m in w.models})
    body = {"models": [{"name": f"models/{m}", "baseModelId": m, "version": "bpool",
                        "displayName": m, "description": "served by a bpool account pool",
                        "supportedGenerationMethods": ["generateContent",
                                                       "streamGenerateContent"]}
                       for m in names]}
    return web.json_response(body, headers={"x-request-id": request[REQUEST_ID]})
