"""Every message that crosses a bpool socket, one msgspec Struct each.

Three processes talk over ZeroMQ:

    front (DEALER) ──► broker ROUTER "front side"      unions FrontToBroker / BrokerToFront
    worker (DEALER) ──► broker ROUTER "worker side"    unions WorkerToBroker / BrokerToWorker

Every frame is exactly one msgpack-encoded message (single-part; the ROUTER adds the peer identity
frame). Structs are tagged by class name and array-like, so a message is a short msgpack array.
A frame that does not decode into the union of its direction is the *peer's* fault: the receiver
logs it, counts it and drops it (the broker answers an undecodable worker frame with `Disconnect`).

Conversation rules (the broker contract, docs/architecture.md):

* A worker opens with `Ready` (carrying PROTOCOL_VERSION, its profile id, pid and a fresh
  incarnation id). The broker never sends `Assign` to an identity it has not seen `Ready` from and
  answers any other message from an unknown identity with `Disconnect`; the worker then sends
  `Ready` again. A worker that is logged out still registers, with `Ready.unusable` set, so the
  operator sees it in /health; it gets no jobs.
* Both sides send `Heartbeat` every interval while nothing else is sent; any frame counts as a
  sign of life. A peer silent for interval × liveness is dead.
* `Assign` → the worker answers `Started` right before it does anything irreversible (submitting
  the prompt). Then any number of `Chunk`s (seq from 0), then exactly one of `Done` / `JobFailed`,
  which ends the job for the client. The worker is still held: it resets its page and only then
  sends `Idle`, after which the broker may give it the next job. It never holds two jobs.
  A job the broker has not seen `Started` for may be moved to another worker once if its worker
  dies. `JobFailed` with `output_sent=False` and an account error (rate_limited / paused /
  logged_out / needs_consent / broken) may also be moved.
* `Cancel` (front → broker → worker) asks to stop a job; the worker stops and answers `Done` with
  finish_reason "cancelled" (or `JobFailed`). The worker stays busy until it has answered.
* `AccountState` reports the account's condition outside a job; the same kinds in a `JobFailed`
  (or `Ready.unusable`) have the same effect once the worker is `Idle`:
  - rate_limited: free quotas are per account AND per model, so a rate limit rests the account
    for one model only: the model of the job that hit it (`JobFailed`) or `AccountState.model`,
    for `retry_after_s` (else the broker's BPOOL_COOLDOWN_S); the worker stays idle for every
    other model. With `AccountState.model=None` the whole account cools: state "cooling", then
    idle again by itself;
  - paused: the site refused the account (permission denied, a bot check): state "paused" for
    `retry_after_s` (else the broker's BPOOL_PAUSE_S, default 30 min), then idle again; the
    account is never retried at once;
  - logged_out: state "logged_out", excluded until the profile is replaced;
  - needs_consent: the account must accept the AI Studio terms of service on the page: state
    "needs_consent", excluded like logged_out;
  - broken: the worker will exit;
  - `error=None`: usable again (ends any of the states above).
* `Goodbye` means the worker takes no new jobs; a job it holds still runs to its end, after which
  the broker forgets the worker.
* `ProfileInfo` updates what /health shows about the worker's login (its cookie expiry after
  the worker saved a refreshed storage state); it has no effect on jobs or states.
* Account leases (docs/sessions.md): `LeaseRequest` (front) → `Lease` (an idle or logged-out
  worker, then state "leased", no jobs) → `Leased` (its browser's CDP URL) → `LeaseGranted`
  (front); `LeaseEnd` (front, or the broker at the lease's deadline) → the worker resets its
  browser, reports its account state and sends `Idle`. Refusals and ends the front did not ask
  for reach it as `Failed(lease_id, ...)`.
* The front sees `Assigned` (which profile serves the job), then the worker's `Chunk`s and `Done`
  forwarded byte for byte, or a `Failed` from the broker. The front pings the broker with `Ping`;
  `Pong.broker_id` changes when the broker restarts; the front then asks the new broker with
  `JobsQuery` which of its in-flight jobs it holds, and fails the others (they died with the old
  broker).
"""

from __future__ import annotations

from typing import Union

import msgspec

PROTOCOL_VERSION = 1


class _Msg(msgspec.Struct, tag=True, array_like=True, frozen=True):
    """Base of every top-level wire message (tag = class name)."""


class _Part(msgspec.Struct, array_like=True, frozen=True):
    """Base of nested, untagged parts of messages."""


# ---------------------------------------------------------------------------- nested parts


class Attachment(_Part):
    """A file that goes with a message (an image, a PDF), already fetched and checked by the
    front: the worker uploads it to the page as it is."""

    name: str
    mime: str
    data: bytes


class ChatMessage(_Part):
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    attachments: tuple[Attachment, ...] = ()


class JobSpec(_Part):
    """What a worker must produce: one chat completion."""

    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    reasoning_effort: str | None = None


class Usage(_Part):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0


class ErrorInfo(_Part):
    """A failure, saying whose fault it is (`kind`) and the HTTP status the front should use."""

    kind: str  # see ERROR_KINDS
    message: str
    status: int = 502
    retry_after_s: float | None = None


# kind -> default HTTP status. "Whose fault" is in the name: the client, the pool, an account,
# the site (AI Studio / the simulator), or our own bug.
ERROR_KINDS: dict[str, int] = {
    "bad_request": 400,  # client: the request cannot be served as asked
    "model_not_found": 404,  # client: no worker of the pool serves that model
    "queue_full": 429,  # pool: too many requests waiting
    "queue_timeout": 503,  # pool: no worker became free before the deadline
    "no_workers": 503,  # pool: nobody registered can serve this model
    "worker_died": 502,  # pool: the worker holding the job vanished
    "broker_lost": 503,  # pool: the broker restarted or went silent mid-job
    "rate_limited": 429,  # account: quota / too many requests
    "paused": 503,  # account: the site refused it (permission denied / bot check)
    "logged_out": 503,  # account: the session cookie is no longer valid
    "needs_consent": 503,  # account: the terms of service must be accepted on the page
    "broken": 502,  # account/browser: the worker cannot continue
    "site": 502,  # site: the page misbehaved (a step failed)
    "timeout": 504,  # site: a step took too long
    "cancelled": 499,  # client: cancelled by the client
    "internal": 500,  # our bug
}


def error(kind: str, message: str, *, retry_after_s: float | None = None) -> ErrorInfo:
    """An ErrorInfo with the default status of its kind."""
    return ErrorInfo(kind, message, ERROR_KINDS.get(kind, 502), retry_after_s)


class WorkerStatus(_Part):
    profile_id: str
    state: str  # idle | busy | cooling | paused | logged_out | needs_consent | draining | leased
    since_s: float  # seconds in this state
    jobs_served: int
    last_error: str | None
    pid: int
    engine: str
    account: str
    models: tuple[str, ...]
    job_id: str | None = None
    cooldown_remaining_s: float | None = None  # time left in "cooling" or "paused"
    # Unix time at which the profile's first Google session cookie expires (None: unknown).
    cookie_expires_at: float | None = None
    last_answer_s: float | None = None  # seconds since its last successful answer (None: none)
    cooling: dict[str, float] = {}  # model -> seconds left of its rate-limit cool-down


class ModelUsage(_Part):
    """What one profile did for one model since the broker started (one row of PoolStatus.usage)."""

    profile_id: str
    model: str
    requests: int = 0  # jobs that ended on this profile (done or failed)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = {}  # error kind -> jobs that failed with it


class PoolStatus(_Part):
    broker_id: str
    workers: tuple[WorkerStatus, ...]
    queue_length: int
    counters: dict[str, int]
    usage: tuple[ModelUsage, ...] = ()  # per profile and model


# ---------------------------------------------------------------------------- messages


class Heartbeat(_Msg):
    pass


class Submit(_Msg):
    job_id: str
    spec: JobSpec
    queue_timeout_s: float | None = None  # None: the broker's default


class Cancel(_Msg):
    job_id: str


class Ping(_Msg):
    nonce: int


class StatusQuery(_Msg):
    query_id: int


class JobsQuery(_Msg):
    """Front -> broker, after the front notices a new broker id: which of these jobs do you
    hold? (Submits sent to the new broker before this query have arrived before it.)"""

    query_id: int
    job_ids: tuple[str, ...]


class JobsKnown(_Msg):
    query_id: int
    job_ids: tuple[str, ...]  # the subset of the query that is queued or running here


class Assigned(_Msg):
    job_id: str
    profile_id: str


class NativeCall(_Part):
    """A function call the page's answer made itself (part index 10), arguments as JSON text."""

    name: str
    arguments: str = "{}"


class Chunk(_Msg):
    job_id: str
    seq: int
    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[NativeCall, ...] = ()


class Done(_Msg):
    job_id: str
    finish_reason: str = "stop"  # stop | length | cancelled | tool_calls
    usage: Usage | None = None


class Failed(_Msg):
    job_id: str
    error: ErrorInfo


class Pong(_Msg):
    nonce: int
    broker_id: str


class StatusReply(_Msg):
    query_id: int
    status: PoolStatus


class Ready(_Msg):
    version: int
    profile_id: str
    pid: int
    incarnation: str
    engine: str = ""
    account: str = ""
    models: tuple[str, ...] = ()
    unusable: ErrorInfo | None = None  # e.g. logged out at start: registered but out of rotation
    cookie_expires_at: float | None = None  # Unix time the first session cookie expires


class Started(_Msg):
    job_id: str


class JobFailed(_Msg):
    job_id: str
    error: ErrorInfo
    output_sent: bool


class AccountState(_Msg):
    error: ErrorInfo | None  # None: usable again
    model: str | None = None  # rate_limited for this model only; None: the whole account


class Idle(_Msg):
    """The worker has finished (and reset after) its job and can take the next one."""


class Goodbye(_Msg):
    reason: str


class ProfileInfo(_Msg):
    """Worker -> broker, outside a job: the profile's login changed (a refreshed storage state
    was saved) while registered; it never changes the worker's state."""

    cookie_expires_at: float | None = None


class Assign(_Msg):
    job_id: str
    spec: JobSpec


class Disconnect(_Msg):
    reason: str


# ---------------------------------------------------------------------------- account leases
# An operator borrows an idle (or logged-out) account's own browser over CDP, e.g. to log it in
# again on a headless server (docs/sessions.md "Account leases"). The worker is held from
# `Lease` until its `Idle`, like a job: it takes no job meanwhile. A refusal or the end of a
# lease the front did not ask for reaches the front as `Failed(lease_id, ...)`.


class LeaseRequest(_Msg):
    """Front -> broker: lease the browser of `profile_id` for at most `timeout_s`."""

    lease_id: str
    profile_id: str
    timeout_s: float


class LeaseGranted(_Msg):
    """Broker -> front: the account's browser answers CDP at `ws_url` (loopback of its host)."""

    lease_id: str
    profile_id: str
    ws_url: str


class LeaseEnd(_Msg):
    """Front -> broker -> worker: give the browser back (the worker resets it, then `Idle`)."""

    lease_id: str


class Lease(_Msg):
    """Broker -> worker: open your browser to a CDP client."""

    lease_id: str


class Leased(_Msg):
    """Worker -> broker: the browser's CDP endpoint for the lease."""

    lease_id: str
    ws_url: str


class LeaseFailed(_Msg):
    """Worker -> broker: this worker cannot be leased (e.g. its engine has no CDP endpoint)."""

    lease_id: str
    error: ErrorInfo


FrontToBroker = Union[Submit, Cancel, Ping, StatusQuery, JobsQuery, LeaseRequest, LeaseEnd]
BrokerToFront = Union[Assigned, Chunk, Done, Failed, Pong, StatusReply, JobsKnown, LeaseGranted]
WorkerToBroker = Union[
    Ready, Heartbeat, Started, Chunk, Done, JobFailed, Idle, AccountState, Goodbye, ProfileInfo,
    Leased, LeaseFailed,
]
BrokerToWorker = Union[Assign, Cancel, Heartbeat, Disconnect, Lease, LeaseEnd]

DecodeError = msgspec.DecodeError


def encoder() -> msgspec.msgpack.Encoder:
    """One encoder per socket (msgspec encoders are cheap but not free to build)."""
    return msgspec.msgpack.Encoder()


def decoder(direction: object) -> msgspec.msgpack.Decoder:
    """A decoder for one direction's union, e.g. `decoder(WorkerToBroker)`."""
    return msgspec.msgpack.Decoder(direction)
