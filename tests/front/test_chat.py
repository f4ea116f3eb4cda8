"""The front against a scripted broker: what it submits, how it answers each broker event, and
that every wait is bounded. The front runs in-process (aiohttp test server over real TCP) and
talks to the scripted broker over a real ipc socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bpool import protocol
from bpool.front.appstate import LINK
from bpool.front.settings import FrontSettings
from bpool.front.app import make_app
from bpool.protocol import (
    Assigned, Cancel, Chunk, Done, Failed, JobsKnown, JobsQuery, PoolStatus, Submit, Usage,
    WorkerStatus,
)
from support import ScriptedBroker, chat_body, read_sse

WAIT_S = 30.0  # generous deadline for anything awaited: a loaded 2-core machine is slow


async def until(check: Any, what: str, timeout_s: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def settings_for(tmp_path: Path, **kw: Any) -> FrontSettings:
    base = dict(broker_endpoint=f"ipc://{tmp_path}/front.sock", heartbeat_interval_s=0.2,
                heartbeat_liveness=3, queue_timeout_s=5.0, status_timeout_s=0.5)
    base.update(kw)
    return FrontSettings(**base)  # type: ignore[arg-type]


async def start_front(aiohttp_client: Any, app: web.Application,
                      broker: ScriptedBroker) -> Any:
    client = await aiohttp_client(app)
    # The front's first Ping shows that its DEALER is connected (and tells the scripted broker
    # who the front is); before that a request would get "no broker connected".
    for _ in range(200):
        if broker.front is not None:
            return client
        await asyncio.sleep(0.02)
    raise AssertionError("the front never connected to the scripted broker")


@pytest.fixture
async def front(aiohttp_client: Any, tmp_path: Path, scripted_broker: ScriptedBroker) -> Any:
    return await start_front(aiohttp_client, make_app(settings_for(tmp_path)), scripted_broker)


def worker(profile: str, state: str, models: tuple[str, ...] = ()) -> WorkerStatus:
    return WorkerStatus(profile, state, 1.0, 0, None, 1, "fake", f"{profile}@x", models)


async def test_non_stream_answer_and_spec(front: Any, scripted_broker: ScriptedBroker) -> None:
    call = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body(
        "hi", temperature=0.5, stop=["x"], max_tokens=9, reasoning_effort="high"),
        headers={"x-request-id": "client-id-1"}))
    sub = await scripted_broker.expect(Submit)
    assert sub.spec.messages == (protocol.ChatMessage("user", "hi"),)
    assert (sub.spec.temperature, sub.spec.stop, sub.spec.max_tokens) == (0.5, ("x",), 9)
    assert sub.spec.reasoning_effort == "high" and sub.queue_timeout_s == 5.0
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Chunk(sub.job_id, 0, reasoning="hmm "))
    scripted_broker.send(Chunk(sub.job_id, 1, content="Hel"))
    scripted_broker.send(Chunk(sub.job_id, 2, content="lo", reasoning="ok"))
    scripted_broker.send(Done(sub.job_id, "length", Usage(3, 4, 7, 1)))
    resp = await call
    assert resp.status == 200
    assert resp.headers["x-bpool-profile"] == "alice"
    assert resp.headers["x-request-id"] == "client-id-1"
    body = await resp.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello",
                                 "reasoning_content": "hmm ok"}
    assert choice["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 7
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1


async def test_stream_events(front: Any, scripted_broker: ScriptedBroker) -> None:
    call = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body(
        stream=True, stream_options={"include_usage": True})))
    sub = await scripted_broker.expect(Submit)
    # Moved before any output: the header must name the worker that actually answers.
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Assigned(sub.job_id, "bob"))
    scripted_broker.send(Chunk(sub.job_id, 0, reasoning="think"))
    scripted_broker.send(Chunk(sub.job_id, 1, content="A"))
    scripted_broker.send(Chunk(sub.job_id, 2, content="B"))
    scripted_broker.send(Done(sub.job_id, "stop", Usage(1, 2, 3)))
    resp = await call
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["x-bpool-profile"] == "bob"
    assert resp.headers["x-request-id"]
    events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "AB"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "think"
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 3


async def test_stream_without_include_usage_puts_usage_on_the_last_chunk(
    front: Any, scripted_broker: ScriptedBroker
) -> None:
    call = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body(stream=True)))
    sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Chunk(sub.job_id, 0, content="A"))
    scripted_broker.send(Done(sub.job_id, "stop", None))  # no usage: the front estimates
    events = await read_sse(await call)
    last = events[-2]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"]["prompt_tokens"] >= 1


@pytest.mark.parametrize("stream", [False, True])
async def test_failure_before_output_is_an_http_error(
    front: Any, scripted_broker: ScriptedBroker, stream: bool
) -> None:
    call = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body(stream=stream)))
    sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Failed(sub.job_id, protocol.error(
        "rate_limited", "quota", retry_after_s=2.2)))
    resp = await call
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3"
    assert resp.headers["x-request-id"]
    err = (await resp.json())["error"]
    assert err["code"] == "rate_limited" and err["message"] == "quota"
    assert set(err) == {"message", "type", "param", "code"}


async def test_failure_mid_stream_is_an_error_event(
    front: Any, scripted_broker: ScriptedBroker
) -> None:
    call = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body(stream=True)))
    sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Chunk(sub.job_id, 0, content="par"))
    scripted_broker.send(Failed(sub.job_id, protocol.error("worker_died", "worker vanished")))
    resp = await call
    assert resp.status == 200
    events = await read_sse(resp)
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "worker_died"


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_cancels_the_job(
    front: Any, scripted_broker: ScriptedBroker, stream: bool
) -> None:
    resp_task = asyncio.create_task(front.post("/v1/chat/completions",
                                               json=chat_body(stream=stream)))
    sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    if stream:
        scripted_broker.send(Chunk(sub.job_id, 0, content="x"))
        resp = await resp_task
        await resp.content.readline()
        resp.close()  # drops the connection mid-stream
    else:
        # The request has taken Assigned and waits for output: now the client goes away.
        queue = front.server.app[LINK].jobs[sub.job_id]
        await until(lambda: queue.empty(), "the front to take Assigned")
        resp_task.cancel()
        await asyncio.gather(resp_task, return_exceptions=True)
    cancel = await scripted_broker.expect(Cancel, timeout_s=WAIT_S)
    assert cancel.job_id == sub.job_id


async def test_queue_wait_is_bounded(
    aiohttp_client: Any, tmp_path: Path, scripted_broker: ScriptedBroker
) -> None:
    # The broker never assigns: the front gives up after queue timeout + margin, and cancels.
    # A broker silence of 2 s (not 0.6): on a starved machine the scripted broker's answers to
    # the front's pings can come late, and "broker lost" would win the race with the queue.
    app = make_app(settings_for(tmp_path, queue_timeout_s=0.2, heartbeat_interval_s=0.4,
                                heartbeat_liveness=5))
    client = await start_front(aiohttp_client, app, scripted_broker)
    # The deadline only tells "bounded" from "waits for ever" (speed is not asserted here).
    resp = await asyncio.wait_for(client.post("/v1/chat/completions", json=chat_body()), WAIT_S)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "queue_timeout"
    assert resp.headers["Retry-After"]
    sub = await scripted_broker.expect(Submit)
    assert (await scripted_broker.expect(Cancel)).job_id == sub.job_id


async def test_broker_restart_fails_only_the_jobs_the_new_broker_does_not_hold(
    front: Any, scripted_broker: ScriptedBroker
) -> None:
    lost = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body()))
    lost_sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(lost_sub.job_id, "alice"))
    kept = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body()))
    kept_sub = await scripted_broker.expect(Submit)
    scripted_broker.broker_id = "broker-2"  # the next Pong comes from "another" broker
    query = await scripted_broker.expect(JobsQuery)
    assert set(query.job_ids) == {lost_sub.job_id, kept_sub.job_id}
    # The new broker holds the second job (its Submit reached it after the restart).
    scripted_broker.send(JobsKnown(query.query_id, (kept_sub.job_id,)))
    resp = await asyncio.wait_for(lost, 3)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "broker_lost"
    assert not kept.done()
    scripted_broker.send(Assigned(kept_sub.job_id, "bob"))
    scripted_broker.send(Done(kept_sub.job_id))
    resp = await asyncio.wait_for(kept, 3)
    assert resp.status == 200 and resp.headers["x-bpool-profile"] == "bob"


async def test_silent_broker_fails_in_flight_jobs_then_new_ones_fast(
    front: Any, scripted_broker: ScriptedBroker
) -> None:
    call = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body()))
    sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.answer_pings = False
    # Lost after 0.2 s x 3 of silence; without the watch the job would wait for ever.
    resp = await asyncio.wait_for(call, WAIT_S)
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "broker_lost"
    # A broker that is only slow still holds the job: the front asks it to free the worker.
    assert (await scripted_broker.expect(Cancel)).job_id == sub.job_id
    resp = await front.post("/v1/chat/completions", json=chat_body())
    assert resp.status == 503 and resp.headers["Retry-After"]
    scripted_broker.answer_pings = True  # back: service resumes once a Pong arrives
    link = front.server.app[LINK]
    await until(lambda: link.broker_ok, "the front to see the broker again")
    call = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body()))
    sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Done(sub.job_id))
    assert (await call).status == 200


async def test_health_and_models(front: Any, scripted_broker: ScriptedBroker) -> None:
    scripted_broker.status = PoolStatus("broker-1", (
        worker("a", "idle", ("m1", "m2")), worker("b", "busy", ("m2",)),
        worker("c", "logged_out", ("m3",))), 2, {"jobs_done": 5})
    resp = await front.get("/health")
    assert resp.status == 200 and resp.headers["x-request-id"]
    body = await resp.json()
    assert body["status"] == "ok" and body["queue_length"] == 2
    assert {w["profile_id"]: w["state"] for w in body["workers"]} == {
        "a": "idle", "b": "busy", "c": "logged_out"}
    assert body["workers"][0]["account"] == "a@x" and body["counters"]["jobs_done"] == 5
    models = await (await front.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [(m["id"], m["bpool_profiles"]) for m in models["data"]] == [("m1", 1), ("m2", 2)]
    assert all(m["object"] == "model" and m["owned_by"] == "bpool" for m in models["data"])

    scripted_broker.status = PoolStatus("broker-1", (worker("a", "cooling"),), 0, {})
    resp = await front.get("/health")
    assert resp.status == 503 and (await resp.json())["workers"][0]["state"] == "cooling"

    scripted_broker.answer_status = False
    # The status query times out (0.5 s) instead of holding /health for ever.
    resp = await asyncio.wait_for(front.get("/health"), WAIT_S)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "broker_lost"
    resp = await front.get("/v1/models")
    assert resp.status == 503 and set((await resp.json())["error"]) >= {"message", "code"}


async def test_unexpected_exception_is_a_500_without_traceback(
    aiohttp_client: Any, tmp_path: Path, scripted_broker: ScriptedBroker
) -> None:
    app = make_app(settings_for(tmp_path))

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/boom", boom)
    client = await start_front(aiohttp_client, app, scripted_broker)
    resp = await client.get("/boom")
    assert resp.status == 500
    text = await resp.text()
    assert "secret" not in text and "Traceback" not in text
    assert json.loads(text)["error"]["type"] == "server_error"
    assert resp.headers["x-request-id"]


@pytest.mark.parametrize("given, kept", [
    ("trace-42.a:b_c", True), ("x" * 128, True),
    ("x" * 129, False), ("has space", False), ("semi;colon", False), ("ünï", False), ("", False),
])
async def test_a_client_request_id_is_echoed_only_when_it_is_safe(
    front: Any, given: str, kept: bool
) -> None:
    """The id goes into every log line: one that could forge a log field or flood a line is
    replaced by the front's own."""
    resp = await front.get("/health", headers={"x-request-id": given} if given else {})
    rid = resp.headers["x-request-id"]
    if kept:
        assert rid == given
    else:
        assert rid != given and rid.startswith("req-") and len(rid) == 36


async def test_a_job_that_outlives_the_job_timeout_is_a_504_and_is_cancelled(
    aiohttp_client: Any, tmp_path: Path, scripted_broker: ScriptedBroker
) -> None:
    # The job timeout (BPOOL_JOB_TIMEOUT_S) counts from Assigned, not from the queue.
    app = make_app(settings_for(tmp_path, job_timeout_s=0.5, queue_timeout_s=30.0))
    client = await start_front(aiohttp_client, app, scripted_broker)
    call = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
    sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Chunk(sub.job_id, 0, content="slow"))  # output is no reprieve
    resp = await asyncio.wait_for(call, WAIT_S)
    assert resp.status == 504
    err = (await resp.json())["error"]
    assert err["code"] == "timeout" and "alice" in err["message"] and "0.5 s" in err["message"]
    assert err["type"] == "server_error" and "Retry-After" not in resp.headers
    assert (await scripted_broker.expect(Cancel, timeout_s=WAIT_S)).job_id == sub.job_id


async def test_a_streamed_job_that_outlives_the_job_timeout_ends_with_an_error_event(
    aiohttp_client: Any, tmp_path: Path, scripted_broker: ScriptedBroker
) -> None:
    app = make_app(settings_for(tmp_path, job_timeout_s=0.5, queue_timeout_s=30.0))
    client = await start_front(aiohttp_client, app, scripted_broker)
    call = asyncio.create_task(client.post("/v1/chat/completions",
                                           json=chat_body(stream=True)))
    sub = await scripted_broker.expect(Submit)
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Chunk(sub.job_id, 0, content="part"))
    resp = await asyncio.wait_for(call, WAIT_S)
    events = await asyncio.wait_for(read_sse(resp), WAIT_S)
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "timeout"
    assert (await scripted_broker.expect(Cancel, timeout_s=WAIT_S)).job_id == sub.job_id


async def test_undecodable_broker_frames_are_counted_and_dropped(
    front: Any, scripted_broker: ScriptedBroker
) -> None:
    link = front.server.app[LINK]
    call = asyncio.create_task(front.post("/v1/chat/completions", json=chat_body()))
    sub = await scripted_broker.expect(Submit)
    assert scripted_broker.front is not None
    for junk in (b"\xff\x00junk", b"", scripted_broker.enc.encode({"not": "a message"})):
        scripted_broker.sock.send_multipart([scripted_broker.front, junk])
    await until(lambda: link.counters["bad_frames"] == 3, "three bad frames counted")
    # The link carries on: the job still completes.
    scripted_broker.send(Assigned(sub.job_id, "alice"))
    scripted_broker.send(Chunk(sub.job_id, 0, content="fine"))
    scripted_broker.send(Done(sub.job_id))
    resp = await asyncio.wait_for(call, WAIT_S)
    assert resp.status == 200
    assert (await resp.json())["choices"][0]["message"]["content"] == "fine"
    assert link.counters["bad_frames"] == 3
