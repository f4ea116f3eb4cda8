"""Limits and bad input of the session API: capacity (429, and the bounded wait), timeouts
(400), unknown sessions (404), keys (401), and the sweeper (a client that never connects)."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from sessions.harness import SessionPool

pytestmark = pytest.mark.chromium


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionPool]:
    # One host with room for one browser; the operator's caps are small so that a too-large
    # request is easy to make.
    p = SessionPool(tmp_path_factory.mktemp("validate"), {"h1": 1},
                    env={"BPOOL_SESSION_TIMEOUT_S": "600", "BPOOL_SESSION_IDLE_TIMEOUT_S": "120",
                         "BPOOL_SESSION_QUEUE_MAX_S": "60"})
    try:
        yield p
    finally:
        p.close()


@pytest.mark.parametrize("body, param", [
    ({"timeout_s": 0}, "timeout_s"), ({"timeout_s": -5}, "timeout_s"),
    ({"timeout_s": 601}, "timeout_s"), ({"timeout_s": "60"}, "timeout_s"),
    ({"timeout_s": True}, "timeout_s"), ({"idle_timeout_s": 0}, "idle_timeout_s"),
    ({"idle_timeout_s": 121}, "idle_timeout_s"), ({"queue_s": -1}, "queue_s"),
    ({"queue_s": 61}, "queue_s"), ({"record": "mp4"}, "record"), ({"colour": 1}, "colour"),
])
def test_bad_input_is_400_naming_the_field(pool: SessionPool, body: dict, param: str) -> None:
    status, out = pool.request("POST", "/v1/sessions", body)
    assert status == 400, out
    assert out["error"]["param"] == param


def test_bad_bodies_and_leases(pool: SessionPool) -> None:
    assert pool.request("POST", "/v1/sessions", b"{not json")[0] == 400
    assert pool.request("POST", "/v1/sessions", [1, 2])[0] == 400
    status, out = pool.request("POST", "/v1/sessions", {"profile": "alice"})
    assert status == 501 and out["error"]["code"] == "not_supported"
    assert pool.request("GET", "/v1/sessions?state=sleeping")[0] == 400
    assert pool.request("GET", "/v1/sessions?limit=0")[0] == 400


def test_unknown_sessions_are_404(pool: SessionPool) -> None:
    for path in ("/v1/sessions/s-" + "0" * 24, "/v1/sessions/nope",
                 "/v1/sessions/s-" + "0" * 24 + "/json/version"):
        status, out = pool.request("GET", path)
        assert status == 404 and out["error"]["code"] == "session_not_found", path
    assert pool.request("DELETE", "/v1/sessions/s-" + "1" * 24)[0] == 404
    assert pool.request("GET", "/v1/sessions/s-" + "2" * 24 + "/ws")[0] == 404


def test_a_wrong_or_missing_key_is_401(pool: SessionPool) -> None:
    for method, path in (("POST", "/v1/sessions"), ("GET", "/v1/sessions"),
                         ("GET", "/v1/sessions/s-" + "0" * 24),
                         ("DELETE", "/v1/sessions/s-" + "0" * 24),
                         ("GET", "/v1/sessions/s-" + "0" * 24 + "/ws")):
        for bad in ({"Authorization": "Bearer wrong"}, {"Authorization": ""}):
            status, out = pool.request(method, path, {} if method == "POST" else None,
                                       headers=bad)
            assert status == 401 and out["error"]["code"] == "invalid_api_key", (method, path)
    assert pool.request("GET", "/v1/sessions")[1]["data"] == []  # nothing was created


def test_over_capacity_is_429_and_a_bounded_wait_gets_the_next_free_browser(
        pool: SessionPool) -> None:
    first = pool.create()
    status, out = pool.request("POST", "/v1/sessions", {})
    assert status == 429 and out["error"]["code"] == "no_capacity"
    assert 1 <= int(pool.last_headers["Retry-After"]) <= 60
    waited: dict = {}
    t = threading.Thread(target=lambda: waited.update(
        zip(("status", "body"), pool.request("POST", "/v1/sessions", {"queue_s": 50}))))
    t.start()
    pool.wait_until(lambda: pool.request("GET", "/v1/sessions?state=queued")[1]["data"], 20,
                    "the second request queued")
    assert pool.request("DELETE", f"/v1/sessions/{first['id']}")[0] == 200
    t.join(90)
    assert waited["status"] == 201 and waited["body"]["state"] == "ready", waited
    assert pool.request("DELETE", f"/v1/sessions/{waited['body']['id']}")[0] == 200
    # A wait that runs out is a 429 too.
    hold = pool.create()
    status, out = pool.request("POST", "/v1/sessions", {"queue_s": 1})
    assert status == 429 and out["error"]["code"] == "no_capacity"
    assert pool.request("DELETE", f"/v1/sessions/{hold['id']}")[0] == 200


def test_a_client_that_never_connects_is_swept_and_its_browser_killed(
        pool: SessionPool) -> None:
    s = pool.create(idle_timeout_s=1.5)
    assert pool.browsers_of("h1")
    ended = pool.wait_state(s["id"], "ended", 30)
    assert ended["end_reason"] == "idle"
    pool.wait_until(lambda: not pool.browsers_of("h1"), 20, "the idle session's browser gone")
    # The lifetime counts from creation, idleness from the browser being ready: with equal
    # limits the lifetime ends first.
    over = pool.create(timeout_s=8, idle_timeout_s=8)
    assert over["expires_at"] == pytest.approx(over["created_at"] + 8)
    assert pool.wait_state(over["id"], "ended", 40)["end_reason"] == "timeout"
    text = pool.metrics()
    assert 'bpool_session_ends_total{reason="idle"}' in text
    listed = pool.request("GET", "/v1/sessions?state=ended")[1]["data"]
    assert {s["id"], over["id"]} <= {x["id"] for x in listed}
