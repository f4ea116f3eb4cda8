"""What the broker tells /health about each profile's login: the cookie expiry a worker reports
(in Ready, then in ProfileInfo after a refresh) and the time since its last answer."""

from __future__ import annotations

from bpool.pool.core import BrokerCore
from bpool.protocol import (PROTOCOL_VERSION, Assign, ChatMessage, Done, Idle, JobSpec,
                            ProfileInfo, Ready, Started, Submit, decoder, encoder,
                            WorkerToBroker)

ENC = encoder()
W = b"w-alice"


def send(core: BrokerCore, msg: object, now: float) -> list:
    return core.on_worker(W, msg, ENC.encode(msg), now)


def status_of(core: BrokerCore, now: float):
    (w,) = core.status(now).workers
    return w


def serve_one(core: BrokerCore, job_id: str, now: float, finish: str = "stop") -> None:
    acts = core.on_front(b"f", Submit(job_id, JobSpec("m", (ChatMessage("user", "hi"),))), now)
    assert any(isinstance(getattr(a, "msg", None), Assign) for a in acts)
    send(core, Started(job_id), now)
    send(core, Done(job_id, finish), now)
    send(core, Idle(), now)


def test_expiry_comes_from_ready_then_from_profile_info_without_changing_state() -> None:
    core = BrokerCore(broker_id="b")
    send(core, Ready(PROTOCOL_VERSION, "alice", 1, "i1", cookie_expires_at=1_900_000_000.0), 0.0)
    assert status_of(core, 1.0).cookie_expires_at == 1_900_000_000.0
    assert status_of(core, 1.0).state == "idle"
    send(core, ProfileInfo(1_950_000_000.0), 2.0)
    st = status_of(core, 3.0)
    assert (st.cookie_expires_at, st.state) == (1_950_000_000.0, "idle")


def test_last_answer_counts_finished_answers_only() -> None:
    core = BrokerCore(broker_id="b")
    send(core, Ready(PROTOCOL_VERSION, "alice", 1, "i1"), 0.0)
    assert status_of(core, 1.0).last_answer_s is None
    serve_one(core, "j1", 10.0)
    assert status_of(core, 25.0).last_answer_s == 15.0
    serve_one(core, "j2", 30.0, finish="cancelled")  # a cancelled job is not an answer
    assert status_of(core, 40.0).last_answer_s == 30.0


def test_profile_info_and_the_new_fields_round_trip_on_the_wire() -> None:
    dec = decoder(WorkerToBroker)
    assert dec.decode(ENC.encode(ProfileInfo(12.5))) == ProfileInfo(12.5)
    old_ready = Ready(PROTOCOL_VERSION, "alice", 1, "i1")  # a worker that reports no expiry
    assert dec.decode(ENC.encode(old_ready)).cookie_expires_at is None
