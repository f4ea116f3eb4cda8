"""The page tap in real Chromium against small local pages: a page on one origin calling an RPC
host on another (XHR with CORS, like the live page) and the same calls through fetch.

It must take only the answer (method name matched exactly: not StreamGenerateContentPerUserQuota,
not CountTokens), stream it in pieces, report the model the request body names, say hello from
the page's own world, and reach the binding through the relay when it cannot see it directly.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from bpool.worker import engines
from bpool.studio.driver import DriverSettings, StudioDriver
from bpool.studio.outcomes import StepError
from bpool.studio.stream_parser import StreamParser, TextDelta
from bpool.studio.tap import RELAY_JS, Tap, tap_script

HAVE_CHROMIUM = Path(engines.DEFAULT_CHROMIUM).exists()
RPC = "/$rpc/google.internal.alkali.applications.makersuite.v1.MakerSuiteService/"
# The answer nested as the live page receives it: [[chunk, chunk, ...]].
ANSWER = ('[[[[[[[null,"é€ one"]],"model"]]]],[[[[[[null," two"]],"model"],1]],null,'
          '[5,2,7]],[null,null,null,["resp-1",1,2]]]]')
MODELS = ')]}\'\n[[["models/gemini-2.5-pro",null,null,"Gemini 2.5 Pro","d",null,65536]]]'

PAGE = """<!doctype html><title>tap test</title><body>
<script>
window.viaXhr = (url, body, abortAfterMs) => new Promise((resolve) => {
  const x = new XMLHttpRequest();
  x.open('POST', url);
  x.withCredentials = true;
  x.setRequestHeader('Content-Type', 'application/json+protobuf');
  x.onloadend = () => resolve(x.status);
  x.send(body);
  if (abortAfterMs) setTimeout(() => x.abort(), abortAfterMs);
});
window.viaXhrBytes = (url, body) => new Promise((resolve) => {
  const x = new XMLHttpRequest();
  x.open('POST', url);
  x.onloadend = () => resolve(x.status);
  x.send(new TextEncoder().encode(body));
});
window.viaFetch = async (url, body) =>
  (await (await fetch(url, {method: 'POST', body, credentials: 'include'})).text());
window.viaRequest = async (url, body) =>
  (await (await fetch(new Request(url, {method: 'POST', body}))).text());
</script></body>"""


def body(model: str, prompt: str = "hi") -> str:
    """A GenerateContent request body: positional, `[0]` the model (docs/aistudio-page.md)."""
    return json.dumps([model, [[[[None, prompt]], "user"]], None, [None, None, None, 65536], "tok"])


@pytest.fixture
async def sites(aiohttp_server):
    async def page(request):
        return web.Response(text=PAGE, content_type="text/html")

    page_app = web.Application()
    page_app.router.add_get("/", page)
    page_server = await aiohttp_server(page_app, host="127.0.0.1")
    origin = str(page_server.make_url("/")).rstrip("/")
    seen: list[str] = []

    def cors(resp: web.StreamResponse) -> web.StreamResponse:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        resp.headers["Access-Control-Allow-Headers"] = "content-type"
        return resp

    async def preflight(request):
        return cors(web.Response())

    async def rpc(request):
        method = request.match_info["method"]
        seen.append(method)
        if method == "StreamGenerateContentPerUserQuota":
            return cors(web.Response(status=404, text='[,[5,"Ambiguous request"]]'))
        if method == "CountTokens":
            return cors(web.Response(text="[12]"))
        if method == "ListModels":
            return cors(web.Response(text=MODELS))
        if request.query.get("fail"):
            return cors(web.Response(status=429, text='[,[8,"You exceeded your current quota"]]'))
        resp = cors(web.StreamResponse())
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if request.query.get("hang"):
            await resp.write(b"[")
            await asyncio.sleep(30)
            return resp
        raw = ANSWER.encode()
        for i in range(0, len(raw), 9):  # 9 bytes: cuts through the multi-byte characters
            await resp.write(raw[i:i + 9])
            await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp

    rpc_app = web.Application()
    rpc_app.router.add_route("OPTIONS", RPC + "{method}", preflight)
    rpc_app.router.add_post(RPC + "{method}", rpc)
    rpc_server = await aiohttp_server(rpc_app, host="127.0.0.1")
    return origin, str(rpc_server.make_url(RPC)), seen


@pytest.fixture
async def browser(tmp_path):
    if not HAVE_CHROMIUM:
        pytest.skip("no system Chromium")
    s = engines.EngineSettings()
    b = await engines.launch(engines.EngineChoice("chromium", s.chromium_path, "t"), s,
                             engines.BrowserDirs.for_profile(tmp_path, "tap"))
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def driver(browser, sites, tmp_path):
    origin = sites[0]
    d = StudioDriver(browser.context, DriverSettings(base_url=origin), tmp_path / "snap")
    await d.install()
    await d.page.goto(origin + "/")
    await asyncio.wait_for(d.tap.hello.wait(), 10)
    return d


async def collect(stream, timeout_s: float = 20.0) -> list:
    pieces = []
    while not pieces or pieces[-1].event not in ("end", "error"):
        pieces.append(await stream.next(timeout_s))
    return pieces


def text_of(pieces) -> str:
    parser = StreamParser()
    out = []
    for p in pieces:
        if p.event == "data":
            out += [ev.text for ev in parser.feed(p.data) if isinstance(ev, TextDelta)]
    return "".join(out)


@pytest.mark.parametrize("via", ["viaXhr", "viaXhrBytes", "viaFetch", "viaRequest"])
async def test_only_the_answer_is_tapped_with_its_model(driver, sites, via):
    _, rpc, seen = sites
    d = driver
    assert d.tap.hello_world == "page"
    call = f"([u, b]) => window.{via}(u, b)"
    # The page's side traffic first: a quota pre-check that answers 404, and a token count.
    await d.page.evaluate(call, [rpc + "StreamGenerateContentPerUserQuota", body("models/m")])
    await d.page.evaluate(call, [rpc + "CountTokens", body("models/m")])
    done = asyncio.ensure_future(d.page.evaluate(call, [rpc + "GenerateContent",
                                                        body("models/gemini-2.5-pro")]))
    stream = await d.tap.next_generate(20)
    pieces = await collect(stream)
    await done
    assert seen == ["StreamGenerateContentPerUserQuota", "CountTokens", "GenerateContent"]
    assert stream.url.endswith(RPC + "GenerateContent") and stream.kind == "GenerateContent"
    assert stream.model == "models/gemini-2.5-pro"
    assert pieces[0].event == "start" and pieces[0].status == 200
    assert len([p for p in pieces if p.event == "data"]) >= 3, "the body did not arrive in pieces"
    assert pieces[-1].event == "end"
    assert text_of(pieces) == "é€ one two"
    with pytest.raises(asyncio.TimeoutError):  # nothing else was taken for an answer
        await d.tap.next_generate(0.5)


async def test_object_body_and_model_list(driver, sites):
    _, rpc, _ = sites
    d = driver
    flat = json.dumps({"model": "models/gemini-2.5-flash", "contents": [{"text": "x"}]})
    await d.page.evaluate("([u, b]) => window.viaFetch(u, b)", [rpc + "GenerateContent", flat])
    stream = await d.tap.next_generate(20)
    assert stream.model == "models/gemini-2.5-flash"
    await collect(stream)
    await d.page.evaluate("([u, b]) => window.viaXhr(u, b)", [rpc + "ListModels", "[]"])
    await asyncio.wait_for(d.tap.models_changed.wait(), 10)
    assert d.tap.models_body.startswith(")]}'") and "models/gemini-2.5-pro" in d.tap.models_body


async def test_status_errors_and_aborts_are_reported(driver, sites):
    _, rpc, _ = sites
    d = driver
    await d.page.evaluate("([u, b]) => window.viaXhr(u, b)", [rpc + "GenerateContent?fail=1", "[]"])
    pieces = await collect(await d.tap.next_generate(20))
    assert pieces[0].status == 429 and "exceeded your current quota" in "".join(
        p.data for p in pieces)
    await d.page.evaluate("([u, b]) => window.viaXhr(u, b, 300)", [rpc + "GenerateContent?hang=1", "[]"])
    pieces = await collect(await d.tap.next_generate(20))
    assert pieces[-1].event == "error" and pieces[-1].message == "abort"


async def test_a_request_for_another_model_fails_the_step_naming_both(driver, sites):
    _, rpc, _ = sites
    d = driver
    d.model = "gemini-2.5-flash"
    await d.page.evaluate("([u, b]) => { window.viaXhr(u, b); }",
                          [rpc + "GenerateContent", body("models/gemini-2.5-pro")])
    with pytest.raises(StepError) as ei:
        await d._await_request("gemini-2.5-flash")
    err = ei.value
    assert err.step == "send prompt" and err.kind == "site"
    assert "'gemini-2.5-pro'" in err.message and "'gemini-2.5-flash'" in err.message
    assert d.model == "gemini-2.5-pro"  # what the page is really on: the next job selects again
    await d.page.evaluate("([u, b]) => { window.viaXhr(u, b); }",
                          [rpc + "GenerateContent", body("models/gemini-2.5-flash")])
    assert (await d._await_request("gemini-2.5-flash")).model == "models/gemini-2.5-flash"


async def test_relay_carries_messages_when_the_binding_is_out_of_sight(browser, sites):
    """Camoufox's case, played in one world: the tap cannot see the binding it is told to use,
    so it posts DOM events, and the relay (which can) forwards them."""
    origin, rpc, _ = sites
    tap = Tap("GenerateContent", "ListModels")
    ctx = browser.context
    await ctx.expose_binding("__realTap", tap.on_message)
    await ctx.add_init_script(script=RELAY_JS % json.dumps({"binding": "__realTap", "event": "ev1"}))
    await ctx.add_init_script(script=tap_script("__notVisible", ("GenerateContent", "ListModels"),
                                                relay="ev1"))
    page = await ctx.new_page()
    await page.goto(origin + "/")
    await asyncio.wait_for(tap.hello.wait(), 10)
    await page.evaluate("([u, b]) => window.viaXhr(u, b)",
                        [rpc + "GenerateContent", body("models/gemini-2.5-pro")])
    stream = await tap.next_generate(20)
    pieces = await collect(stream)
    assert stream.model == "models/gemini-2.5-pro" and text_of(pieces) == "é€ one two"


async def test_main_world_prefixed_scripts_are_valid_where_the_prefix_means_nothing(browser, sites):
    """What Camoufox gets ("mw:" + tap.js, after the relay) is valid JavaScript: in Chromium the
    prefix is a label, so the same scripts still tap the page."""
    from bpool.studio.tap import tap_scripts

    origin, rpc, _ = sites
    tap = Tap("GenerateContent", "ListModels")
    ctx = browser.context
    await ctx.expose_binding("__bpoolTap", tap.on_message)
    scripts = tap_scripts("__bpoolTap", ("GenerateContent", "ListModels"), "mw:")
    assert scripts[1].startswith("mw:") and not scripts[0].startswith("mw:")
    for script in scripts:
        await ctx.add_init_script(script=script)
    page = await ctx.new_page()
    await page.goto(origin + "/")
    await asyncio.wait_for(tap.hello.wait(), 10)
    await page.evaluate("([u, b]) => window.viaXhr(u, b)",
                        [rpc + "GenerateContent", body("models/x")])
    assert (await tap.next_generate(20)).model == "models/x"


async def test_a_tap_outside_the_page_world_is_refused(tmp_path):
    """Camoufox before main-world init scripts ran the tap in an isolated world, where wrapping
    XMLHttpRequest does nothing: the hello says so, and the worker stops (exit 78)."""
    from bpool.studio.driver import TAP_STEP

    d = StudioDriver(None, DriverSettings(tap_hello_s=0.2), tmp_path)
    with pytest.raises(StepError) as ei:
        await d._check_tap()  # no hello at all
    assert ei.value.step == TAP_STEP and "did not start" in ei.value.message
    d.tap.on_message(None, {"event": "hello", "world": "isolated"})
    with pytest.raises(StepError) as ei:
        await d._check_tap()
    assert ei.value.step == TAP_STEP and "isolated" in ei.value.message
    d.tap.hello.clear()
    d.tap.on_message(None, {"event": "hello", "world": "page"})
    await d._check_tap()


class _NoCdp:
    """A browser context that refuses CDP sessions (as a non-Chromium engine would)."""

    def __init__(self, context):
        self._context = context

    def __getattr__(self, name):
        return getattr(self._context, name)

    async def new_cdp_session(self, page):
        raise RuntimeError("CDP session: not supported")


async def _answer_through(d: StudioDriver, rpc: str) -> str:
    done = asyncio.ensure_future(d.page.evaluate("([u, b]) => window.viaXhr(u, b)",
                                                 [rpc + "GenerateContent", body("models/m")]))
    pieces = await collect(await d.tap.next_generate(20))
    await done
    return text_of(pieces)


@pytest.mark.parametrize("cdp", [True, False], ids=["raw-cdp-binding", "playwright-binding"])
async def test_chromium_taps_through_a_raw_cdp_binding_or_falls_back(browser, sites, tmp_path,
                                                                       cdp):
    """On Chromium each tap message is one CDP event (no reply evaluated back in the page);
    where no CDP session can be had the tap still works through Playwright's binding."""
    origin, rpc, _ = sites
    context = browser.context if cdp else _NoCdp(browser.context)
    d = StudioDriver(context, DriverSettings(base_url=origin), tmp_path / "snap")
    raw_calls: list[dict] = []
    on_cdp = d.tap.on_cdp_binding
    d.tap.on_cdp_binding = lambda name, params: (raw_calls.append(params), on_cdp(name, params))
    await d.install()
    await d.page.goto(origin + "/")
    await asyncio.wait_for(d.tap.hello.wait(), 10)
    assert await _answer_through(d, rpc) == "é€ one two"
    await d.page.goto(origin + "/")  # the binding outlives a navigation
    assert await _answer_through(d, rpc) == "é€ one two"
    if cdp:
        assert d._cdp_session is not None
        assert sum(json.loads(p["payload"]).get("event") == "data" for p in raw_calls) >= 6
    else:
        assert d._cdp_session is None and raw_calls == []


def test_raw_binding_events_of_other_bindings_and_bad_payloads():
    tap = Tap("GenerateContent", "ListModels")
    tap.on_cdp_binding("__t", {"name": "__other", "payload": "{}"})
    assert tap.bad_messages == 0  # not ours: not even counted
    tap.on_cdp_binding("__t", {"name": "__t", "payload": "{not json"})
    tap.on_cdp_binding("__t", {"name": "__t"})
    assert tap.bad_messages == 2
    tap.on_cdp_binding("__t", {"name": "__t", "payload": json.dumps(
        {"id": "a-1", "seq": 0, "kind": "GenerateContent", "event": "open", "url": "u",
         "model": "models/x"})})
    assert tap._new.get_nowait().model == "models/x"
