"""`bpool doctor`: the table and the capture files on their own, then the whole command run as a
real process (`python -m bpool.ops.cli doctor ...`) with real Chromium against the simulator: a
healthy profile passes every step, and each injected fault fails the step it belongs to."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bpool.config import REPO_ROOT
from bpool.studio.doctor import STEPS
from bpool.studio.doctor_report import (FAIL, OK, SKIPPED, StepResult, exit_code, format_table,
                                        one_line, pick_parameters, redact_across_parts,
                                        save_capture)
from bpool.studio.tap import TapStream
from bpool.worker import engines, procs
from test_browser_worker import sim, sim_server  # noqa: F401  (fixtures)

PY = sys.executable
ROW = re.compile(r"^(?P<step>\S+(?: \S+)?)\s{2,}(?P<result>ok|FAIL|skipped)\s+(?P<ms>\d+|-)"
                 r"(?:\s{2}(?P<detail>.*))?$")
RPC = "/$rpc/google.internal.alkali.applications.makersuite.v1.MakerSuiteService/"


# ---------------------------------------------------------------------------- the table


def test_table_aligns_columns_shows_the_snapshot_and_says_where_it_failed():
    results = [StepResult("launch", OK, 812, "chromium"),
               StepResult("open", FAIL, 1204, "logged_out: not\nlogged in", "/run/snap/x-open"),
               StepResult("popups", SKIPPED)]
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["step", "result", "ms", "detail"]
    assert lines[1].split() == ["launch", "ok", "812", "chromium"]
    assert lines[2].split()[:3] == ["open", "FAIL", "1204"]
    assert lines[2].endswith("logged_out: not logged in")  # one line, whatever the message
    # every detail starts in the same column, the snapshot under it
    col = lines[1].index("chromium")
    assert lines[2].index("logged_out") == col and lines[0].index("detail") == col
    assert lines[3] == " " * col + "snapshot: /run/snap/x-open.png, /run/snap/x-open.html"
    assert lines[4].split() == ["popups", "skipped", "-"]
    assert lines[5] == "bpool doctor: FAILED at step 'open'"
    assert exit_code(results) == 1


def test_all_ok_exits_0_and_anything_else_1():
    ok = [StepResult(s, OK, 1) for s in STEPS]
    assert format_table(ok).splitlines()[-1] == f"bpool doctor: all {len(STEPS)} steps passed"
    assert exit_code(ok) == 0
    assert exit_code([]) == 1
    assert exit_code(ok[:-1] + [StepResult("reset", SKIPPED)]) == 1


def test_long_details_are_cut_to_one_line():
    text = "word " * 100
    out = one_line(text, 40)
    assert len(out) == 40 and out.endswith("...") and "\n" not in out
    assert one_line("a\n\tb") == "a b"


def test_parameters_to_set_differ_from_the_page_and_stay_in_range():
    assert pick_parameters({"temperature": 1, "top_p": 0.95, "max_tokens": 65536}) == \
        {"temperature": 0.5, "top_p": 0.9, "max_tokens": 8192}
    assert pick_parameters({"temperature": 0.5, "top_p": 0.9, "max_tokens": 8192}) == \
        {"temperature": 0.7, "top_p": 0.8, "max_tokens": 8191}
    # a model without sampling controls: only what the page shows
    assert pick_parameters({"temperature": None, "max_tokens": 2048}) == {"max_tokens": 2047}


def test_capture_files_are_private_json_with_the_prefix_set_aside(tmp_path):
    models = TapStream("1", "ListModels", "https://rpc.example" + RPC + "ListModels?key=K",
                       status=200, done=True, request_body="[]",
                       text=[")]}'\n", '[[["models/m1",null,null,"M1","for me@example.com"]]]'])
    cut = TapStream("2", "GenerateContent", "https://rpc.example" + RPC + "GenerateContent",
                    model="models/m1", status=200, done=True,
                    request_body=json.dumps(["models/m1", [], None, None, "!" + "t" * 50]),
                    text=['[[[[[[[null,"hi cookie-secret-value"]],"model"]]]'])
    entries = save_capture(tmp_path / "cap", [("open", models), ("tap", cut)],
                           ["cookie-secret-value"])
    d = tmp_path / "cap"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == [
        "01-ListModels-request.json", "01-ListModels-response.json",
        "02-GenerateContent-request.json", "02-GenerateContent-response.txt", "index.json"]
    for p in d.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert json.loads((d / "index.json").read_text())["captures"] == entries
    assert entries[0]["path"] == RPC + "ListModels"  # no host, no query (an API key)
    assert entries[0]["prefix"] == ")]}'" and entries[0]["step"] == "open"
    listing = json.loads((d / "01-ListModels-response.json").read_text())
    assert listing[0][0][4] == "for <email>"
    assert json.loads((d / "02-GenerateContent-request.json").read_text())[4] == "<token>"
    cut_text = (d / "02-GenerateContent-response.txt").read_text()
    assert "cookie-secret-value" not in cut_text and "<secret>" in cut_text


def chunk(text: str) -> list:
    return [[[[[[None, text]], "model"]]], None, [1, 2, 3]]


def test_an_address_or_secret_split_over_answer_pieces_is_cut_out_of_each():
    pieces = ["Hello from ali", "ce@sim.te", "st. Your cookie is abcd", "efgh, bye"]
    body = json.dumps([[chunk(t) for t in pieces]])
    out = redact_across_parts(body, ["abcdefgh"])
    texts = [c[0][0][0][0][0][1] for c in json.loads(out)[0]]
    assert texts == ["Hello from <email>", "", ". Your cookie is <secret>", ", bye"]
    # the same on a body cut short (not JSON), up to the last complete piece
    cut = body[:body.index("efgh")]
    out = redact_across_parts(cut, ["abcdefgh"])
    assert "<email>" in out and "ali" not in out and "sim.te" not in out
    assert redact_across_parts(json.dumps([[chunk("nothing here")]])) == \
        json.dumps([[chunk("nothing here")]])


# ---------------------------------------------------------------------------- the command


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, run_dir: Path):
        self.rc, self.out, self.err, self.run_dir = proc.returncode, proc.stdout, proc.stderr, run_dir
        self.rows = {}
        self.order = []
        for line in self.out.splitlines():
            m = ROW.match(line)
            if m and m["step"] != "step":
                self.rows[m["step"]] = (m["result"], m["detail"] or "")
                self.order.append(m["step"])

    def failed(self) -> tuple[str, str]:
        """The one failed step and its detail; every step after it skipped."""
        assert self.rc == 1, self.out + self.err
        assert self.order == list(STEPS), self.out
        failed = [s for s in STEPS if self.rows[s][0] == FAIL]
        assert len(failed) == 1, self.out
        i = STEPS.index(failed[0])
        assert all(self.rows[s][0] == OK for s in STEPS[:i]), self.out
        assert all(self.rows[s][0] == SKIPPED for s in STEPS[i + 1:]), self.out
        return failed[0], self.rows[failed[0]][1]

    def snapshot(self) -> Path:
        m = re.search(r"snapshot: (\S+)\.png, (\S+)\.html", self.out)
        assert m, self.out
        stem = Path(m[1])
        assert stem.with_suffix(".png").stat().st_size > 0
        assert "<html" in stem.with_suffix(".html").read_text().lower()
        return stem


def doctor(sim, tmp_path: Path, profile: str, *args: str, timeout_s: float = 20,
           env: dict | None = None) -> Run:
    run_dir = tmp_path / "run"
    cmd = [PY, "-m", "bpool.ops.cli", "doctor", str(sim.cookies / f"{profile}.json"),
           "--studio-url", sim.url, "--browser", "chromium", "--run-dir", str(run_dir),
           "--timeout-s", str(timeout_s), *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    # The doctor's browser went with it.
    assert procs.find_tagged(str(run_dir / "doctor" / "browsers" / profile)) == []
    return Run(proc, run_dir)


def test_a_healthy_profile_passes_every_step_and_the_capture_holds_nothing_private(sim, tmp_path):
    cap = tmp_path / "capture"
    run = doctor(sim, tmp_path, "alice", "--capture", str(cap), "--prompt", "doctor check")
    assert run.rc == 0, run.out + run.err
    assert run.order == list(STEPS)
    assert all(run.rows[s][0] == OK for s in STEPS), run.out
    assert run.out.splitlines()[-2] == f"bpool doctor: all {len(STEPS)} steps passed"
    assert "account alice@sim.test" in run.rows["open"][1]
    assert "doctor check" in run.rows["parse"][1]
    # What the doctor says it set is what the page sent.
    [req] = sim.requests()
    assert req["outcome"] == "ok"
    said = dict(re.findall(r"(temperature|top_p|max_tokens) ([\d.]+)", run.rows["parameters"][1]))
    assert len(said) == 3, run.rows["parameters"]
    p = req["params"]
    assert (p["temperature"], p["topP"], p["maxOutputTokens"]) == \
        (float(said["temperature"]), float(said["top_p"]), int(said["max_tokens"]))
    assert req["model"] in run.rows["tap"][1]

    assert stat.S_IMODE(cap.stat().st_mode) == 0o700
    index = json.loads((cap / "index.json").read_text())["captures"]
    methods = [e["method"] for e in index]
    assert "ListModels" in methods and methods[-1] == "GenerateContent"
    for e in index:
        assert e["status"] == 200 and e["step"] in STEPS and e["path"] == RPC + e["method"]
    cookies = [c["value"] for c in json.loads((sim.cookies / "alice.json").read_text())["cookies"]]
    files = sorted(cap.iterdir())
    assert len(files) == 1 + 2 * len(index)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        text = f.read_text()
        json.loads(text)  # every body was JSON here, and stays JSON
        assert "alice@sim.test" not in text, f
        assert not any(v in text for v in cookies), f
        assert not re.search(r"![A-Za-z0-9_-]{8,}\.\d+", text), f  # the page token "!<t>.<n>"
    gen = index[-1]
    request = json.loads((cap / gen["request"]).read_text())
    assert request[0] == req["model"] and request[4] == "<token>"
    assert request[1][0][0][0][1] == "doctor check"
    answer = (cap / gen["response"]).read_text()
    assert "Hello from <email>. You said: doctor check" in "".join(
        re.findall(r'\[null, "([^"]*)"\]', answer))
    listing = json.loads((cap / index[0]["response"]).read_text())
    assert any(m[0] == "models/gemini-2.5-pro" for m in listing[0])


def test_logged_out_fails_open_with_a_snapshot(sim, tmp_path):
    run = doctor(sim, tmp_path, "ghost")
    step, detail = run.failed()
    assert step == "open" and detail.startswith("logged_out:"), detail
    stem = run.snapshot()
    assert stem.parent == run.run_dir / "doctor" / "snapshots" / "ghost"


def test_terms_not_accepted_fails_open_as_needs_consent(sim, tmp_path):
    step, detail = doctor(sim, tmp_path, "carol").failed()
    assert step == "open" and detail.startswith("needs_consent:") and "carol" in detail


def test_region_blocked_fails_open(sim, tmp_path):
    sim.admin("config", {"region_blocked": True})
    step, detail = doctor(sim, tmp_path, "alice").failed()
    assert step == "open" and "region" in detail


def test_an_rpc_error_fails_the_answer(sim, tmp_path):
    sim.admin("fail", {"mode": "error", "status": 500})
    run = doctor(sim, tmp_path, "alice", "--capture", str(tmp_path / "cap"))
    step, detail = run.failed()
    assert step == "parse" and "HTTP 500" in detail, detail
    run.snapshot()
    # What the page got is kept too: the error body, for the parser's next fixture.
    gen = json.loads((tmp_path / "cap" / "index.json").read_text())["captures"][-1]
    assert gen["method"] == "GenerateContent" and gen["status"] == 500


def test_a_hanging_answer_times_out_in_parse(sim, tmp_path):
    sim.admin("fail", {"mode": "hang"})
    step, detail = doctor(sim, tmp_path, "alice", timeout_s=6).failed()
    assert step == "parse" and detail.startswith("timeout:"), detail


def test_an_unknown_model_fails_the_switch(sim, tmp_path):
    step, detail = doctor(sim, tmp_path, "alice", "--model", "gpt-4o").failed()
    assert step == "model switch" and "gpt-4o" in detail and "bad_request" in detail
    assert sim.requests() == []  # nothing was sent


def test_a_bad_profile_file_or_a_missing_browser_exits_78_without_a_browser(sim, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    cmd = [PY, "-m", "bpool.ops.cli", "doctor", str(bad), "--studio-url", sim.url,
           "--run-dir", str(tmp_path / "run")]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and "broken.json" in r.stderr and "Traceback" not in r.stderr
    assert "step" not in r.stdout  # no table: nothing was tried
    if engines.find_camoufox(engines.camoufox_install_dir()) is not None:
        pytest.skip("Camoufox is installed here: it cannot stand for a missing browser")
    r = subprocess.run(cmd[:4] + [str(sim.cookies / "alice.json")] + cmd[5:] +
                       ["--browser", "camoufox"], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 78 and "Camoufox's browser is not installed" in r.stderr, r.stderr
    assert "step" not in r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "doctor" / "browsers" / "alice").exists()
