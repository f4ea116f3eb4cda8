"""GenerateContent on the RPC host: checks, errors in the page's style, and the paced stream.

Errors the service reports (quota, permission, an unsupported setting, injected frames) follow
the `errors` knob: "frame" = HTTP 200 whose chunk list holds [null, [code, "message"]]
(docs/aistudio-page.md), "bare" = HTTP 200 whose whole body is that frame, "http" = 429/403/400 with
`[,[code,"message"]]`. A malformed body, a missing session, a bad page token and an unknown
model answer plain HTTP errors whatever the knob.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from bpool.sim import models, request, wire
from bpool.sim.instructed import instructed_answer
from bpool.sim.accounts import Account
from bpool.sim.context import Shared
from bpool.sim.knobs import Knobs
from bpool.sim.state import FailRule, Record, SimState

RPC_HEADERS = {"Content-Type": "application/json+protobuf; charset=UTF-8", "Cache-Control": "no-store"}
HTTP_STATUS = {3: 400, 5: 404, 7: 403, 8: 429, 13: 500, 14: 503, 16: 401}
PERMISSION = (7, "The caller does not have permission")
SAFETY_MARKER = "[[sim:safety]]"
QUOTA_HEAD = ("You exceeded your current quota, please check your plan and billing details. For more "
              "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.")
DEFAULT_MESSAGES = {3: "Request contains an invalid argument.", 7: PERMISSION[1], 8: QUOTA_HEAD,
                    13: "Internal error encountered.", 14: "The service is currently unavailable.",
                    16: "Request had invalid authentication credentials."}


class Refused(Exception):
    """The service refuses the request with a google.rpc code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def quota_message(knobs: Knobs, model: str) -> str:
    """The first sentence is the real text (nexus-studio tests); the details are assumptions."""
    bare = model.removeprefix("models/")
    if knobs.quota_kind == "daily":
        return (f"{QUOTA_HEAD} * Quota exceeded for metric: generate_content_free_tier_requests, "
                f"limit: {knobs.quota}, model: {bare}. You have reached the daily quota; "
                "quota resets at midnight Pacific time.")
    return (f"{QUOTA_HEAD} * Quota exceeded for metric: generate_content_free_tier_requests, "
            f"limit: {knobs.quota} per {knobs.quota_window_s:g} s, model: {bare}. "
            f"Please retry in {knobs.quota_window_s:g}s.")


def error_payload(knobs: Knobs, code: int, message: str) -> tuple[int, bytes]:
    if knobs.errors == "http":
        return HTTP_STATUS.get(code, 500), wire.error_body(code, message)
    frame = wire.error_frame(code, message)
    if knobs.errors == "bare":
        return 200, wire.dumps(frame).encode()
    return 200, wire.body_bytes([frame], knobs.nesting)


def service_error(knobs: Knobs, code: int, message: str) -> web.Response:
    status, body = error_payload(knobs, code, message)
    return web.Response(status=status, body=body, headers=RPC_HEADERS)


def check_settings(req: request.GenerateRequest, model: models.Model) -> None:
    """What the service refuses about a well-formed request (Refused)."""
    if req.max_tokens is not None and not 1 <= req.max_tokens <= model.max_output_tokens:
        raise Refused(3, f"Unable to submit request because it has a maxOutputTokens value of "
                         f"{req.max_tokens} but the supported range is from 1 (inclusive) to "
                         f"{model.max_output_tokens + 1} (exclusive). Update the value and try again.")
    if (req.temperature is not None and not 0 <= req.temperature <= 2) or (
            req.top_p is not None and not 0 <= req.top_p <= 1):
        raise Refused(3, DEFAULT_MESSAGES[3])
    th = req.thinking
    if th is None:
        return
    if th.level is not None:
        if model.thinking != "level":
            raise Refused(3, "Thinking level is not supported for this model.")
        if th.level not in model.levels or th.level in model.refused_levels:
            raise Refused(3, f"Thinking level {th.level.upper()} is not supported for this model.")
    elif model.thinking == "none" and (th.include_thoughts or th.budget):
        raise Refused(3, "Thinking is not supported for this model.")
    if model.thinking_locked and th.budget == 0:
        raise Refused(3, "Budget 0 is invalid. This model only works in thinking mode.")


def _fail_frame(rule: FailRule) -> list:
    return wire.error_frame(rule.code, rule.message or DEFAULT_MESSAGES.get(rule.code, "Error."))


async def handle(req: web.Request, account: Account, sh: Shared, body: object,
                 headers: dict[str, str]) -> web.StreamResponse:
    state = sh.state
    rec = state.begin(account.email, time.time())
    rec.origin = req.headers.get("Origin")
    outcome, status = "error", 500
    try:
        resp, outcome = await _generate(req, account, state, rec, body, headers)
        status = 499 if outcome == "aborted" else resp.status  # 499: client closed the request
        return resp
    except asyncio.CancelledError:  # the client went away and aiohttp cancelled the handler
        outcome, status = ("hang", 504) if rec.outcome == "hang" else ("aborted", 499)
        raise
    finally:
        state.end(rec, status, outcome, time.time())


async def _generate(req: web.Request, account: Account, state: SimState, rec: Record,
                    body: object, headers: dict[str, str]) -> tuple[web.StreamResponse, str]:
    """The response and how it ended. A client that goes away is not an error: the handler returns
    quietly and aiohttp drops the connection."""
    knobs = state.knobs

    def plain(status: int, code: int, message: str) -> tuple[web.Response, str]:
        rec.error_code = code
        return web.Response(status=status, body=wire.error_body(code, message),
                            headers={**RPC_HEADERS, **headers}), "error"

    def refused(code: int, message: str) -> tuple[web.Response, str]:
        rec.error_code = code
        status, payload = error_payload(knobs, code, message)
        return web.Response(status=status, body=payload, headers={**RPC_HEADERS, **headers}), "error"

    try:
        gen = request.parse_generate(body)
    except ValueError:
        return plain(400, 3, DEFAULT_MESSAGES[3])
    rec.model, rec.prompt_chars, rec.turns = gen.model, len(gen.prompt), len(gen.contents)
    rec.params = gen.params()
    if not state.check_request_token(account.email, gen.token):
        return plain(403, *PERMISSION)
    model = models.find_model(gen.model)
    if model is None:
        return plain(404, 5, f"Model {gen.model} is not found.")
    if account.tos:
        return refused(*PERMISSION)
    try:
        check_settings(gen, model)
    except Refused as e:
        return refused(e.code, e.message)
    if not state.take_quota(account.email, gen.model, time.time()):
        return refused(8, quota_message(knobs, gen.model))
    rule = state.take_fail_rule(account.email)
    if rule is not None and rule.mode == "error":
        code = 13 if rule.status >= 500 else 9
        return plain(rule.status, code, DEFAULT_MESSAGES.get(code, "Simulated failure."))
    if rule is not None and rule.mode == "frame" and (rule.after == 0 or knobs.errors != "frame"):
        return refused(rule.code, _fail_frame(rule)[1][1])
    if rule is not None and rule.mode == "hang":
        rec.outcome = "hang"
        while req.transport is not None and not req.transport.is_closing():
            await asyncio.sleep(0.1)
        return web.Response(status=504), "hang"

    safety = (rule is not None and rule.mode == "safety") or SAFETY_MARKER in gen.prompt
    history = "".join(text for _, text in gen.contents) + (gen.system or "")
    answer = wire.build_answer(
        account.email, gen.prompt, thinking=bool(gen.thinking and gen.thinking.include_thoughts),
        max_tokens=gen.max_tokens, stops=gen.stops, prompt_tokens=wire.estimate_tokens(history),
        metadata=knobs.metadata_chunk, safety=safety, text=instructed_answer(gen.prompt))
    chunks = answer.chunks
    rec.response_id = answer.response_id
    outcome = "ok"
    if rule is not None and rule.mode == "frame":  # an error after some of the answer
        chunks = [c for c in chunks if c[0] is not None][:rule.after] + [_fail_frame(rule)]
        rec.error_code, outcome = rule.code, "error"
    else:
        rec.finish = answer.finish
    writes = wire.plan_writes(chunks, knobs.pace, knobs.nesting)
    cut_at = len(writes) // 2 if rule is not None and rule.mode == "cut" else None

    resp = web.StreamResponse(status=200, headers={**RPC_HEADERS, **headers})
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(req)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, (offset, data) in enumerate(writes):
            if i == cut_at and req.transport is not None:
                req.transport.close()  # the data so far, then EOF without the rest
                return resp, "cut"
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(data)
            if rec.first_byte is None:
                rec.first_byte = time.time()
        await resp.write_eof()
    except ConnectionError:
        return resp, "aborted"
    return resp, outcome
