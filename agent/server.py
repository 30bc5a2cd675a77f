"""The agent's HTTP server (aiohttp): metrics, health, readiness and, on loopback, rotate-now.

=================  ======================================================================
``GET /metrics``   Prometheus text format, from the registry passed in
``GET /healthz``   200 while the process runs
``GET /readyz``    200 once every secret has its first value in its files; 503 otherwise,
                   with the names of the secrets still waiting
``POST /rotate``   rotate now: every secret, or one with ``?secret=NAME`` (202; 404 for an
                   unknown name). Only when the app is built with ``allow_rotate=True``, which
                   standalone mode does when it listens on a loopback address only.
=================  ======================================================================

Handlers only decode, call the agent and encode; an unexpected error becomes a JSON 500 in one
middleware and its text is logged, never a value (the agent never puts values in exceptions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("rotor.agent.server")


class AgentView(Protocol):
    def readiness(self) -> dict[str, bool]: ...

    def request_rotation(self, name: str | None = None) -> list[str]: ...


REGISTRY = web.AppKey("registry", CollectorRegistry)
AGENT = web.AppKey("agent", AgentView)
BACKGROUND = web.AppKey("background", asyncio.Task[None])


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as e:
        log.error("%s %s failed: %s", request.method, request.path, type(e).__name__)
        return web.json_response({"error": "internal error"}, status=500)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[AGENT].readiness()
    waiting = sorted(name for name, ok in ready.items() if not ok)
    if waiting:
        return web.json_response({"ready": False, "waiting": waiting}, status=503)
    return web.json_response({"ready": True, "secrets": sorted(ready)})


async def rotate(request: web.Request) -> web.Response:
    name = request.query.get("secret") or None
    try:
        names = request.app[AGENT].request_rotation(name)
    except KeyError:
        return web.json_response(
            {
                "error": f"no secret named {name!r}",
                "secrets": sorted(request.app[AGENT].readiness()),
            },
            status=404,
        )
    return web.json_response({"rotating": names}, status=202)


def make_app(
    registry: CollectorRegistry,
    agent: AgentView,
    *,
    allow_rotate: bool = False,
    background: Callable[[], Awaitable[None]] | None = None,
) -> web.Application:
    """The app; ``background`` (e.g. the agent's rotation loop) runs while the app runs."""
    app = web.Application(middlewares=[_errors])
    app[REGISTRY] = registry
    app[AGENT] = agent
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if allow_rotate:
        app.router.add_post("/rotate", rotate)
    if background is not None:
        run = background

        async def run_background(app: web.Application) -> AsyncIterator[None]:
            app[BACKGROUND] = asyncio.ensure_future(run())
            yield
            app[BACKGROUND].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app[BACKGROUND]

        app.cleanup_ctx.append(run_background)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on ``host:port``; the caller awaits ``runner.cleanup()`` to stop it."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
