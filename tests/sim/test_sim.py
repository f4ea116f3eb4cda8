"""The studio simulator measured against the evidence about the live page (tests/sim/sim_evidence.py):
its answer body against a real captured one, its request reader against a real request, its RPC
host's CORS, errors and side RPCs, quota, failure knobs, accounts and CLI. The page in real
Chromium is tests/sim/test_sim_page.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from bpool.sim import GENERATE_PATH, NEW_CHAT_PATH, RPC_PREFIX, SIGNIN_PATH, cli, models, request, wire
from bpool.sim.knobs import Knobs
from bpool.sim.server import ThreadedSim
from bpool.sim.settings import SimSettings, knobs_from_env
from sim_evidence import (GOOGLE_SEARCH_TOOL, REAL_REQUEST, THINKING_INDEX, chunk_list,
                          error_frames, finish_of, real_answer, read_text, skeleton, usage_rows)

REPO = Path(__file__).resolve().parent.parent.parent
TRICKY = 'héllo 日本語 🙂 **bold** `code` [x]]","model"] {"a": [1, 2]} back\\slash \'q\' "dq"\nline2\t'
FAST = {"tokens_per_s": 0, "first_token_s": 0, "answer_s": 0}
QUOTA_SENTENCE = "You exceeded your current quota, please check your plan and billing details"


def profile_sid(path: Path) -> str:
    return next(c["value"] for c in json.loads(path.read_text())["cookies"] if c["name"] == "SID")


def make_profiles(sim_dir: Path, out: Path, *extra: str) -> None:
    assert cli.main(["make-profiles", "--dir", str(sim_dir), "--out", str(out), *extra]) == 0


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    make_profiles(base / "sim", base / "cookies", "--names", "alice,bob")
    make_profiles(base / "sim", base / "cookies", "--names", "terry", "--needs-tos")
    with ThreadedSim(SimSettings(port=0, dir=base / "sim", knobs=Knobs().updated(FAST))) as s:
        s.cookies = base / "cookies"
        yield s


@pytest.fixture(autouse=True)
def fresh(sim):
    admin(sim, "reset", {})
    admin(sim, "config", {**dataclasses.asdict(Knobs()), **FAST})
    admin(sim, "tos", {"account": "terry", "required": True})


def admin(sim, path: str, body: dict | None = None):
    req = urllib.request.Request(f"{sim.url}/__sim/{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Client:
    """Speaks to both origins as the page does: the page's cookies, its Origin, its token."""

    def __init__(self, sim, http: aiohttp.ClientSession, name: str = "alice") -> None:
        self.sim, self.http, self.n = sim, http, 0
        self.cookie = f"SID={profile_sid(sim.cookies / f'{name}.json')}"
        self.token = ""

    async def open_page(self) -> str:
        async with self.http.get(self.sim.url + NEW_CHAT_PATH, headers={"Cookie": self.cookie},
                                 allow_redirects=False) as resp:
            assert resp.status == 200
            text = await resp.text()
        boot = json.loads(re.search(r'id="sim-boot" type="application/json">(.*?)</script>', text).group(1))
        self.token = boot["pageToken"]
        return text

    async def rpc(self, method: str, body: object, origin: bool = True) -> tuple[int, bytes, dict]:
        headers = {"Cookie": self.cookie, "Content-Type": "application/json+protobuf"}
        if origin:
            headers["Origin"] = self.sim.url
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http.post(self.sim.rpc_url + RPC_PREFIX + method, data=data, headers=headers) as r:
            return r.status, await r.read(), dict(r.headers)

    def body(self, prompt: str, model: str = "gemini-2.5-pro", *, stops=None, max_tokens=None,
             thinking=None, tools=None, token=None) -> list:
        """A request laid out like REAL_REQUEST (positions 0-6 and 10)."""
        self.n += 1
        config = [None, stops, None, max_tokens, 1, 0.95, 64] + [None] * 9 + [thinking, 1]
        return [f"models/{model}", [[[[None, prompt]], "user"]], REAL_REQUEST[2], config,
                token or f"!{self.token}.{self.n}", None, tools, None, None, None, 1]

    async def ask(self, prompt: str, **kw) -> tuple[int, object]:
        status, raw, _ = await self.rpc("GenerateContent", self.body(prompt, **kw))
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw


@pytest.fixture
async def alice(sim):
    async with aiohttp.ClientSession() as http:
        c = Client(sim, http)
        await c.open_page()
        yield c


# ------------------------------------------------------------------------------ the answer body

def test_the_independent_reader_reads_the_real_capture():
    chunks = chunk_list(real_answer())
    assert len(chunks) == 10
    assert read_text(chunks, thought=False) == "你好！有什么我可以帮你的吗？"
    assert read_text(chunks, thought=True).startswith('The user said "你好"')
    assert finish_of(chunks) == wire.STOP


def test_a_sim_chunk_has_the_captured_chunk_shape_position_by_position():
    real = chunk_list(real_answer())
    sim = chunk_list(json.loads(wire.body_bytes(wire.build_answer(
        "a@sim.test", "hi", thinking=True, max_tokens=None, stops=[], metadata=False).chunks)))
    thoughts = [c for c in sim if len(c[0][0][0][0][0]) == 13]
    texts = [c for c in sim if len(c[0][0][0][0][0]) == 2 and len(c[0][0]) == 1]
    assert thoughts and texts
    assert skeleton(thoughts[0]) == skeleton(real[0])  # thought part, 1 at [12], usage at [2]
    assert skeleton(texts[0]) == skeleton(real[7])  # answer text after thoughts
    assert skeleton(sim[-1]) == skeleton(real[9])  # finish at candidate[1], ratings at [4]
    assert sim[-1][0][0][1] == real[9][0][0][1] == wire.STOP
    assert all(c[7] == sim[0][7] and c[7].startswith("v1_") for c in sim)  # one response id


def test_usage_counts_follow_the_captured_rule():
    def check(chunks: list) -> None:
        for prompt, cand, total, _, details, *rest in usage_rows(chunks):
            thoughts = rest[4] if len(rest) > 4 else 0
            assert total == prompt + (cand or 0) + thoughts and details == [[1, prompt]]
    real = chunk_list(real_answer())
    check(real)
    assert [u[1] for u in usage_rows(real)[:7]] == [None] * 7  # no answer tokens while thinking
    sim = chunk_list(json.loads(wire.body_bytes(wire.build_answer(
        "a@sim.test", "hi", thinking=True, max_tokens=None, stops=[]).chunks)))
    check(sim)
    assert usage_rows(sim)[0][1] is None and usage_rows(sim)[-1][1] > 0


def test_metadata_chunk_and_flat_nesting_knobs():
    ans = wire.build_answer("a@sim.test", "hi", thinking=False, max_tokens=None, stops=[])
    rid, n_prompt, n_total = ans.chunks[-1][3]
    assert ans.chunks[-1][:3] == [None, None, None] and rid == ans.chunks[0][7]
    assert isinstance(n_prompt, int) and isinstance(n_total, int)
    bare = wire.build_answer("a@sim.test", "hi", thinking=False, max_tokens=None, stops=[], metadata=False)
    assert bare.chunks[-1][0] is not None
    flat = json.loads(b"".join(w for _, w in wire.plan_writes(ans.chunks, wire.Pace(0, 0), "flat")))
    assert flat == ans.chunks and json.loads(wire.body_bytes(ans.chunks))[0] == ans.chunks


def test_every_split_mode_yields_the_same_body_cut_inside_the_json():
    answer = wire.build_answer("a@sim.test", "日本 \"x\"", thinking=True, max_tokens=None, stops=[])
    whole = None
    for mode in wire.SPLIT_MODES:
        writes = wire.plan_writes(answer.chunks, wire.Pace(tokens_per_s=10, first_token_s=1, split=mode))
        body = b"".join(w for _, w in writes)
        whole = whole or body
        assert body == whole and chunk_list(json.loads(body)) == answer.chunks
        times = [t for t, _ in writes]
        assert times == sorted(times) and times[0] == 1
        if mode == "none":
            assert len(writes) == len(answer.chunks)
            continue
        assert len(writes) == 2 * len(answer.chunks)
        firsts = [w for i, (_, w) in enumerate(writes) if i % 2 == 0]
        assert sum(w.count(b'"') % 2 == 1 for w in firsts) >= len(firsts) // 2  # inside a string
        if mode == "bytes":
            with pytest.raises(UnicodeDecodeError):  # some cut falls inside a UTF-8 character
                for w in firsts:
                    w.decode()


def test_pace_first_token_and_fixed_answer_time():
    assert wire.chunk_times(3, wire.Pace(tokens_per_s=10, first_token_s=0.5)) == [0.5, 0.6, 0.7]
    assert wire.chunk_times(5, wire.Pace(first_token_s=0.2, answer_s=1.0)) == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0])
    assert wire.chunk_times(2, wire.Pace(tokens_per_s=0, first_token_s=0)) == [0, 0]


# ------------------------------------------------------------------------------ the request body

def test_the_real_request_body_is_read_position_by_position():
    req = request.parse_generate(REAL_REQUEST)
    assert req.model == "models/gemma-4-31b-it"
    assert req.contents == [("user", "7777怎么凑成24点，禁止搜索")]
    assert (req.stops, req.max_tokens, req.temperature, req.top_p, req.top_k) == (["6"], 32768, 0.7, 0.95, 64)
    assert req.thinking is not None and req.thinking.include_thoughts and req.thinking.level == "high"
    assert req.search and req.system == "测试prompt" and req.token == REAL_REQUEST[4]
    for bad in ([], REAL_REQUEST[:4], ["gemini", *REAL_REQUEST[1:]],
                [REAL_REQUEST[0], [[[[None, "x"]], "model"]], *REAL_REQUEST[2:]]):
        with pytest.raises(ValueError):
            request.parse_generate(bad)


def test_the_test_client_builds_what_the_real_layout_has(alice):
    body = alice.body("x", thinking=[1, None, None, 3], tools=[GOOGLE_SEARCH_TOOL])
    for i in (0, 1, 2, 4, 10):
        assert skeleton(body[i]) == skeleton(REAL_REQUEST[i]), i
    assert skeleton(body[3][THINKING_INDEX]) == skeleton(REAL_REQUEST[3][THINKING_INDEX])


# ------------------------------------------------------------------------------ the RPC host

async def test_the_rpc_host_is_another_origin_that_allows_only_the_page_with_credentials(sim, alice):
    assert sim.url != sim.rpc_url and sim.url.rsplit(":", 1)[0] == sim.rpc_url.rsplit(":", 1)[0]
    url = sim.rpc_url + GENERATE_PATH
    async with alice.http.options(url, headers={
            "Origin": sim.url, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-goog-api-key,x-aistudio-visit-id"}) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == sim.url
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        allowed = {h.strip() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"content-type", "x-goog-api-key", "x-aistudio-visit-id", "authorization"} <= allowed
    async with alice.http.options(url, headers={"Origin": "http://127.0.0.1:1",
                                                "Access-Control-Request-Method": "POST"}) as r:
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    status, raw, headers = await alice.rpc("GenerateContent", alice.body("hi"))
    assert status == 200 and headers["Access-Control-Allow-Origin"] == sim.url
    assert headers["Access-Control-Allow-Credentials"] == "true"
    rec = admin(sim, "stats")["requests"][-1]
    assert rec["origin"] == sim.url
    assert admin(sim, "stats")["rpcs"]["OPTIONS"] == 2


async def test_the_answer_echoes_the_prompt_exactly_in_a_growing_nested_body(alice):
    status, raw, headers = await alice.rpc("GenerateContent", alice.body(TRICKY))
    assert status == 200 and headers["Transfer-Encoding"] == "chunked"
    assert headers["Content-Type"].startswith("application/json+protobuf")
    chunks = chunk_list(json.loads(raw))
    assert read_text(chunks, thought=False) == f"Hello from alice@sim.test. You said: {TRICKY}"
    assert read_text(chunks, thought=True) == ""  # no thinking config sent
    assert finish_of(chunks) == wire.STOP and chunks[-1][:3] == [None, None, None]


async def test_thinking_configs_of_both_kinds(alice, sim):
    _, body = await alice.ask("why?", thinking=[1, -1])  # 2.5: auto budget
    chunks = chunk_list(body)
    kinds = [len(c[0][0][0][0][0]) == 13 for c in chunks if c[0] is not None and c[0][0][0]]
    first_text = kinds.index(False)
    assert first_text > 0 and not any(kinds[first_text:])
    assert "alice@sim.test" in read_text(chunks, thought=True)
    _, body = await alice.ask("why?", thinking=[0, 0], model="gemini-2.5-flash")
    assert read_text(chunk_list(body), thought=True) == ""
    _, body = await alice.ask("why?", thinking=[1, None, None, 3], model="gemini-3-pro-preview")
    assert read_text(chunk_list(body), thought=True) != ""
    params = [r["params"] for r in admin(sim, "stats")["requests"]]
    assert [(p["thinking"], p["thinkingBudget"], p["thinkingLevel"]) for p in params] == [
        (True, -1, None), (False, 0, None), (True, None, "high")]


@pytest.mark.parametrize("errors, status", [("frame", 200), ("bare", 200), ("http", 400)])
async def test_a_refused_thinking_level_is_an_error_in_the_chosen_style(alice, sim, errors, status):
    admin(sim, "config", {"errors": errors})
    minimal = [1, None, None, 4]
    got, body = await alice.ask("x", thinking=minimal, model="gemini-3.8-flash")
    message = "Thinking level MINIMAL is not supported for this model."
    assert got == status
    if errors == "frame":
        assert error_frames(chunk_list(body)) == [[3, message]]
        assert read_text(chunk_list(body), thought=False) == ""
    elif errors == "bare":
        assert body == [None, [3, message]]
    else:
        assert body == f'[,[3,"{message}"]]'.encode()
    _, ok = await alice.ask("x", thinking=[1, None, None, 1], model="gemini-3.8-flash")  # LOW
    assert read_text(chunk_list(ok), thought=False).endswith("You said: x")
    rec = admin(sim, "stats")["requests"]
    first = rec[0]
    assert (first["error_code"], first["outcome"], first["params"]["thinkingLevel"]) == (3, "error", "minimal")


async def test_max_tokens_stop_sequences_and_the_model_limit(alice):
    _, body = await alice.ask("one two three", max_tokens=3)
    chunks = chunk_list(body)
    assert finish_of(chunks) == wire.MAX_TOKENS and len(read_text(chunks, thought=False)) <= 18
    _, body = await alice.ask("one two three", stops=["two"])
    assert read_text(chunk_list(body), thought=False) == "Hello from alice@sim.test. You said: one "
    _, body = await alice.ask("x", max_tokens=70000)
    (code, message), = error_frames(chunk_list(body))
    assert code == 3 and "65537 (exclusive)" in message


async def test_a_100k_character_prompt_is_echoed_whole(alice):
    prompt = ("Ünïcode [brackets] \"quotes\" " * 4000)[:100_000]
    _, body = await alice.ask(prompt)
    assert read_text(chunk_list(body), thought=False) == f"Hello from alice@sim.test. You said: {prompt}"


async def test_the_side_rpcs_per_user_quota_and_count_tokens(alice, sim):
    status, raw, _ = await alice.rpc("StreamGenerateContentPerUserQuota", alice.body("x"))
    assert status == 404 and b"Ambiguous request" in raw and b"StreamGenerateContentPerUserQuota" in raw
    status, raw, _ = await alice.rpc("CountTokens", ["models/gemini-2.5-pro", [[[[None, "abcdefgh"]], "user"]]])
    n = json.loads(raw)
    assert status == 200 and n[0] == 2 and n[5] == [[1, 2]]
    assert admin(sim, "stats")["requests"] == []  # neither is a GenerateContent


async def test_saving_a_prompt_marks_its_request_as_not_temporary(alice, sim):
    _, body = await alice.ask("save me")
    rid = chunk_list(body)[0][7]
    await alice.ask("temporary")
    status, raw, _ = await alice.rpc("CreatePrompt", [None, [[[[None, "save me"]], "user"]],
                                                      "models/gemini-2.5-pro", rid])
    assert status == 200 and json.loads(raw)[0].startswith("prompts/")
    stats = admin(sim, "stats")
    assert [r["saved"] for r in stats["requests"]] == [True, False]
    assert stats["accounts"]["alice@sim.test"]["saved"] == 1


async def test_requests_need_a_session_a_fresh_page_token_and_valid_input(sim, alice):
    async with aiohttp.ClientSession() as http:
        stranger = Client(sim, http)
        stranger.cookie = "SID=not-a-session"
        for method in ("GenerateContent", "ListModels", "CountTokens"):
            status, raw, _ = await stranger.rpc(method, [])
            assert status == 401 and raw.startswith(b"[,[16,")
    assert (await alice.ask("ok"))[0] == 200
    replay = alice.body("replayed", token=f"!{alice.token}.{alice.n}")
    status, raw, _ = await alice.rpc("GenerateContent", replay)
    assert status == 403 and raw == b'[,[7,"The caller does not have permission"]]'
    async with aiohttp.ClientSession() as http:
        bob = Client(sim, http, "bob")
        await bob.open_page()
        bob.cookie = alice.cookie  # alice presenting bob's page token
        assert (await bob.ask("stolen"))[0] == 403
    assert (await alice.rpc("GenerateContent", b"{not json"))[0] == 400
    assert (await alice.rpc("GenerateContent", {"model": "old JSON shape"}))[0] == 400
    assert (await alice.ask("x", model="nope"))[0] == 404


async def test_list_models_has_the_prefix_and_entry_shape(alice):
    for method in ("GET", "POST"):
        async with alice.http.request(method, alice.sim.rpc_url + RPC_PREFIX + "ListModels",
                                      headers={"Cookie": alice.cookie}) as resp:
            raw = await resp.read()
        assert resp.status == 200 and raw.startswith(b")]}'\n")
        entries = json.loads(raw[5:])[0]
        assert [e[0] for e in entries] == [f"models/{m.id}" for m in models.MODELS]
        for e in entries:
            assert isinstance(e[3], str) and isinstance(e[4], str) and isinstance(e[6], int) and e[6] > 0
    assert "models/gemini-3-pro-preview" in [e[0] for e in entries]


# ------------------------------------------------------------------------------ quota and permission

async def test_quota_is_a_code_8_frame_per_account_and_model(alice, sim):
    admin(sim, "config", {"quota": 2})
    assert [(await alice.ask("hi"))[0] for _ in range(2)] == [200, 200]
    status, body = await alice.ask("hi")
    (code, message), = error_frames(chunk_list(body))
    assert status == 200 and code == 8 and message.startswith(QUOTA_SENTENCE) and "rate-limits" in message
    assert "daily" not in message
    _, other_model = await alice.ask("hi", model="gemini-2.5-flash")  # quotas are per model too
    assert error_frames(chunk_list(other_model)) == []
    async with aiohttp.ClientSession() as http:
        bob = Client(sim, http, "bob")
        await bob.open_page()
        assert error_frames(chunk_list((await bob.ask("hi"))[1])) == []
    admin(sim, "config", {"quota_kind": "daily"})
    (code, message), = error_frames(chunk_list((await alice.ask("hi"))[1]))
    assert code == 8 and "daily" in message
    admin(sim, "config", {"errors": "http"})
    status, body = await alice.ask("hi")
    assert status == 429 and body.startswith(b'[,[8,"' + QUOTA_SENTENCE.encode())
    assert admin(sim, "stats")["accounts"]["alice@sim.test"]["errors"] == 3


def test_quota_window_slides_with_time():
    from bpool.sim.state import SimState
    state = SimState(Knobs(quota=2, quota_window_s=10))
    assert [state.take_quota("a", "m", t) for t in (0, 1, 2, 9.9)] == [True, True, False, False]
    assert state.take_quota("a", "m", 10.5) and not state.take_quota("a", "m", 10.6)
    assert state.take_quota("b", "m", 10.6) and state.take_quota("a", "other", 10.6)


async def test_an_account_without_terms_consent_is_refused_with_code_7(sim):
    async with aiohttp.ClientSession() as http:
        terry = Client(sim, http, "terry")
        page = await terry.open_page()
        assert '"tos": true' in page
        status, body = await terry.ask("hi")
        assert status == 200 and error_frames(chunk_list(body)) == [[7, "The caller does not have permission"]]
        admin(sim, "config", {"errors": "http"})
        status, raw, _ = await terry.rpc("GenerateContent", terry.body("hi"))
        assert status == 403 and raw == b'[,[7,"The caller does not have permission"]]'
        status, _, _ = await terry.rpc("AcceptTermsOfService", [])
        assert status == 200 and admin(sim, "accounts")[-1]["tos"] is False
        assert (await terry.ask("hi"))[0] == 200


# ------------------------------------------------------------------------------ injected failures

async def test_failure_knobs_error_frame_safety_cut_and_hang(alice, sim):
    bad = await alice.http.post(sim.url + "/__sim/fail", json={"mode": "explode"})
    assert bad.status == 400
    admin(sim, "fail", {"mode": "error", "count": 2, "account": "alice"})
    assert [(await alice.ask("x"))[0] for _ in range(3)] == [500, 500, 200]

    admin(sim, "fail", {"mode": "frame", "code": 7, "after": 3})
    status, body = await alice.ask("a prompt long enough to be cut after three chunks")
    chunks = chunk_list(body)
    assert status == 200 and error_frames(chunks) == [[7, "The caller does not have permission"]]
    assert len(chunks) == 4 and read_text(chunks, thought=False) == "Hello from alice@sim.test."[:len(
        read_text(chunks, thought=False))]

    admin(sim, "fail", {"mode": "safety"})
    for prompt in ("anything", "please trip [[sim:safety]] now"):
        _, body = await alice.ask(prompt)
        chunks = chunk_list(body)
        assert finish_of(chunks) == wire.SAFETY and read_text(chunks, thought=False) == ""
        assert chunks[-2][0][0][0] is None  # no content at all

    admin(sim, "config", {"tokens_per_s": 200})
    admin(sim, "fail", {"mode": "cut"})
    with pytest.raises(aiohttp.ClientPayloadError):
        await alice.rpc("GenerateContent", alice.body("a longer prompt so the answer has many chunks"))

    admin(sim, "fail", {"mode": "hang"})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(alice.rpc("GenerateContent", alice.body("hang")), 0.5)
    deadline = time.monotonic() + 10
    while True:  # the handler notices the client gave up and ends the record
        recs = admin(sim, "stats")["requests"]
        if recs[-1]["end"] is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert [r["outcome"] for r in recs] == ["error"] * 2 + ["ok", "error", "ok", "ok", "cut", "hang"]
    assert [r["finish"] for r in recs[4:6]] == [wire.SAFETY] * 2


async def test_paced_stream_is_recorded_with_first_byte_and_end(alice, sim):
    admin(sim, "config", {"first_token_s": 0.3, "answer_s": 0.8})
    t0 = time.time()
    headers = {"Cookie": alice.cookie, "Origin": sim.url}
    async with alice.http.post(sim.rpc_url + GENERATE_PATH, data=json.dumps(alice.body("pace me")),
                               headers=headers) as resp:
        first = await resp.content.readany()
        t_first = time.time()
        rest = await resp.read()
    t_end = time.time()
    chunk_list(json.loads(first + rest))
    assert 0.25 <= t_first - t0 and 0.75 <= t_end - t0
    rec = admin(sim, "stats")["requests"][-1]
    assert rec["outcome"] == "ok" and rec["status"] == 200
    assert rec["start"] + 0.25 <= rec["first_byte"] <= rec["end"] and rec["end"] - rec["start"] >= 0.75


async def test_knobs_are_validated_everywhere(sim, alice):
    resp = await alice.http.post(sim.url + "/__sim/config", json={"nesting": "deep"})
    assert resp.status == 400 and "nesting" in (await resp.json())["error"]
    for bad in ({"split": "weird"}, {"quota": -1}, {"cookie_bar": "maybe"}, {"nope": 1}):
        assert (await alice.http.post(sim.url + "/__sim/config", json=bad)).status == 400
    cfg = admin(sim, "config", {"errors": "bare", "welcome_dialog": False})
    assert cfg["errors"] == "bare" and cfg["welcome_dialog"] is False
    env = knobs_from_env({"BPOOL_SIM_TRANSPORT": "fetch", "BPOOL_SIM_QUOTA": "3",
                          "BPOOL_SIM_COOKIE_BAR": "0", "BPOOL_SIM_HOST": "ignored"})
    assert (env.transport, env.quota, env.cookie_bar) == ("fetch", 3, False)
    with pytest.raises(ValueError):
        knobs_from_env({"BPOOL_SIM_NESTING": "deep"})


# ------------------------------------------------------------------------------ accounts and pages

async def test_unknown_or_expired_session_redirects_to_sign_in(sim, alice):
    http = alice.http
    for cookie in ({}, {"Cookie": "SID=not-a-session"}):
        async with http.get(sim.url + NEW_CHAT_PATH, headers=cookie, allow_redirects=False) as resp:
            assert resp.status == 302 and "accounts.google.com" in resp.headers["Location"]
    async with http.get(sim.url + NEW_CHAT_PATH) as resp:
        assert resp.url.path == SIGNIN_PATH and "<title>Sign in - Google Accounts</title>" in await resp.text()
    assert "alice@sim.test" in await alice.open_page()
    admin(sim, "config", {"region_blocked": True})
    async with http.get(sim.url + NEW_CHAT_PATH, headers={"Cookie": alice.cookie}) as resp:
        assert "<title>Available regions" in await resp.text()
    admin(sim, "config", {"region_blocked": False})
    async with http.get(sim.url + "/prompts/abc123", headers={"Cookie": alice.cookie}) as resp:
        assert resp.status == 200  # a saved chat's URL serves the page too
    assert admin(sim, "expire", {"account": "alice"}) == {"account": "alice", "expired": True}
    try:
        async with http.get(sim.url + NEW_CHAT_PATH, headers={"Cookie": alice.cookie},
                            allow_redirects=False) as resp:
            assert resp.status == 302
        assert (await alice.rpc("ListModels", []))[0] == 401
    finally:
        admin(sim, "expire", {"account": "alice", "expired": False})


async def test_make_profiles_writes_private_storage_states_the_sim_accepts(tmp_path):
    sim_dir, out = tmp_path / "sim", tmp_path / "cookies"
    make_profiles(sim_dir, out, "--count", "2")
    make_profiles(sim_dir, out, "--names", "ghost", "--logged-out")
    make_profiles(sim_dir, out, "--names", "newbie", "--needs-tos")
    assert sorted(p.name for p in out.iterdir()) == ["ghost.json", "newbie.json", "user1.json", "user2.json"]
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        state = json.loads(p.read_text())
        assert state["origins"] == []
        names = {c["name"] for c in state["cookies"]}
        assert {"SID", "HSID", "SSID", "APISID", "SAPISID", "__Secure-1PSID"} <= names
        sid = next(c for c in state["cookies"] if c["name"] == "SID")
        assert (sid["domain"], sid["path"], sid["httpOnly"], sid["secure"], sid["sameSite"]) == \
            ("127.0.0.1", "/", True, False, "Lax")
        assert sid["expires"] > time.time()
    assert stat.S_IMODE((sim_dir / "accounts.json").stat().st_mode) == 0o600
    saved = json.loads((sim_dir / "accounts.json").read_text())["accounts"]
    flags = {a["name"]: a.get("tos", False) for a in saved}
    assert flags == {"user1": False, "user2": False, "newbie": True}

    with ThreadedSim(SimSettings(port=0, dir=sim_dir, knobs=Knobs().updated(FAST))) as sim:
        async with aiohttp.ClientSession() as http:
            for name, expected in (("user1", 200), ("user2", 200), ("ghost", 302)):
                sid = profile_sid(out / f"{name}.json")
                for origin in (sim.url + NEW_CHAT_PATH, sim.rpc_url + RPC_PREFIX + "ListModels"):
                    async with http.get(origin, headers={"Cookie": f"SID={sid}"},
                                        allow_redirects=False) as resp:
                        # one session cookie for both origins: cookies are per host, not per port
                        assert resp.status == (expected if "prompts" in origin else
                                               (200 if expected == 200 else 401)), (name, origin)

    # A live account keeps its session; an expired one gets a fresh login from make-profiles.
    old = profile_sid(out / "user1.json")
    make_profiles(sim_dir, out, "--names", "user1")
    assert profile_sid(out / "user1.json") == old
    assert cli.main(["expire", "--dir", str(sim_dir), "user1@sim.test"]) == 0
    make_profiles(sim_dir, out, "--names", "user1")
    assert profile_sid(out / "user1.json") != old


# ------------------------------------------------------------------------------ the CLI process

def test_serve_writes_both_urls_and_exits_cleanly_on_sigterm(tmp_path):
    sim_dir = tmp_path / "sim"
    env = {**os.environ, "BPOOL_SIM_DIR": str(sim_dir), "BPOOL_RUN_DIR": str(tmp_path / "run"),
           "BPOOL_SIM_ERRORS": "http"}
    proc = subprocess.Popen([sys.executable, "-m", "bpool.sim", "--port", "0", "--nesting", "flat",
                             "--no-require-token"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (sim_dir / "url").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = (sim_dir / "url").read_text().strip()
        rpc_url = (sim_dir / "rpc_url").read_text().strip()
        for u in (url, rpc_url):
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", u)
        assert url != rpc_url
        with urllib.request.urlopen(url + "/__sim/health", timeout=10) as r:
            health = json.load(r)
        assert health["ok"] is True and health["rpc_url"] == rpc_url
        with urllib.request.urlopen(url + "/__sim/config", timeout=10) as r:
            cfg = json.load(r)
        assert (cfg["nesting"], cfg["require_token"], cfg["errors"]) == ("flat", False, "http")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not (sim_dir / "url").exists() and not (sim_dir / "rpc_url").exists()
        assert url.encode() in proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def test_the_browser_tests_base_knobs_are_the_real_page_with_fast_answers():
    from bpool.testing.browser_pool import BASE_KNOBS
    defaults = dataclasses.asdict(Knobs())
    assert set(BASE_KNOBS) == set(defaults)  # every knob named, so none leaks between tests
    assert {k: v for k, v in BASE_KNOBS.items() if defaults[k] != v} == {"tokens_per_s": 0, "first_token_s": 0}
    assert BASE_KNOBS["quota"] == 0 and Knobs().updated(BASE_KNOBS).errors == "frame"
