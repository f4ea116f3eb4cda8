"""The settings registry, the README generated from it, and the one logging setup."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bpool import config
from bpool.front.settings import FrontSettings

ROOT = Path(config.__file__).resolve().parent.parent


def test_the_readme_table_is_the_registry() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- config-table:start[^\n]*-->\n(.*?)\n<!-- config-table:end -->", readme, re.S)
    assert m, "README.md lost its config-table markers"
    assert m.group(1) == config.config_table(), \
        "README.md's configuration table differs from bpool/config.py: paste `bpool config table`"


def test_every_variable_the_code_reads_is_registered() -> None:
    used: set[str] = set()
    for path in (ROOT / "bpool").rglob("*.py"):
        used |= set(re.findall(r'"((?:BPOOL|BROWSER_PROFILE|ACTIVE_AUTH)_[A-Z0-9_]*[A-Z0-9])"',
                               path.read_text(encoding="utf-8")))
    missing = sorted(v for v in used if v not in config.REGISTRY and not v.endswith("_"))
    assert not missing, f"read but not in config.REGISTRY: {missing}"


@pytest.mark.parametrize("raw, reason", [
    ("abc", "not a number"), ("-1", "> 0"), ("0", "> 0"),
])
def test_a_bad_value_names_the_variable_and_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(config.ConfigError, match=rf"BPOOL_JOB_TIMEOUT_S='{re.escape(raw)}': .*{re.escape(reason)}"):
        config.build(FrontSettings, env={"BPOOL_JOB_TIMEOUT_S": raw})


def test_env_then_flags_in_one_way() -> None:
    env = {"BPOOL_PORT": "3000", "BPOOL_JOB_TIMEOUT_S": "12.5", "BPOOL_HOST": " "}
    s = config.build(FrontSettings, env=env)
    assert (s.port, s.job_timeout_s, s.host) == (3000, 12.5, config.default("BPOOL_HOST"))
    s = config.build(FrontSettings, {"port": 4000, "host": None}, env=env)
    assert s.port == 4000 and s.host == config.default("BPOOL_HOST")  # None = flag not given
    with pytest.raises(config.ConfigError, match="--port=70000: Expected `int` <= 65535"):
        config.build(FrontSettings, {"port": 70000}, env={})


def test_choices_and_booleans_say_what_is_allowed() -> None:
    with pytest.raises(config.ConfigError, match="BPOOL_BROWSER='firefox': use one of auto, camoufox, chromium"):
        config.value("BPOOL_BROWSER", {"BPOOL_BROWSER": "firefox"})
    with pytest.raises(config.ConfigError, match="BPOOL_HEADLESS='maybe': use 1 or 0"):
        config.value("BPOOL_HEADLESS", {"BPOOL_HEADLESS": "maybe"})
    assert config.value("BPOOL_HEADLESS", {"BPOOL_HEADLESS": "0"}) is False


def test_a_process_refuses_a_bad_value_with_exit_78_and_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "BPOOL_RUN_DIR": str(tmp_path),
           "BPOOL_HEARTBEAT_LIVENESS": "lots"}
    for module, who in (("bpool.broker", "broker"), ("bpool.http_front", "front")):
        done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == config.EX_CONFIG == 78, done
        assert done.stderr.strip().splitlines() == [
            f"bpool {who}: BPOOL_HEARTBEAT_LIVENESS='lots': not an integer"]


def test_json_logs_carry_the_fields_and_never_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-known-secret-value-0123456789"
    try:
        config.setup_logging("front", "alice", env={"BPOOL_LOG_FORMAT": "json",
                                                     "BPOOL_LOG_LEVEL": "DEBUG"})
        config.add_secret(secret)
        log = logging.getLogger("bpool.test")
        log.info("key was %s", secret, extra={"request_id": "req-1", "job_id": "job-9"})
        log.debug("debug shows up")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        config.setup_logging("test", env={})
    first = lines[0]
    assert first["event"] == "key was ***" and first["level"] == "info"
    assert (first["process"], first["profile"]) == ("front", "alice")
    assert (first["request_id"], first["job_id"]) == ("req-1", "job-9")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert lines[1]["event"] == "debug shows up"
    assert secret not in json.dumps(lines)


def test_the_log_level_is_honoured(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        config.setup_logging("broker", env={"BPOOL_LOG_LEVEL": "WARNING"})
        logging.getLogger("bpool.test").info("hidden")
        logging.getLogger("bpool.test").warning("shown")
        err = capsys.readouterr().err
    finally:
        config.setup_logging("test", env={})
    assert "shown" in err and "hidden" not in err and " broker " in err
