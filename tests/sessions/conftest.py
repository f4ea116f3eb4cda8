"""Fixtures of the session tests: one real PostgreSQL server for the whole test run."""

from __future__ import annotations

from typing import Iterator

import pytest

from bpool.testing.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on a free loopback port, stopped and deleted at the end; tests take
    a fresh database each with `await postgres_server.new_database()`. Skipped, with the reason,
    only where no server can be started."""
    reason = PostgresServer.unavailable()
    if reason:
        pytest.skip(f"no PostgreSQL server for these tests: {reason}")
    server = PostgresServer()
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"PostgreSQL did not start: {exc}")
    yield server
    server.stop()
