"""ZeroMQ CURVE keys for workers on other hosts.

The broker's ipc sockets never leave the machine. To take workers on other hosts it additionally
binds `BPOOL_BROKER_TCP` (e.g. `tcp://0.0.0.0:5555`), and only with CURVE: the broker proves who it
is with its server key pair, and only workers whose public key is in the allowed-clients directory
may connect (ZAP, via pyzmq's authenticator thread). Key files are pyzmq's certificate format
(`NAME.key` public, `NAME.key_secret` secret, written 0600).

    python -m bpool.wire.curve generate --dir keys --name server      # once, on the broker host
    python -m bpool.wire.curve generate --dir keys --name host2       # once per worker host
    cp keys/server.key_secret <BPOOL_CURVE_DIR>/  and  cp keys/host2.key <BPOOL_CURVE_DIR>/clients/

Broker:  BPOOL_BROKER_TCP=tcp://0.0.0.0:5555  BPOOL_CURVE_DIR=dir holding server.key_secret and
         clients/*.key (default <run dir>/curve)
Worker:  BPOOL_BROKER_WORKERS=tcp://broker-host:5555  BPOOL_CURVE_SERVER_KEY=.../server.key
         BPOOL_CURVE_CLIENT_KEY=.../host2.key_secret
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from bpool import config


class CurveError(Exception):
    """Keys are missing or unreadable: a configuration error, the operator's to fix."""


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret, both 0600 from the moment they exist (a umask, not a
    chmod afterwards), into a private scratch directory first and then linked into place: an
    existing key pair is never overwritten, and no half-written key is ever visible."""
    directory.mkdir(parents=True, exist_ok=True)
    targets = (directory / f"{name}.key", directory / f"{name}.key_secret")
    for t in targets:
        if t.exists():
            raise CurveError(f"{t} exists: remove it first to replace the key pair")
    old = os.umask(0o077)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".keys-", dir=directory))
        try:
            made = zmq.auth.create_certificates(str(scratch), name)
            done: list[Path] = []
            try:
                for src, dst in zip(made, targets):
                    os.link(src, dst)  # fails if dst appeared meanwhile
                    done.append(dst)
            except FileExistsError as exc:
                for d in done:
                    d.unlink()
                raise CurveError(f"{exc.filename2 or exc.filename} exists: remove it first to "
                                 "replace the key pair") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        os.umask(old)
    return targets


def _load(path: Path, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read CURVE key {path}: {exc}") from None
    if need_secret and not secret:
        raise CurveError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def curve_dir() -> Path:
    return Path(config.value("BPOOL_CURVE_DIR") or config.run_dir() / "curve")


@dataclass
class CurveServer:
    """The broker's tcp side: server keys plus a ZAP authenticator for the allowed clients."""

    public: bytes
    secret: bytes
    clients_dir: Path
    auth: ThreadAuthenticator | None = None

    @classmethod
    def load(cls, directory: Path) -> "CurveServer":
        public, secret = _load(directory / "server.key_secret", need_secret=True)
        clients = directory / "clients"
        if not clients.is_dir() or not any(clients.glob("*.key")):
            raise CurveError(f"no allowed worker keys in {clients} (copy each worker's .key there)")
        return cls(public, secret, clients)

    def start(self, ctx: zmq.Context) -> None:
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(self.clients_dir))

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()


def client_keys_from_env() -> tuple[bytes, bytes, bytes] | None:
    """(server public, client public, client secret) for a worker, or None for plain ipc."""
    server_key = config.value("BPOOL_CURVE_SERVER_KEY")
    client_key = config.value("BPOOL_CURVE_CLIENT_KEY")
    if not server_key and not client_key:
        return None
    if not (server_key and client_key):
        raise CurveError("set both BPOOL_CURVE_SERVER_KEY and BPOOL_CURVE_CLIENT_KEY")
    server_public, _ = _load(Path(server_key), need_secret=False)
    client_public, client_secret = _load(Path(client_key), need_secret=True)
    assert client_secret is not None
    return server_public, client_public, client_secret


_LOCAL_TRANSPORTS = ("ipc://", "inproc://")


def refuse_plain(variable: str, endpoint: str, why: str) -> None:
    """An endpoint other hosts can reach must be CURVE-protected: without it anyone who reaches
    the port could serve (and read) or submit jobs. Raises CurveError naming the setting."""
    if not is_local(endpoint):
        raise CurveError(f"{variable}={endpoint} would be reachable from other hosts without "
                         f"CURVE ({why}); keep it on ipc:// (the default) and give workers on "
                         "other hosts BPOOL_BROKER_TCP with CURVE keys (docs/operations.md)")


def server_for(variable: str, endpoint: str, directory: Path) -> "CurveServer | None":
    """The CURVE server keys a non-local `endpoint` needs (None for ipc); CurveError naming
    the setting when they are missing."""
    if is_local(endpoint):
        return None
    try:
        return CurveServer.load(directory)
    except CurveError as exc:
        raise CurveError(f"{variable}={endpoint} needs CURVE keys: {exc}") from None


def is_local(endpoint: str) -> bool:
    return endpoint.startswith(_LOCAL_TRANSPORTS)


def apply_client(sock: zmq.Socket, keys: tuple[bytes, bytes, bytes]) -> None:
    server_public, client_public, client_secret = keys
    sock.curve_serverkey = server_public
    sock.curve_publickey = client_public
    sock.curve_secretkey = client_secret


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpool.wire.curve", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="write NAME.key and NAME.key_secret into --dir")
    gen.add_argument("--dir", type=Path, required=True)
    gen.add_argument("--name", required=True)
    args = ap.parse_args(argv)
    public, secret = generate(args.dir, args.name)
    print(f"public key: {public}\nsecret key: {secret} (keep it on this host only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
