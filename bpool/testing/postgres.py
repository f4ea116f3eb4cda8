"""A throwaway PostgreSQL server for tests: initdb into a temporary directory, listen on a free
loopback port and a private unix socket directory, stop and delete everything at the end.

PostgreSQL refuses to run as root; as root the server runs as the `postgres` user the Debian
package creates (or `nobody`), which owns the temporary directory. `PostgresServer.unavailable()`
says why a server cannot be started here (for a visible skip), None when it can.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "bpool"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as: None for ourselves when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and there is neither a postgres nor a nobody user")


class PostgresServer:
    def __init__(self) -> None:
        self.base: Path | None = None
        self.port = 0
        self.user = _run_as()

    @staticmethod
    def unavailable() -> str | None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (PG_BIN / tool).exists():
                return f"no PostgreSQL binaries at {PG_BIN} ({tool} missing)"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root and runuser is missing (PostgreSQL refuses root)"
        try:
            _run_as()
        except RuntimeError as exc:
            return str(exc)
        return None

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user.pw_name, "--", *args] if self.user else list(args)

    def _check(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout,
                              cwd=self.base)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}\n{self.log_tail()}")

    def start(self) -> "PostgresServer":
        # Not under pytest's tmp dirs: those are 0700 root-owned, and the server user must
        # reach its data directory.
        self.base = Path(tempfile.mkdtemp(prefix="bpool-pg-"))
        if self.user:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.base.chmod(0o700)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        assert self.base is not None
        data, sockets = self.base / "data", self.base / "sock"
        self._check(str(PG_BIN / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                    "-E", "UTF8", "--no-instructions", "--no-sync")
        self._check("mkdir", "-m", "0700", str(sockets))
        self.port = _free_port()
        options = (f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._check(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.base / "server.log"),
                    "-o", options, "-w", "-t", "120", "start")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    async def new_database(self) -> str:
        """A fresh, empty database on this server; its URL."""
        import asyncpg

        name = "t_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        log = self.base / "server.log" if self.base else None
        if log is None or not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.base is None:
            return
        data = self.base / "data"
        pidfile = data / "postmaster.pid"
        if pidfile.exists():
            try:
                subprocess.run(self._cmd(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m",
                                         "immediate", "-w", "-t", "60", "stop"),
                               capture_output=True, timeout=90)
            except subprocess.TimeoutExpired:
                pass
        if pidfile.exists():  # pg_ctl could not stop it: the server must not outlive the tests
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None
