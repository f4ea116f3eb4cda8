"""Profile sync without a running supervisord: discovery, rendering, planning, and the real
supervisord.conf as supervisord's own parser reads it (from two different checkout locations)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from bpool import config

from bpool.ops import cli


from bpool.config import REPO_ROOT
from bpool.ops.render import Discovery, Profile, Refused, SyncSettings
from bpool.ops import apply, render

STATE = {"cookies": [{"name": "SID", "value": "secret-value", "domain": "127.0.0.1"}],
         "origins": []}


def write(path: Path, body: object = STATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    path.chmod(0o600)
    return path


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A scratch checkout: the real supervisord.conf and an empty cookies/."""
    here = tmp_path / "check out"  # a space: paths must be quoted where they are split
    here.mkdir()
    shutil.copy(REPO_ROOT / "supervisord.conf", here / "supervisord.conf")
    (here / "cookies").mkdir()
    return here


def settings(here: Path, **kw: object) -> SyncSettings:
    return SyncSettings(conf=here / "supervisord.conf", **kw)  # type: ignore[arg-type]


def check(path: Path) -> None:
    apply.check_profile(path)


# ---------------------------------------------------------------------------- discovery


def test_one_profile_per_cookie_file_ignoring_backups_and_temporaries(checkout: Path) -> None:
    c = checkout / "cookies"
    write(c / "bob.json")
    write(c / "alice.json")
    write(c / "alice.json.bak-20250101T000000Z")
    write(c / ".alice.json.swap.123")
    (c / "README.md").write_text("not a profile")
    found = render.discover(settings(checkout), check)
    assert [p.id for p in found.profiles] == ["alice", "bob"]
    assert found.refused == [] and not found.demo and not found.simulator


def test_corrupt_and_badly_named_files_are_refused_with_name_and_reason(checkout: Path) -> None:
    c = checkout / "cookies"
    write(c / "alice.json")
    write(c / "broken.json", '{"cookies": [')
    write(c / "empty.json", {"cookies": []})
    write(c / "bad name.json")
    found = render.discover(settings(checkout), check)
    assert [p.id for p in found.profiles] == ["alice"]
    reasons = {r.path.name: r.reason for r in found.refused}
    assert set(reasons) == {"broken.json", "empty.json", "bad name.json"}
    assert "JSON" in reasons["broken.json"]
    assert "no cookies" in reasons["empty.json"]
    assert "letters, digits" in reasons["bad name.json"]
    assert all("secret-value" not in str(r) for r in found.refused)


def test_browser_profile_dir_and_auth_directory_point_elsewhere(
        checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere"
    write(other / "carol.json")
    write(checkout / "cookies" / "alice.json")
    monkeypatch.setenv("BROWSER_PROFILE_DIR", str(other))
    s = SyncSettings.from_env(checkout / "supervisord.conf")
    assert [p.id for p in render.discover(s, check).profiles] == ["carol"]
    monkeypatch.delenv("BROWSER_PROFILE_DIR")
    args = cli.build_parser().parse_args(
        ["--conf", str(checkout / "supervisord.conf"), "profiles", "sync",
         "--auth-directory", str(other)])
    assert cli._settings(args).cookie_dir == other.resolve()


def test_a_missing_explicit_directory_is_an_error(checkout: Path, tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="BROWSER_PROFILE_DIR: the cookie directory .* does not exist"):
        render.discover(settings(checkout, auth_dir=tmp_path / "nope"), check)


def test_legacy_single_file_is_a_one_profile_pool_with_a_warning(
        checkout: Path, tmp_path: Path) -> None:
    legacy = write(tmp_path / "auth" / "main.json")
    found = render.discover(settings(checkout, legacy_file=legacy), check)
    assert found.profiles == [Profile("main", legacy)]
    assert any("deprecated" in w for w in found.warnings)
    assert not found.demo


def test_legacy_file_loses_to_the_directory(checkout: Path, tmp_path: Path) -> None:
    legacy = write(tmp_path / "auth" / "main.json")
    write(checkout / "cookies" / "alice.json")
    found = render.discover(settings(checkout, legacy_file=legacy), check)
    assert [p.id for p in found.profiles] == ["alice"]
    assert any("ignored" in w for w in found.warnings)
    # An explicit directory wins even while it is empty.
    empty = tmp_path / "empty"
    empty.mkdir()
    found = render.discover(settings(checkout, legacy_file=legacy, auth_dir=empty), check)
    assert found.profiles == [] and any("ignored" in w for w in found.warnings)


def test_missing_legacy_file_is_refused(checkout: Path, tmp_path: Path) -> None:
    found = render.discover(settings(checkout, legacy_file=tmp_path / "gone.json"), check)
    assert found.profiles == [] and found.refused[0].reason == "no such file"


def test_no_cookie_file_means_demo_profiles_on_the_simulator(checkout: Path) -> None:
    s = settings(checkout, sim_port=9555)
    apply.prepare_dirs(s)
    apply.make_demo_profiles(s)
    found = render.discover(s, check)
    assert found.demo and found.simulator
    assert [p.id for p in found.profiles] == list(render.DEMO_NAMES)
    assert all(p.path.parent == s.demo_dir for p in found.profiles)
    assert not any((checkout / "cookies").iterdir())  # demo profiles never go into cookies/
    want = render.desired(s, found)
    assert set(want) == {"browser-alice.conf", "browser-bob.conf", "sim.conf"}
    assert 'BPOOL_STUDIO_URL="http://127.0.0.1:9555"' in want["browser-alice.conf"]
    assert "--port 9555" in want["sim.conf"]
    # The accounts were registered where the sim program will look for them.
    accounts = json.loads((s.run_dir / "sim" / "accounts.json").read_text())["accounts"]
    assert {a["name"] for a in accounts} == set(render.DEMO_NAMES)
    # A real cookie file wins: no simulator, no demo profiles, the default studio.
    write(checkout / "cookies" / "real.json")
    found = render.discover(s, check)
    assert [p.id for p in found.profiles] == ["real"] and not found.simulator
    assert "BPOOL_STUDIO_URL" not in render.desired(s, found)["browser-real.conf"]


def test_simulator_modes(checkout: Path) -> None:
    assert render.discover(settings(checkout, simulator="off"), check).profiles == []
    assert not render.discover(settings(checkout, simulator="off"), check).simulator
    write(checkout / "cookies" / "alice.json")
    found = render.discover(settings(checkout, simulator="on"), check)
    assert found.simulator and not found.demo and [p.id for p in found.profiles] == ["alice"]


# ---------------------------------------------------------------------------- rendering


def test_render_is_deterministic_and_independent_of_other_profiles(checkout: Path) -> None:
    s = settings(checkout)
    a, b = Profile("alice", checkout / "cookies/alice.json"), Profile("bob", checkout / "b.json")
    one = render.desired(s, Discovery("x", profiles=[a]))
    two = render.desired(s, Discovery("x", profiles=[b, a]))
    assert one["browser-alice.conf"] == two["browser-alice.conf"]


def test_stop_timeout_outlasts_the_drain(checkout: Path) -> None:
    s = settings(checkout, drain_timeout_s=12.5)
    text = render.render_browser(s, Profile("alice", Path("/x/alice.json")), False)
    assert "stopwaitsecs=28\n" in text and 'BPOOL_DRAIN_TIMEOUT_S="12.5"' in text
    assert render.stop_wait_s(settings(checkout)) > 30


def test_odd_cookie_paths_survive_supervisord(checkout: Path, tmp_path: Path) -> None:
    """supervisord expands %(...)s and splits commands like a shell: a cookie directory named
    with '%' and spaces must still reach the worker unchanged. (The checkout itself cannot
    contain '%': supervisord's own %(here)s expansion would choke on it.)"""
    odd = tmp_path / "100% cookies"
    p = write(odd / "alice.json")
    s = settings(checkout, auth_dir=odd)
    assert apply.sync(s, render_only=True, say=lambda _: None) == 0
    cmd = parsed(checkout / "supervisord.conf")["browser-alice"].command
    assert shlex.split(cmd)[-2:] == ["--profile", str(p)]


def test_worker_command_test_hook(checkout: Path) -> None:
    s = settings(checkout, worker_cmd="{python} -m bpool.testing.fake_worker --profile-id "
                                      "{profile_id}")
    argv = render.worker_argv(s, Profile("alice", Path("/c/alice.json")))
    assert argv == [str(checkout / ".venv/bin/python"), "-m", "bpool.testing.fake_worker",
                    "--profile-id", "alice"]


def parsed(conf: Path) -> dict:
    opts = ServerOptions()
    opts.realize(args=["-c", str(conf)])
    return {p.name: p for g in opts.process_group_configs for p in g.process_configs}


@pytest.mark.parametrize("where", ["one", "two/deeper"])
def test_the_real_conf_works_wherever_the_checkout_is(tmp_path: Path, where: str) -> None:
    here = tmp_path / where
    here.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "supervisord.conf", here / "supervisord.conf")
    s = settings(here, drain_timeout_s=30)
    write(here / "cookies" / "alice.json")
    assert apply.sync(s, render_only=True, say=lambda _: None) == 0
    assert oct(s.run_dir.stat().st_mode & 0o777) == "0o700"
    programs = parsed(here / "supervisord.conf")
    assert set(programs) == {"broker", "front", "browser-alice"}
    for p in programs.values():
        assert p.environment["BPOOL_RUN_DIR"] == str(here / "run")
        assert p.directory == str(here)
        assert p.command.startswith(str(here / ".venv/bin/python") + " -m bpool.")
        assert p.stdout_logfile.startswith(str(here / "run/log/"))
        assert p.autorestart  # broker and front restart on their own too
    w = programs["browser-alice"]
    assert w.command.endswith(f"-m bpool.browser_proc --profile {here}/cookies/alice.json")
    assert w.stopsignal == 15 and w.stopwaitsecs == 45 and w.killasgroup
    assert not w.stopasgroup  # SIGTERM to the worker only: see render_browser
    assert w.exitcodes == [0, 78] and w.startsecs == 5 and 0 < w.startretries <= 10
    assert w.environment["BPOOL_DRAIN_TIMEOUT_S"] == "30"
    opts = ServerOptions()
    opts.realize(args=["-c", str(here / "supervisord.conf")])
    assert opts.server_configs[0]["file"] == str(here / "run/supervisor.sock")
    assert opts.server_configs[0]["chmod"] == 0o700
    assert opts.pidfile == str(here / "run/supervisord.pid")


def test_an_empty_pool_still_parses(checkout: Path) -> None:
    s = settings(checkout, simulator="off")
    assert apply.sync(s, render_only=True, say=lambda _: None) == 0
    assert set(parsed(checkout / "supervisord.conf")) == {"broker", "front"}


# ---------------------------------------------------------------------------- planning


def test_plan_touches_only_what_changed(checkout: Path) -> None:
    s = settings(checkout)
    a, b = Profile("alice", Path("/c/alice.json")), Profile("bob", Path("/c/bob.json"))
    have = render.desired(s, Discovery("x", profiles=[a, b]))
    have["unrelated.conf"] = "[program:unrelated]\n"
    carol = Profile("carol", Path("/c/carol.json"))
    p = render.plan(render.desired(s, Discovery("x", profiles=[a, carol])), have,
                       Discovery("x"))
    assert list(p.write) == ["browser-carol.conf"]
    assert p.delete == ["browser-bob.conf"] and p.kept == []


def test_a_refused_file_keeps_its_running_worker(checkout: Path) -> None:
    s = settings(checkout)
    a, b = Profile("alice", Path("/c/alice.json")), Profile("bob", Path("/c/bob.json"))
    have = render.desired(s, Discovery("x", profiles=[a, b]))
    found = Discovery("x", profiles=[a], refused=[Refused(Path("/c/bob.json"), "bad")])
    p = render.plan(render.desired(s, found), have, found)
    assert p.write == {} and p.delete == [] and p.kept == ["browser-bob.conf"]


def test_sync_render_only_is_idempotent(checkout: Path) -> None:
    s = settings(checkout)
    write(checkout / "cookies" / "alice.json")
    lines: list[str] = []
    assert apply.sync(s, render_only=True, say=lines.append) == 0
    first = apply.read_generated(s.include_dir)
    stamps = {p: p.stat().st_mtime_ns for p in s.include_dir.iterdir()}
    assert apply.sync(s, render_only=True, say=lines.append) == 0
    assert apply.read_generated(s.include_dir) == first
    assert {p: p.stat().st_mtime_ns for p in s.include_dir.iterdir()} == stamps
    assert lines[-1].startswith("wrote 0 and removed 0 files")


def test_sync_reports_refused_files_and_exits_1(checkout: Path) -> None:
    s = settings(checkout)
    write(checkout / "cookies" / "alice.json")
    write(checkout / "cookies" / "zed.json", "nope")
    lines: list[str] = []
    assert apply.sync(s, render_only=True, say=lines.append) == 1
    assert any(line.startswith("refused ") and "zed.json" in line and "JSON" in line
               for line in lines)
    assert set(apply.read_generated(s.include_dir)) == {"browser-alice.conf"}


def test_cli_path_and_unknown_profile(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(checkout / "cookies" / "alice.json")
    conf = str(checkout / "supervisord.conf")
    assert cli.main(["--conf", conf, "profiles", "sync", "--render-only"]) == 0
    capsys.readouterr()
    assert cli.main(["--conf", conf, "profiles", "path", "alice"]) == 0
    assert capsys.readouterr().out.strip() == str(checkout / "cookies" / "alice.json")
    assert cli.main(["--conf", conf, "profiles", "path", "zed"]) == 1
    assert "known: alice" in capsys.readouterr().err


def test_cli_check(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(checkout / "good.json")
    bad = write(checkout / "bad.json", "[]")
    assert cli.main(["profiles", "check", str(good)]) == 0
    assert cli.main(["profiles", "check", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.json" in err and "secret-value" not in err


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, checkout: Path) -> None:
    monkeypatch.setenv("BPOOL_SUPERVISORD_CONF", str(checkout / "supervisord.conf"))
    monkeypatch.setenv("BPOOL_SIMULATOR", "on")
    monkeypatch.setenv("BPOOL_DRAIN_TIMEOUT_S", "5")
    s = SyncSettings.from_env()
    assert s.here == checkout and s.simulator == "on" and s.drain_timeout_s == 5
    monkeypatch.setenv("BPOOL_SIMULATOR", "sometimes")
    with pytest.raises(config.ConfigError, match="BPOOL_SIMULATOR=.sometimes.: use one of auto, on, off"):
        SyncSettings.from_env()


# ---------------------------------------------------------------------------- hardening


def test_a_newline_in_a_name_is_refused_by_name_and_the_others_applied(checkout: Path) -> None:
    c = checkout / "cookies"
    write(c / "alice.json")
    write(c / "evil\n.json")
    write(c / ".hidden.json")
    s = settings(checkout)
    lines: list[str] = []
    assert apply.sync(s, render_only=True, say=lines.append) == 1
    assert set(apply.read_generated(s.include_dir)) == {"browser-alice.conf"}
    refused = [line for line in lines if line.startswith("refused ")]
    assert len(refused) == 1 and "evil" in refused[0] and "letters, digits" in refused[0]
    assert not any("hidden" in line for line in lines)  # not a profile at all


@pytest.mark.parametrize("name", ["me@example.com", "a+b", "x" * 64, "a.b_c-d"])
def test_sync_and_the_worker_accept_the_same_names(checkout: Path, name: str) -> None:
    from bpool.worker.profiles import load_profile

    p = write(checkout / "cookies" / f"{name}.json")
    found = render.discover(settings(checkout), check)
    assert [x.id for x in found.profiles] == [name] == [load_profile(p).id]


@pytest.mark.parametrize("name", ["-x", "_x", "x" * 65, "a b", "a%b", "a:b", "évé", "a\nb", "a\n"])
def test_sync_and_the_worker_refuse_the_same_names(checkout: Path, name: str) -> None:
    from bpool.worker.profiles import ProfileError, load_profile

    p = write(checkout / "cookies" / f"{name}.json")
    found = render.discover(settings(checkout), check)
    assert found.profiles == [] and [r.path.name for r in found.refused] == [p.name]
    with pytest.raises(ProfileError):
        load_profile(p)


def test_a_section_that_cannot_be_rendered_refuses_only_its_profile(checkout: Path) -> None:
    s = settings(checkout)
    good, bad = Profile("alice", checkout / "a.json"), Profile("bob", Path("/x\n/bob.json"))
    found = Discovery("x", profiles=[good, bad])
    want = render.desired(s, found)
    assert set(want) == {"browser-alice.conf"}
    assert [r.path for r in found.refused] == [bad.path] and found.profiles == [good]


def test_every_stop_timeout_outlasts_its_drain(tmp_path: Path) -> None:
    here = tmp_path / "c"
    here.mkdir()
    shutil.copy(REPO_ROOT / "supervisord.conf", here / "supervisord.conf")
    write(here / "cookies" / "alice.json")
    for drain in (30.0, 0.0):
        s = settings(here, drain_timeout_s=drain)
        assert apply.sync(s, render_only=True, say=lambda _: None) == 0
        programs = parsed(here / "supervisord.conf")
        assert programs["browser-alice"].stopwaitsecs > drain
    # The front drains its open responses for the default BPOOL_DRAIN_TIMEOUT_S too.
    assert programs["front"].stopwaitsecs > 30


def test_sync_warns_when_the_front_stops_before_its_drain(checkout: Path) -> None:
    write(checkout / "cookies" / "alice.json")
    lines: list[str] = []
    apply.sync(settings(checkout, drain_timeout_s=120), render_only=True,
                        say=lines.append)
    assert any(line.startswith("warning:") and "stopwaitsecs" in line and "front" in line
               for line in lines)
    lines.clear()
    apply.sync(settings(checkout, drain_timeout_s=30), render_only=True,
                        say=lines.append)
    assert not any("stopwaitsecs" in line for line in lines)


def test_programs_run_under_the_lifeline_with_their_secrets_only(tmp_path: Path) -> None:
    here = tmp_path / "c"
    here.mkdir()
    shutil.copy(REPO_ROOT / "supervisord.conf", here / "supervisord.conf")
    write(here / "cookies" / "alice.json")
    s = settings(here, simulator="on")
    assert apply.sync(s, render_only=True, say=lambda _: None) == 0
    programs = parsed(here / "supervisord.conf")
    assert set(programs) == {"broker", "front", "browser-alice", "sim"}
    for name, p in programs.items():
        argv = shlex.split(p.command)
        assert argv[1:3] == ["-m", "bpool.ops.lifeline"], name
        kept = {argv[i + 1] for i, a in enumerate(argv[:argv.index("--")]) if a == "--keep"}
        assert kept == {"broker": {"BPOOL_CURVE_DIR"},
                        "front": {"BPOOL_API_KEYS", "BPOOL_API_KEYS_FILE"}}.get(name, set())


# ---------------------------------------------------------------------------- apply


class FakeSupervisor:
    """supervisord's XML-RPC as `apply` uses it: what reloadConfig reports, and every call."""

    def __init__(self, added: list[str], changed: list[str], removed: list[str]) -> None:
        self.report = [[added, changed, removed]]
        self.calls: list[tuple[str, str]] = []

    def reloadConfig(self) -> list[list[list[str]]]:
        return self.report

    def addProcessGroup(self, name: str) -> None:
        self.calls.append(("add", name))

    def stopProcessGroup(self, name: str, wait: bool) -> None:
        assert wait  # a replaced or removed worker drains first
        self.calls.append(("stop", name))

    def removeProcessGroup(self, name: str) -> None:
        self.calls.append(("remove", name))


class FakeProxy:
    def __init__(self, sup: FakeSupervisor) -> None:
        self.supervisor = sup


def test_apply_adds_replaces_and_removes_only_generated_programs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for sub in ("browsers", "snapshots"):
        (run / sub / "carol").mkdir(parents=True)
        (run / sub / "bob").mkdir(parents=True)
    sup = FakeSupervisor(added=["browser-alice", "front-extra"], changed=["browser-bob", "broker"],
                         removed=["browser-carol"])
    out = apply.apply(FakeProxy(sup), run)
    assert (out.started, out.replaced, out.stopped) == (
        ["browser-alice"], ["browser-bob"], ["browser-carol"])
    assert out.others == ["broker", "front-extra"] and out.errors == []
    assert sup.calls == [("add", "browser-alice"),
                         ("stop", "browser-bob"), ("remove", "browser-bob"),
                         ("add", "browser-bob"),
                         ("stop", "browser-carol"), ("remove", "browser-carol")]
    # The removed profile's browser data and snapshots are gone; a replaced one keeps its own.
    assert not (run / "browsers" / "carol").exists() and not (run / "snapshots" / "carol").exists()
    assert (run / "browsers" / "bob").is_dir()


def test_apply_reports_a_fault_and_goes_on(tmp_path: Path) -> None:
    import xmlrpc.client

    class Failing(FakeSupervisor):
        def addProcessGroup(self, name: str) -> None:
            if name == "browser-a":
                raise xmlrpc.client.Fault(10, "BAD_NAME: browser-a")
            super().addProcessGroup(name)

        def stopProcessGroup(self, name: str, wait: bool) -> None:
            raise xmlrpc.client.Fault(70, "NOT_RUNNING")  # already stopped: not an error

    sup = Failing(added=["browser-a", "browser-b"], changed=[], removed=["browser-c"])
    out = apply.apply(FakeProxy(sup), tmp_path)
    assert out.started == ["browser-b"] and out.stopped == ["browser-c"]
    assert out.errors == ["browser-a: BAD_NAME: browser-a"]
    assert ("remove", "browser-c") in sup.calls


def _spawn_orphaned_browser(tag: str) -> tuple[int, int]:
    """A worker that started a 'browser' (its own process group, with a child, tagged like the
    real one), then got SIGKILL: returns the browser's pid and its child's."""
    import os
    import signal
    import subprocess
    import sys

    from bpool.worker import procs

    code = (
        "import os, subprocess, sys, time\n"
        "b = subprocess.Popen([sys.executable, '-c', 'import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(600)\"]); "
        "print(c.pid, flush=True); time.sleep(600)'], start_new_session=True, "
        "stdout=subprocess.PIPE, text=True)\n"
        "print(b.pid, b.stdout.readline().strip(), flush=True)\n"
        "time.sleep(600)\n")
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, procs.OWNER_ENV: tag})
    assert worker.stdout is not None
    with worker.stdout:
        browser, child = map(int, worker.stdout.readline().split())
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    return browser, child


def test_reap_browsers_kills_what_a_sigkilled_worker_left(tmp_path: Path) -> None:
    import os
    import signal
    import time

    from bpool.worker import procs

    run = tmp_path / "run"
    (run / "browsers").mkdir(parents=True)
    mine = _spawn_orphaned_browser(str(run.resolve() / "browsers" / "alice"))
    other = _spawn_orphaned_browser(str(run.resolve() / "browsers" / "bob"))
    try:
        assert all(procs.alive(p) for p in (*mine, *other))  # the SIGKILL left them behind
        apply.reap_browsers(run, "browser-alice")
        deadline = time.monotonic() + 30
        while any(procs.alive(p) for p in mine):
            assert time.monotonic() < deadline, "alice's browser survived"
            time.sleep(0.05)
        assert all(procs.alive(p) for p in other)  # another profile's browser is left alone
        apply.reap_browsers(run, "sim")  # not a browser program: nothing to reap
        assert all(procs.alive(p) for p in other)
    finally:
        for p in (*mine, *other):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
