"""Request validation and the mapping to JobSpec (pure, no sockets)."""

from __future__ import annotations

import json

import pytest

from bpool.front.errors import ApiError
from bpool.front.schema import parse_chat_request, to_job_spec
from bpool.protocol import ChatMessage


def parse(body: object) -> object:
    return parse_chat_request(json.dumps(body).encode())


def bad(body: object) -> ApiError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ApiError) as info:
        spec = to_job_spec(parse_chat_request(raw))
        pytest.fail(f"accepted: {spec}")
    assert info.value.status == 400
    return info.value


USER = [{"role": "user", "content": "hi"}]


def test_unknown_fields_that_sdks_send_are_accepted() -> None:
    req = parse({"model": "m", "messages": USER, "n": 1, "user": "u", "seed": 3,
                 "tools": [{"type": "function", "function": {"name": "f"}}],
                 "response_format": {"type": "text"}, "presence_penalty": 0.5,
                 "stream_options": {"include_usage": True, "other": 1}, "metadata": {}})
    assert req.stream_options is not None and req.stream_options.include_usage


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": [{"role": 3, "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"messages": USER}, "model"),
    ({"model": "", "messages": USER}, "model"),
    ({"model": 7, "messages": USER}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": USER, "temperature": 3}, "temperature"),
    ({"model": "m", "messages": USER, "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": USER, "top_p": -0.1}, "top_p"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": USER, "max_completion_tokens": "9"}, "max_completion_tokens"),
    ({"model": "m", "messages": USER, "stop": 5}, "stop"),
    ({"model": "m", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": USER, "reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"model": "m", "messages": USER, "n": 2}, "n"),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]},
     "messages[0].content[0].type"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text"),
])
def test_bad_values_name_the_field(body: object, param: str) -> None:
    err = bad(body)
    assert err.param == param, err.message
    assert err.body()["error"]["param"] == param


@pytest.mark.parametrize("raw", [b"{bad", b"", b"[]", b"null", "{\"model\": \"\u00e9\"".encode()])
def test_malformed_bodies(raw: bytes) -> None:
    err = bad(raw)
    assert err.body()["error"]["type"] == "invalid_request_error"


def test_job_spec_mapping() -> None:
    req = parse({
        "model": "gemini-x", "temperature": 0.3, "top_p": 0.9, "max_tokens": 50,
        "max_completion_tokens": 20, "stop": "END", "reasoning_effort": "low",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one"},
                                         {"type": "text", "text": "two"}]},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "three"},
        ],
    })
    spec = to_job_spec(req)  # type: ignore[arg-type]
    assert spec.model == "gemini-x"
    assert spec.messages == (ChatMessage("system", "be brief"), ChatMessage("user", "one\ntwo"),
                             ChatMessage("assistant", ""), ChatMessage("user", "three"))
    assert (spec.temperature, spec.top_p, spec.reasoning_effort) == (0.3, 0.9, "low")
    assert spec.max_tokens == 20  # the newer field wins
    assert spec.stop == ("END",)
    assert to_job_spec(parse({"model": "m", "messages": USER, "stop": ["a", "b"]})).stop == (
        "a", "b")  # type: ignore[arg-type]


@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "system", "content": ""}, {"role": "user", "content": "  "}], "messages"),
])
def test_messages_without_text_are_refused(messages, param) -> None:
    req = parse_chat_request(json.dumps({"model": "m", "messages": messages}).encode())
    with pytest.raises(ApiError) as info:
        to_job_spec(req)
    assert (info.value.status, info.value.param) == (400, param)


def test_assistant_turn_without_content_is_accepted() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": None},
                                       {"role": "user", "content": "again"}]}
    spec = to_job_spec(parse_chat_request(json.dumps(body).encode()))
    assert [m.content for m in spec.messages] == ["hi", "", "again"]


@pytest.mark.parametrize("reason, shown", [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"),
    ("content_filter", "content_filter"), ("cancelled", "stop"), ("weird", "stop"),
])
def test_finish_reasons_clients_know_pass_and_others_read_as_stop(reason: str, shown: str) -> None:
    from bpool.front.schema import chunk_json, completion_json
    from bpool.protocol import Usage

    done = completion_json("c1", "m", "", "", reason, Usage(1, 1, 2), created=1)
    assert done["choices"][0]["finish_reason"] == shown
    last = chunk_json("c1", "m", 1, {}, reason)
    assert last["choices"][0]["finish_reason"] == shown
    assert chunk_json("c1", "m", 1, {"content": "x"})["choices"][0]["finish_reason"] is None
