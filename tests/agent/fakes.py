"""Test doubles for the agent: a fake clock, a recording app server (real aiohttp, loopback)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import free_port


class FakeClock:
    """Wall time that moves only when a test calls :meth:`advance`."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, fut)
        self._sleepers.append(entry)
        try:
            await fut
        finally:
            self._sleepers.remove(entry)

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, fut in list(self._sleepers):
            if deadline <= self.now and not fut.done():
                fut.set_result(None)
        for _ in range(20):  # let woken tasks run their step
            await asyncio.sleep(0)

    @property
    def sleeping(self) -> int:
        return len(self._sleepers)


@dataclass
class AppServer:
    """A local app with an apply hook and a reload endpoint that record what they got."""

    url: str
    status: int = 200
    reload_status: int = 204
    applied: list[dict[str, Any]] = field(default_factory=list)
    reloads: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def app_server() -> AsyncIterator[AppServer]:
    port = free_port()
    srv = AppServer(url=f"http://127.0.0.1:{port}")

    async def apply(request: web.Request) -> web.Response:
        srv.applied.append(json.loads(await request.read()))
        return web.Response(status=srv.status, text="applied")

    async def reload(request: web.Request) -> web.Response:
        srv.reloads.append(json.loads(await request.read()))
        return web.Response(status=srv.reload_status)

    app = web.Application()
    app.router.add_post("/apply", apply)
    app.router.add_post("/reload", reload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield srv
    finally:
        await runner.cleanup()
