"""The `sessions` supervisord program that sync renders, as supervisord itself reads it."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
from pathlib import Path

from supervisor.options import ServerOptions

from bpool.config import REPO_ROOT
from bpool.ops import apply
from bpool.ops.render import SyncSettings


def programs(conf: Path) -> dict:
    opts = ServerOptions()
    opts.realize(args=["-c", str(conf)])
    return {p.name: p for g in opts.process_group_configs for p in g.process_configs}


def test_session_hosts_are_one_program_with_a_slot_each(tmp_path: Path) -> None:
    here = tmp_path / "check out"
    here.mkdir()
    shutil.copy(REPO_ROOT / "supervisord.conf", here / "supervisord.conf")
    s = SyncSettings.from_env(here / "supervisord.conf", {"BPOOL_SIMULATOR": "off"})
    assert s.session_hosts == 1  # the default: scripts/run serves sessions with chat
    s = dataclasses.replace(s, session_hosts=2)
    assert apply.sync(s, render_only=True, say=lambda _: None) == 0
    found = programs(here / "supervisord.conf")
    assert {"sessions-0", "sessions-1"} <= set(found)
    for slot in (0, 1):
        p = found[f"sessions-{slot}"]
        argv = shlex.split(p.command)
        assert argv[1:3] == ["-m", "bpool.ops.lifeline"]  # dies with supervisord, no secrets
        assert argv[argv.index("--") + 1:] == [str(here / ".venv/bin/python"), "-m",
                                               "bpool.session_host", "--slot", str(slot)]
        assert p.stdout_logfile == str(here / f"run/log/sessions-{slot}.log")
        assert p.killasgroup and p.exitcodes == [0, 78]
    # None wanted: the section goes away at the next sync.
    assert apply.sync(dataclasses.replace(s, session_hosts=0), render_only=True,
                      say=lambda _: None) == 0
    assert not any(n.startswith("sessions") for n in programs(here / "supervisord.conf"))
