"""`bpool wait-profile`'s verdicts, from /health and supervisord's view, with a fake clock."""

from __future__ import annotations

from typing import Any

from bpool.ops.wait import judge, wait


def w(state: str, pid: int, **kw: Any) -> dict[str, Any]:
    return {"profile_id": "alice", "state": state, "pid": pid, "account": "a@x", **kw}


def running(pid: int) -> dict[str, Any]:
    return {"statename": "RUNNING", "pid": pid}


def test_back_in_rotation_needs_the_new_incarnation() -> None:
    old = w("draining", 10)
    assert not judge("alice", [old], running(20)).done
    assert not judge("alice", [w("idle", 10)], running(20)).done  # the old one still listed
    v = judge("alice", [old, w("idle", 20)], running(20))
    assert v.done and v.ok and "back in rotation" in v.message
    assert judge("alice", [w("busy", 20)], running(20)).ok
    # Without supervisord's view, the replaced pid is what rules an entry out.
    assert not judge("alice", [w("idle", 10)], None, not_pid=10).done
    assert judge("alice", [w("idle", 11)], None, not_pid=10).ok


def test_other_profiles_do_not_count() -> None:
    v = judge("alice", [{**w("idle", 20), "profile_id": "bob"}], running(20))
    assert not v.done and "not registered" in v.message


def test_logged_out_is_a_failure_with_the_reason() -> None:
    v = judge("alice", [w("logged_out", 20, last_error="redirected to sign-in")], running(20))
    assert v.done and not v.ok and "redirected to sign-in" in v.message


def test_cooling_counts_as_swapped_but_says_so() -> None:
    v = judge("alice", [w("cooling", 20, cooldown_remaining_s=42.0)], running(20))
    assert v.done and v.ok and "42.0" in v.message


def test_supervisord_states() -> None:
    fatal = judge("alice", None, {"statename": "FATAL", "pid": 0, "spawnerr": "Exited too quickly"})
    assert fatal.done and not fatal.ok and "Exited too quickly" in fatal.message
    cfg = judge("alice", [], {"statename": "EXITED", "pid": 0, "exitstatus": 78})
    assert cfg.done and not cfg.ok and "configuration error" in cfg.message
    stopped = judge("alice", [], {"statename": "STOPPED", "pid": 0})
    assert stopped.done and "supervisorctl start browser-alice" in stopped.message
    backoff = judge("alice", [], {"statename": "BACKOFF", "pid": 0, "spawnerr": ""})
    assert not backoff.done and "retrying" in backoff.message
    assert not judge("alice", None, running(20)).done


def test_wait_polls_until_done_or_deadline() -> None:
    now = [0.0]
    views = iter([[], [w("draining", 10)], [w("idle", 20)]])
    v = wait("alice", 10, fetch=lambda: next(views), info=lambda: running(20),
             clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert v.ok and now[0] == 0.5
    now[0] = 0.0
    v = wait("alice", 2, fetch=lambda: [], info=lambda: running(20),
             clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert not v.ok and v.message.startswith("timed out after 2 s") and now[0] >= 2


def test_needs_consent_is_a_failure_naming_the_profile() -> None:
    v = judge("alice", [w("needs_consent", 20, last_error="needs_consent: terms of service")],
              running(20))
    assert v.done and not v.ok
    assert "alice" in v.message and "terms of service" in v.message
    # wait() returns at the first look instead of polling until its deadline.
    now = [0.0]
    v = wait("alice", 60, fetch=lambda: [w("needs_consent", 20)], info=lambda: running(20),
             clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert not v.ok and now[0] == 0.0 and "terms of service" in v.message


def test_paused_counts_as_swapped_but_says_so() -> None:
    v = judge("alice", [w("paused", 20, cooldown_remaining_s=1790.0,
                          last_error="paused: permission denied")], running(20))
    assert v.done and v.ok and "1790.0" in v.message and "permission denied" in v.message


def test_health_is_fetched_with_the_pools_key_when_keys_are_configured(monkeypatch) -> None:
    """With keys configured the front shows worker details only to a caller with a key."""
    import http.server
    import threading

    from bpool.ops.wait import fetch_workers

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            detailed = self.headers.get("Authorization") == "Bearer k-one"
            body = b'{"status": "ok", "workers": [{"profile_id": "alice"}]}' if detailed \
                else b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        monkeypatch.delenv("BPOOL_API_KEYS_FILE", raising=False)
        monkeypatch.delenv("BPOOL_API_KEYS", raising=False)
        assert fetch_workers(url) is None
        monkeypatch.setenv("BPOOL_API_KEYS", "k-one,k-two")
        assert fetch_workers(url) == [{"profile_id": "alice"}]
    finally:
        server.shutdown()
        server.server_close()
