"""Attach mode: the manifest, and a worker serving through a Chromium started outside bpool."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bpool.config import REPO_ROOT
from bpool.testing.browser_pool import MODEL, answer_for, start_sim
from bpool.testing.pool import Pool
from bpool.worker import engines, procs
from bpool.worker.attach import Endpoint, ManifestError, endpoint_for, load_manifest

CHROMIUM = Path(engines.DEFAULT_CHROMIUM)
WS = "ws://127.0.0.1:9222/devtools/browser/0f0e"


def test_inline_and_file_manifests(tmp_path):
    inline = load_manifest(json.dumps([{"cookie_path": "c/alice.json", "ws": WS}]), tmp_path)
    assert inline == [Endpoint("alice", tmp_path / "c" / "alice.json", WS, "chromium")]
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "browsers.json").write_text(json.dumps([
        {"id": "remote-bob", "cookie_path": "../c/bob.json", "ws": "ws://10.0.0.5:4444/abc"},
        {"cookie_path": "/srv/x.json", "ws": "http://127.0.0.1:9333", "engine": "chromium"}]))
    got = load_manifest("etc/browsers.json", tmp_path)  # relative to the caller's directory
    assert got == [Endpoint("remote-bob", tmp_path / "c" / "bob.json", "ws://10.0.0.5:4444/abc",
                            "camoufox"),
                   Endpoint("x", Path("/srv/x.json"), "http://127.0.0.1:9333", "chromium")]
    assert endpoint_for(tmp_path / "etc" / ".." / "c" / "bob.json", got).id == "remote-bob"
    assert endpoint_for(tmp_path / "c" / "alice.json", got) is None
    assert load_manifest("  ") == []


@pytest.mark.parametrize("value, why", [
    ("[{", "not valid JSON"),
    ('{"cookie_path": "a.json"}', "JSON list"),
    ('[{"ws": "ws://x/devtools/browser/1"}]', "cookie_path is missing"),
    ('[{"cookie_path": "a.json", "ws": "127.0.0.1:9222"}]', "ws must be"),
    ('[{"cookie_path": "a.json", "ws": "ws://x/1", "engine": "firefox"}]', "engine must be"),
    ('[{"cookie_path": "a.json", "ws": "ws://x/1", "port": 1}]', "unknown field"),
    ('[{"cookie_path": "bad name.json", "ws": "ws://x/1"}]', "not a usable profile id"),
    ('[{"cookie_path": "a.json", "ws": "ws://x/1"}, {"cookie_path": "a.json", "ws": "ws://x/2"}]',
     "used twice"),
    ('[{"id": "a", "cookie_path": "a.json", "ws": "ws://x/1"},'
     ' {"id": "a", "cookie_path": "b.json", "ws": "ws://x/2"}]', "id used twice"),
    ("no/such/file.json", "cannot read"),
])
def test_bad_manifests_say_what_is_wrong(tmp_path, value, why):
    with pytest.raises(ManifestError, match=why):
        load_manifest(value, tmp_path)


def test_a_bad_manifest_stops_the_worker_with_exit_78(tmp_path):
    cookie = tmp_path / "alice.json"
    cookie.write_text(json.dumps({"cookies": [{"name": "SID", "value": "v", "domain": "x"}]}))
    cookie.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPOOL_")}
    env.update(BPOOL_RUN_DIR=str(tmp_path / "run"), BPOOL_BROWSER_ENDPOINTS="[{")
    r = subprocess.run([sys.executable, "-m", "bpool.browser_proc", "--profile", str(cookie)],
                       env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 78
    assert "BPOOL_BROWSER_ENDPOINTS: not valid JSON" in r.stderr


# ---------------------------------------------------------------------------- a real browser


def _wait(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class OutsideChromium:
    """A Chromium started the way an operator would, not by bpool."""

    def __init__(self, user_data: Path):
        user_data.mkdir(parents=True)
        argv = [str(CHROMIUM), "--headless", "--remote-debugging-port=0",
                f"--user-data-dir={user_data}", "--no-first-run", "--disable-gpu", "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses its sandbox as root
        self.proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = user_data / "DevToolsActivePort"
        lines = _wait(lambda: port_file.exists() and len(port_file.read_text().split()) >= 2
                      and port_file.read_text().split(), 60, "DevToolsActivePort")
        self.port = int(lines[0])
        self.ws = f"ws://127.0.0.1:{self.port}{lines[1]}"

    def pages(self) -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            return [t["url"] for t in json.loads(r.read()) if t.get("type") == "page"]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture(scope="module")
def attached(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("no system Chromium")
    base = tmp_path_factory.mktemp("attach")
    outside = OutsideChromium(base / "outside-profile")
    pool = Pool(base / "pool", env={"BPOOL_BROWSER": "chromium"})
    try:
        url = start_sim(pool, [("--names", "alice")], "--tokens-per-s", "0",
                        "--first-token-s", "0").url
        cookies = pool.base_dir / "cookies"
        pool.start_broker()
        pool.start_front()
        manifest = [{"id": "remote", "cookie_path": str(cookies / "alice.json"), "ws": outside.ws}]
        pool.start_module("worker-remote", "bpool.browser_proc", "--profile",
                          str(cookies / "alice.json"),
                          env={"BPOOL_STUDIO_URL": url,
                               "BPOOL_BROWSER_ENDPOINTS": json.dumps(manifest)})
        pool.wait_idle(1, timeout_s=120)
        yield pool, outside, url
    finally:
        pool.close()
        outside.close()
        procs.kill_tagged(str(pool.run_dir / "browsers" / "remote"))


def _chat(pool: Pool, prompt: str) -> tuple[str, str]:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}]})
    conn = http.client.HTTPConnection("127.0.0.1", pool.port, timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        assert resp.status == 200, data
        return resp.headers["x-bpool-profile"], data["choices"][0]["message"]["content"]
    finally:
        conn.close()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_worker_serves_through_a_browser_it_did_not_start_and_leaves_it_running(attached):
    pool, outside, url = attached
    _, body = pool.health()
    [w] = body["workers"]
    assert w["profile_id"] == "remote"  # the manifest's id, not the file's stem
    assert _chat(pool, "attached?") == ("remote", answer_for("alice", "attached?"))
    assert any(u.startswith(url) for u in outside.pages())  # the worker's page is in that browser
    # it launched no browser of its own: only its Playwright driver carries its tag
    tagged = procs.find_tagged(str(pool.run_dir / "browsers" / "remote"))
    assert tagged and not [p for p in tagged if "chromium" in _cmdline(p)]
    worker = pool["worker-remote"]
    worker.popen.send_signal(signal.SIGTERM)  # supervisord's stop: the worker alone
    assert worker.popen.wait(60) == 0
    # its context (and page) went away; the browser and its own page did not
    _wait(lambda: not any(u.startswith(url) for u in outside.pages()), 30, "the context to close")
    assert outside.proc.poll() is None
    assert outside.pages() == ["about:blank"]
    _wait(lambda: not [p for p in procs.find_tagged(str(pool.run_dir / "browsers" / "remote"))
                       if procs.alive(p)], 30, "the worker's driver to exit")
