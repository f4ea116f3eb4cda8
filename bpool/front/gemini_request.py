"""The Gemini API's request body (`GenerateContentRequest`) as Structs, read in either field
spelling, and its OpenAPI-style schemas as JSON Schema. Used by gemini.py."""

from __future__ import annotations

from typing import Any

import msgspec

from bpool.front.errors import ApiError
from bpool.front.schema import MAX_STOP, MAX_TOKENS, _param_of


class Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool | None = None
    function_call: dict[str, Any] | None = None
    function_response: dict[str, Any] | None = None
    inline_data: Any = None
    file_data: Any = None


class Content(msgspec.Struct):
    parts: list[Part] = []
    role: str | None = None


class Declaration(msgspec.Struct, rename="camel"):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class ToolIn(msgspec.Struct, rename="camel"):
    function_declarations: list[Declaration] | None = None
    # Tools the page runs itself: not driven here, refused rather than ignored.
    google_search: Any = None
    google_search_retrieval: Any = None
    code_execution: Any = None
    url_context: Any = None


class CallingConfig(msgspec.Struct, rename="camel"):
    mode: str | None = None
    allowed_function_names: list[str] | None = None


class ToolConfig(msgspec.Struct, rename="camel"):
    function_calling_config: CallingConfig | None = None


class ThinkingConfig(msgspec.Struct, rename="camel"):
    include_thoughts: bool | None = None
    thinking_budget: int | None = None
    thinking_level: str | None = None


class GenerationConfig(msgspec.Struct, rename="camel"):
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    candidate_count: int | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: dict[str, Any] | None = None
    thinking_config: ThinkingConfig | None = None


class GenerateRequest(msgspec.Struct, rename="camel"):
    contents: list[Content]
    system_instruction: Content | None = None
    tools: list[ToolIn] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None
    cached_content: str | None = None


# The API reads field names in either spelling (protobuf JSON), and google-genai sends nested
# ones in snake_case; values chosen by the client (call args, schemas) keep their own keys.
OPAQUE = frozenset({"args", "response", "parameters", "parametersJsonSchema", "responseSchema",
                    "responseJsonSchema", "inlineData", "fileData"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _normal(value: Any) -> Any:
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, v in value.items():
        name = _camel(key) if isinstance(key, str) else key
        out[name] = v if name in OPAQUE else _normal(v)
    return out


def parse(body: bytes) -> GenerateRequest:
    try:
        raw = msgspec.json.decode(body)
        if not isinstance(raw, dict):
            raise ApiError(400, "Invalid JSON payload received: expected an object.")
        req = msgspec.convert(_normal(raw), GenerateRequest)
    except msgspec.ValidationError as exc:
        msg, param = _param_of(str(exc))
        raise ApiError(400, f"Invalid value at '{param}': {msg}" if param else msg) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "Invalid JSON payload received.") from None
    if not req.contents:
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    if req.cached_content is not None:
        raise ApiError(400, "cachedContent is not supported here")
    for i, t in enumerate(req.tools or []):
        if any(x is not None for x in (t.google_search, t.google_search_retrieval,
                                       t.code_execution, t.url_context)):
            raise ApiError(400, f"tools[{i}]: only functionDeclarations are supported here")
    g = req.generation_config or GenerationConfig()
    if g.candidate_count not in (None, 1):
        raise ApiError(400, "Only candidateCount 1 is supported")
    if g.temperature is not None and not 0 <= g.temperature <= 2:
        raise ApiError(400, "generationConfig.temperature must be between 0 and 2")
    if g.top_p is not None and not 0 <= g.top_p <= 1:
        raise ApiError(400, "generationConfig.topP must be between 0 and 1")
    if g.max_output_tokens is not None and not 1 <= g.max_output_tokens <= MAX_TOKENS:
        raise ApiError(400, "generationConfig.maxOutputTokens is out of range")
    if g.stop_sequences and len(g.stop_sequences) > MAX_STOP:
        raise ApiError(400, f"generationConfig.stopSequences: at most {MAX_STOP} are supported")
    return req


def json_schema_of(schema: Any) -> Any:
    """Gemini's OpenAPI-style `responseSchema` (types in capitals, `nullable`) as JSON Schema."""
    if isinstance(schema, list):
        return [json_schema_of(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("propertyOrdering", "nullable", "example"):
            continue
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: json_schema_of(v) for k, v in value.items()}
        else:
            out[key] = json_schema_of(value)
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out
