"""Both origins of the simulator bound and running: the page and the RPC host, on two ports of one
host (cookies are per host, not per port, so a profile's session reaches both).

`SimServer` runs inside the caller's event loop (cli.serve); `ThreadedSim` runs one in a thread of
its own, for tests that want a server shared by many test functions.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from aiohttp import web

from bpool.sim.accounts import AccountBook, accounts_path
from bpool.sim.app import create_page_app
from bpool.sim.context import Origins, Shared
from bpool.sim.rpc import create_rpc_app
from bpool.sim.settings import SimSettings
from bpool.sim.state import SimState


class SimServer:
    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.shared = Shared(settings, SimState(settings.knobs),
                             AccountBook(accounts_path(settings.dir)), Origins())
        self._runners: list[web.AppRunner] = []

    @property
    def url(self) -> str:
        return self.shared.origins.page

    @property
    def rpc_url(self) -> str:
        return self.shared.origins.rpc

    async def _bind(self, app: web.Application, port: int) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.settings.host, port).start()
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        return f"http://{host}:{runner.addresses[0][1]}"

    async def start(self) -> SimServer:
        try:
            self.shared.origins.rpc = await self._bind(create_rpc_app(self.shared),
                                                       self.settings.rpc_port)
            self.shared.origins.page = await self._bind(create_page_app(self.shared),
                                                        self.settings.port)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ThreadedSim:
    """A SimServer on its own event loop thread; `stop()` (or `with`) ends it."""

    def __init__(self, settings: SimSettings) -> None:
        self.server = SimServer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bpool-sim", daemon=True)
        self._thread.start()
        self._call(self.server.start())

    def _call(self, coro) -> object:
        fut: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout=30)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def rpc_url(self) -> str:
        return self.server.rpc_url

    @property
    def state(self) -> SimState:
        return self.server.shared.state

    def stop(self) -> None:
        if self._loop.is_running():
            self._call(self.server.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ThreadedSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
