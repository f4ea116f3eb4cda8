"""The OpenAI chat-completions wire format: request validation and response bodies.

Pure functions, no I/O. Requests are decoded with msgspec into Structs that ignore unknown
fields on purpose: the official SDK and coding tools send many fields we have no use for
(`n`, `user`, `seed`, `logprobs`, ...), and rejecting them would break those clients. Wrong
types and bad values are rejected with a message naming the field. `tools`, `tool_choice` and
`response_format` become the rules of a Plan (plan.py): instructions in the prompt and a strict
check of the answer (docs/clients.md).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import msgspec

from bpool.front import structured, tools
from bpool.front.errors import ApiError
from bpool.front.structured import JsonRule
from bpool.front.tools import Tool, ToolCall, ToolRule
from bpool.front.attachments import PART_TYPES as ATTACHMENT_PARTS, has_attachments
from bpool.protocol import ChatMessage, JobSpec, Usage


# ---------------------------------------------------------------------------- request


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None
    image_url: Any = None  # image_url and file parts: front/attachments.py checks them
    file: Any = None


class FunctionCallIn(msgspec.Struct):
    name: str
    arguments: str = "{}"


class ToolCallIn(msgspec.Struct):
    id: str
    function: FunctionCallIn
    type: str = "function"


class RequestMessage(msgspec.Struct):
    # "developer" is what newer SDKs send instead of "system" for reasoning models.
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None  # assistant turns that called tools
    tool_call_id: str | None = None  # tool turns: the call they answer
    name: str | None = None


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(msgspec.Struct):
    type: str
    function: FunctionDef


class NamedFunction(msgspec.Struct):
    name: str


class NamedChoice(msgspec.Struct):
    type: str
    function: NamedFunction


class JsonSchemaSpec(msgspec.Struct):
    name: str = "response"
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(msgspec.Struct):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


# Bounds for integers: a number the wire (msgpack, at most 2^64-1) cannot carry must be refused
# here, before a job exists. No model answers with more tokens than this.
MAX_TOKENS = 2**31 - 1
Tokens = Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKENS)]


class ChatRequest(msgspec.Struct):
    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: list[RequestMessage]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_tokens: Tokens | None = None
    max_completion_tokens: Tokens | None = None
    stop: str | list[str] | None = None
    reasoning_effort: str | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: str | NamedChoice | None = None
    response_format: ResponseFormat | None = None
    parallel_tool_calls: bool | None = None


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
MAX_STOP = 4

_decoder = msgspec.json.Decoder(ChatRequest)
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")


def _param_of(msg: str) -> tuple[str, str | None]:
    """Split a msgspec error into (readable message, OpenAI `param` path like messages[0].role)."""
    path = None
    m = _AT.search(msg)
    if m:
        path = m.group("path") or None
        msg = msg[: m.start()]
    missing = _MISSING.search(msg)
    if missing:
        field = missing.group("field")
        path = f"{path}.{field}" if path else field
    return msg, path


def parse_chat_request(body: bytes) -> ChatRequest:
    """Decode and check a request body; raises ApiError(400) naming the offending field."""
    try:
        req = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        msg, param = _param_of(str(exc))
        if param:
            msg = f"Invalid value for '{param}': {msg}"
        raise ApiError(400, msg, param=param, code="invalid_value") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    except UnicodeDecodeError:
        raise ApiError(400, "Request body is not valid UTF-8", code="invalid_json") from None
    except RecursionError:
        # msgspec refuses nesting deeper than the interpreter's recursion limit, even inside a
        # field we ignore: an answer, not a crash.
        raise ApiError(400, "Request body is nested too deeply", code="invalid_json") from None
    if not req.messages:
        raise ApiError(400, "'messages' must contain at least one message", param="messages",
                       code="invalid_value")
    if req.n not in (None, 1):
        raise ApiError(400, "Only n=1 is supported", param="n", code="unsupported_value")
    if req.reasoning_effort is not None and req.reasoning_effort not in REASONING_EFFORTS:
        raise ApiError(400, f"'reasoning_effort' must be one of {', '.join(REASONING_EFFORTS)}",
                       param="reasoning_effort", code="invalid_value")
    if isinstance(req.stop, list) and len(req.stop) > MAX_STOP:
        raise ApiError(400, f"'stop' may hold at most {MAX_STOP} sequences", param="stop",
                       code="invalid_value")
    return req


def _message_text(i: int, msg: RequestMessage) -> str:
    if msg.content is None:
        if msg.role in ("assistant", "tool"):
            return ""  # e.g. an assistant turn that only carried tool calls
        raise ApiError(400, f"A '{msg.role}' message needs 'content'",
                       param=f"messages[{i}].content", code="invalid_value")
    if isinstance(msg.content, str):
        return msg.content
    texts = []
    for j, part in enumerate(msg.content):
        param = f"messages[{i}].content[{j}]"
        if part.type in ATTACHMENT_PARTS:
            continue  # fetched and checked by front/attachments.py
        if part.type != "text":
            raise ApiError(400, f"Content parts of type '{part.type}' are not supported; only "
                           "text, image_url and file are", param=f"{param}.type", code="unsupported_content")
        if part.text is None:
            raise ApiError(400, "A text content part needs 'text'", param=f"{param}.text",
                           code="invalid_value")
        texts.append(part.text)
    return "\n".join(texts)


def _turn(i: int, m: RequestMessage, names: dict[str, str]) -> ChatMessage:
    text = _message_text(i, m)
    if m.role == "assistant" and m.tool_calls:
        calls = [ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls]
        for j, c in enumerate(calls):
            names[c.id] = c.name
            if _json_object(c.arguments) is None:
                raise ApiError(400, "Tool call arguments must be a JSON object",
                               param=f"messages[{i}].tool_calls[{j}].function.arguments",
                               code="invalid_value")
        return ChatMessage("assistant", tools.render_calls(text, calls))
    if m.role == "tool":
        call_id = m.tool_call_id
        return ChatMessage("tool", tools.render_result(call_id, m.name or names.get(call_id or ""),
                                                       text))
    return ChatMessage("system" if m.role == "developer" else m.role, text)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = msgspec.json.decode(text or "{}")
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def to_job_spec(req: ChatRequest) -> JobSpec:
    names: dict[str, str] = {}
    messages = tuple(_turn(i, m, names) for i, m in enumerate(req.messages))
    if not any(m.content.strip() for m in messages if m.role != "assistant") and \
            not has_attachments(req.messages):
        raise ApiError(400, "The messages hold no text to send", param="messages",
                       code="invalid_value")
    stop: tuple[str, ...] = ()
    if isinstance(req.stop, str):
        stop = (req.stop,)
    elif req.stop:
        stop = tuple(req.stop)
    return JobSpec(
        model=req.model,
        messages=messages,
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_completion_tokens or req.max_tokens,
        stop=stop,
        reasoning_effort=req.reasoning_effort,
    )


def tool_rule(req: ChatRequest) -> ToolRule | None:
    """`tools` + `tool_choice` as a rule, refusing what cannot be honoured (400, with param)."""
    choice = req.tool_choice
    if not req.tools:
        if isinstance(choice, NamedChoice) or choice == "required":
            raise ApiError(400, "'tool_choice' needs 'tools'", param="tool_choice",
                           code="invalid_value")
        return None
    declared: list[Tool] = []
    for i, t in enumerate(req.tools):
        if t.type != "function":
            raise ApiError(400, f"Tools of type '{t.type}' are not supported; only 'function'",
                           param=f"tools[{i}].type", code="unsupported_value")
        f = t.function
        if not tools.NAME.match(f.name):
            raise ApiError(400, "A function name must be 1-64 letters, digits, '_', '.' or '-'",
                           param=f"tools[{i}].function.name", code="invalid_value")
        if f.parameters is not None and (problem := structured.schema_problem(f.parameters)):
            raise ApiError(400, f"Invalid function parameters: {problem}",
                           param=f"tools[{i}].function.parameters", code="invalid_value")
        if any(d.name == f.name for d in declared):
            raise ApiError(400, f"The function '{f.name}' is declared twice",
                           param=f"tools[{i}].function.name", code="invalid_value")
        declared.append(Tool(f.name, f.description or "", f.parameters or {}, bool(f.strict)))
    single = req.parallel_tool_calls is False
    if isinstance(choice, NamedChoice):
        if not any(d.name == choice.function.name for d in declared):
            raise ApiError(400, f"'tool_choice' names '{choice.function.name}', which is not in "
                           "'tools'", param="tool_choice.function.name", code="invalid_value")
        return ToolRule(tuple(declared), "required", choice.function.name, single)
    if choice not in (None, "none", "auto", "required"):
        raise ApiError(400, "'tool_choice' must be none, auto, required or a named function",
                       param="tool_choice", code="invalid_value")
    return ToolRule(tuple(declared), choice or "auto", None, single)  # type: ignore[arg-type]


def json_rule(fmt: ResponseFormat | None) -> JsonRule | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JsonRule("json_object")
    spec = fmt.json_schema
    if spec is None or spec.schema is None:
        raise ApiError(400, "A json_schema response format needs 'json_schema.schema'",
                       param="response_format.json_schema", code="invalid_value")
    problem = structured.schema_problem(spec.schema)
    if problem:
        raise ApiError(400, f"Invalid response schema: {problem}",
                       param="response_format.json_schema.schema", code="invalid_value")
    return JsonRule("json_schema", spec.schema, spec.name)


# ---------------------------------------------------------------------------- responses

# Reasons a client library knows; anything else (e.g. "cancelled") reads as a normal stop.
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")


def finish_reason(reason: str) -> str:
    return reason if reason in FINISH_REASONS else "stop"


def estimate_usage(spec: JobSpec, content: str, reasoning: str) -> Usage:
    """A rough count (4 characters a token) for workers that cannot report usage: clients
    that track cost expect the field to be there."""
    prompt = sum(len(m.content) for m in spec.messages) // 4 + 1
    reasoning_tokens = len(reasoning) // 4
    completion = len(content) // 4 + reasoning_tokens
    return Usage(prompt, completion, prompt + completion, reasoning_tokens)


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_json(
    completion_id: str, model: str, content: str, reasoning: str, reason: str, usage: Usage,
    created: int | None = None, calls: list[ToolCall] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [tool_call_json(c) for c in calls]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(reason),
             "logprobs": None}
        ],
        "usage": usage_json(usage),
    }


def tool_call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {} if index is None else {"index": index}
    out.update(id=call.id, type="function",
               function={"name": call.name, "arguments": call.arguments})
    return out


def chunk_json(
    completion_id: str, model: str, created: int, delta: dict[str, Any],
    reason: str | None = None, usage: Usage | None = None, *, no_choices: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [] if no_choices else [
            {"index": 0, "delta": delta,
             "finish_reason": None if reason is None else finish_reason(reason),
             "logprobs": None}
        ],
    }
    if usage is not None:
        out["usage"] = usage_json(usage)
    return out


def models_json(workers: Any) -> dict[str, Any]:
    """The OpenAI model list: the union of models the usable workers announced."""
    counts: dict[str, int] = {}
    for w in workers:
        if w.state in ("logged_out", "needs_consent"):
            continue
        for model in w.models:
            counts[model] = counts.get(model, 0) + 1
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "bpool",
             "bpool_profiles": n}
            for model, n in sorted(counts.items())
        ],
    }
