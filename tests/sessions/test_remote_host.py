"""A session host on "another machine": over tcp with CURVE, like chat workers. Only hosts whose
public key the broker allows register; no browser is started (registration is the link)."""

from __future__ import annotations

import shutil
from pathlib import Path

from bpool.testing.pool import free_port
from bpool.wire import curve
from sessions.harness import SessionPool


def test_a_host_over_tcp_registers_only_with_an_allowed_curve_key(tmp_path: Path) -> None:
    keys, server_dir = tmp_path / "keys", tmp_path / "broker-curve"
    curve.generate(keys, "server")
    curve.generate(keys, "host2")
    curve.generate(keys, "stranger")  # a valid key pair the broker was never given
    (server_dir / "clients").mkdir(parents=True)
    shutil.copy(keys / "server.key_secret", server_dir / "server.key_secret")
    shutil.copy(keys / "host2.key", server_dir / "clients" / "host2.key")
    port = free_port()
    pool = SessionPool(tmp_path / "pool", {}, env={
        "BPOOL_CURVE_DIR": str(server_dir), "BPOOL_SESSIONS_TCP": f"tcp://127.0.0.1:{port}"})
    try:
        remote = {"BPOOL_BROKER_SESSIONS": f"tcp://127.0.0.1:{port}",
                  "BPOOL_CURVE_SERVER_KEY": str(keys / "server.key")}
        pool.start_module("stranger", "bpool.session_host", "--host-id", "stranger",
                          env={**remote, "BPOOL_CURVE_CLIENT_KEY": str(keys / "stranger.key_secret")})
        # The stranger has offered its HostReady before the allowed host even starts.
        pool.wait_until(lambda: "session host stranger: capacity" in pool.logs("stranger"), 30,
                        "the stranger's registration sent")
        pool.start_module("host2", "bpool.session_host", "--host-id", "host2",
                          env={**remote, "BPOOL_CURVE_CLIENT_KEY": str(keys / "host2.key_secret")})
        pool.wait_hosts(1)
        assert pool.procs["stranger"].alive()  # still trying, never let in
        assert "bpool_session_hosts 1.0" in pool.metrics()
        # Without keys a tcp endpoint is refused at start: a configuration error.
        pool.start_module("plain", "bpool.session_host", "--host-id", "plain",
                          env={"BPOOL_BROKER_SESSIONS": f"tcp://127.0.0.1:{port}"})
        pool.wait_until(lambda: pool.procs["plain"].returncode is not None, 30, "plain host exit")
        assert pool.procs["plain"].returncode == 78
        assert "needs BPOOL_CURVE_SERVER_KEY" in pool.logs("plain")
    finally:
        pool.close()
