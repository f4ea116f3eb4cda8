"""Fixtures of the tests that drive a browser session with a CDP client (Playwright in
tests/test_cdp.py, Puppeteer in tests/test_puppeteer.py): a module imports the ones it uses."""

from __future__ import annotations

from typing import Iterator

import pytest

from sessions.harness import SessionPool


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionPool]:
    """One pool with one session host (room for 3 browsers) per test module: Chromium is the
    expensive part."""
    p = SessionPool(tmp_path_factory.mktemp("cdp"), {"h1": 3})
    try:
        yield p
    finally:
        p.close()
