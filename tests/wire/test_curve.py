"""Workers on other hosts: the broker's tcp endpoint takes only CURVE clients it knows."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from bpool import protocol as p

from bpool.wire import sockets as _zmq

from bpool.wire import curve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    server_dir = tmp_path / "curve"
    curve.generate(server_dir, "server")
    (server_dir / "clients").mkdir()
    good_pub, good_sec = curve.generate(tmp_path / "host2", "host2")
    (server_dir / "clients" / "host2.key").write_bytes(good_pub.read_bytes())
    _, bad_sec = curve.generate(tmp_path / "stranger", "stranger")
    assert oct(good_sec.stat().st_mode & 0o777) == "0o600"
    return {"dir": server_dir, "server_pub": server_dir / "server.key", "good": good_sec,
            "bad": bad_sec}


@pytest.fixture
def broker(tmp_path: Path, keys):
    port = free_port()
    env = dict(os.environ, BPOOL_RUN_DIR=str(tmp_path / "run"),
               BPOOL_BROKER_TCP=f"tcp://127.0.0.1:{port}", BPOOL_CURVE_DIR=str(keys["dir"]))
    proc = subprocess.Popen([sys.executable, "-m", "bpool.broker"], env=env,
                            start_new_session=True)
    yield {"port": port, "run": tmp_path / "run", "proc": proc}
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def handshake(endpoint: str, server_pub: Path, client_secret: Path) -> int:
    """Connect a CURVE DEALER and return the first handshake event the monitor reports."""
    ctx = zmq.Context.instance()
    keys = (zmq.auth.load_certificate(server_pub)[0], *zmq.auth.load_certificate(client_secret))
    sock = _zmq.dealer(ctx, endpoint, setup=lambda s: curve.apply_client(s, keys))
    mon = sock.get_monitor_socket()
    wanted = {zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_AUTH,
              zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if mon.poll(500):
                event = recv_monitor_message(mon)["event"]
                if event in wanted:
                    return event
        raise AssertionError("no handshake result within 10 s")
    finally:
        sock.disable_monitor()
        mon.close(0)
        sock.close(0)


def test_known_key_registers_and_unknown_key_is_refused(tmp_path, keys, broker):
    endpoint = f"tcp://127.0.0.1:{broker['port']}"
    assert handshake(endpoint, keys["server_pub"], keys["bad"]) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert handshake(endpoint, keys["server_pub"], keys["good"]) == zmq.EVENT_HANDSHAKE_SUCCEEDED

    # A real worker process over tcp + CURVE registers and is seen by the broker.
    env = dict(os.environ, BPOOL_RUN_DIR=str(broker["run"]), BPOOL_BROKER_WORKERS=endpoint,
               BPOOL_CURVE_SERVER_KEY=str(keys["server_pub"]), BPOOL_CURVE_CLIENT_KEY=str(keys["good"]))
    worker = subprocess.Popen([sys.executable, "-m", "bpool.testing.fake_worker", "--profile-id",
                               "remote"], env=env, start_new_session=True)
    # ...while a local worker on the ipc endpoint of the same ROUTER needs no keys.
    local_env = dict(os.environ, BPOOL_RUN_DIR=str(broker["run"]))
    local = subprocess.Popen([sys.executable, "-m", "bpool.testing.fake_worker", "--profile-id",
                              "local"], env=local_env, start_new_session=True)
    try:
        ctx = zmq.Context.instance()
        front = _zmq.dealer(ctx, f"ipc://{broker['run']}/front.sock")
        enc, dec = p.encoder(), p.decoder(p.BrokerToFront)
        deadline = time.monotonic() + 15
        profiles: list[str] = []
        while time.monotonic() < deadline and len(profiles) < 2:
            try:
                front.send(enc.encode(p.StatusQuery(1)), zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.05)
                continue
            if front.poll(1000):
                profiles = [w.profile_id for w in dec.decode(front.recv()).status.workers]
        front.close(0)
        assert sorted(profiles) == ["local", "remote"]
    finally:
        for proc in (worker, local):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_tcp_without_allowed_keys_is_a_config_error(tmp_path):
    empty = tmp_path / "curve"
    curve.generate(empty, "server")
    env = dict(os.environ, BPOOL_RUN_DIR=str(tmp_path / "run"),
               BPOOL_BROKER_TCP=f"tcp://127.0.0.1:{free_port()}", BPOOL_CURVE_DIR=str(empty))
    out = subprocess.run([sys.executable, "-m", "bpool.broker"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 78
    assert "no allowed worker keys" in out.stderr


@pytest.mark.parametrize("var", ["BPOOL_BROKER_WORKERS", "BPOOL_BROKER_FRONT"])
def test_a_plain_tcp_endpoint_is_refused(tmp_path, var):
    """Without CURVE anyone who reaches the port could serve or submit jobs."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPOOL_")}
    env.update(BPOOL_RUN_DIR=str(tmp_path / "run"), BPOOL_CURVE_DIR=str(tmp_path / "none"))
    env[var] = f"tcp://127.0.0.1:{port}"
    out = subprocess.run([sys.executable, "-m", "bpool.broker"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 78, out.stderr
    assert var in out.stderr
    with socket.socket() as s:  # and nothing was left listening
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_tcp_worker_endpoint_is_bound_with_curve(tmp_path, keys):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPOOL_")}
    env.update(BPOOL_RUN_DIR=str(tmp_path / "run"), BPOOL_CURVE_DIR=str(keys["dir"]),
               BPOOL_BROKER_WORKERS=f"tcp://127.0.0.1:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "bpool.broker"], env=env,
                            start_new_session=True)
    try:
        ep = f"tcp://127.0.0.1:{port}"
        assert handshake(ep, keys["server_pub"], keys["bad"]) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert handshake(ep, keys["server_pub"], keys["good"]) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_secret_keys_are_private_from_creation(tmp_path, monkeypatch):
    """No moment where the secret is readable by others: the mode comes with the file, not
    from a chmod afterwards (which is disabled here)."""
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    old = os.umask(0o022)
    try:
        public, secret = curve.generate(tmp_path / "k", "host9")
    finally:
        os.umask(old)
    assert secret.stat().st_mode & 0o777 == 0o600
    assert public.stat().st_mode & 0o077 == 0
    assert zmq.auth.load_certificate(str(secret))[1]  # a usable key pair
    assert zmq.auth.load_certificate(str(public))[0] == zmq.auth.load_certificate(str(secret))[0]
    with pytest.raises(curve.CurveError, match="exists"):
        curve.generate(tmp_path / "k", "host9")  # never overwrite a key pair in place
