"""The agent's HTTP server: metrics, health, readiness and, on loopback, rotate-now.

=================  ======================================================================
``GET /metrics``   Prometheus text format, from the registry passed in
``GET /healthz``   200 while the process runs
``GET /readyz``    200 once every secret has its first value in its files; 503 otherwise,
                   with the names of the secrets still waiting
``POST /rotate``   rotate now: every secret, or one with ``?secret=NAME`` (202; 404 for an
                   unknown name). Only when the app is built with ``allow_rotate=True``, which
                   standalone mode does when it listens on a loopback address only.
=================  ======================================================================

Handlers only decode, call the agent and encode; an unexpected error becomes a JSON 500 and its
type is logged, never a value (the agent never puts values in exceptions). ``HEAD`` is answered
for every ``GET`` route; another method on a known path is 405 (with ``Allow``), an unknown path
404, a request h11 cannot parse 400, a body over 64 KiB 413. Connections are kept alive (HTTP/1.1)
and closed after 75 s idle.

Built on asyncio streams and h11 rather than aiohttp: the agent runs in every annotated pod and
``import aiohttp`` alone peaks at about 34.8 MiB, where ``asyncio``, ``ssl``, ``prometheus_client``
and ``h11`` together stay near 26 MiB (``bench/agent_footprint.py``, docs/benchmarks.md). The
four routes need no more than h11's parser and framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("rotor.agent.server")

KEEPALIVE = 75.0
"""Seconds an idle connection is kept open (aiohttp's default, which this server replaced)."""
MAX_BODY = 64 * 1024
READ_SIZE = 65536
JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


class AgentView(Protocol):
    def readiness(self) -> dict[str, bool]: ...

    def request_rotation(self, name: str | None = None) -> list[str]: ...


BACKGROUND = "background"
"""``app[BACKGROUND]``: the task running the app's ``background`` while it is served."""


Answer = tuple[int, str, bytes, dict[str, str]]
"""``(status, content type, body, extra headers)``."""


def _json(doc: Any, status: int = 200) -> Answer:
    return status, JSON, json.dumps(doc).encode(), {}


class App:
    """The routes of one agent; :func:`serve` puts them on a port."""

    def __init__(
        self,
        registry: CollectorRegistry,
        agent: AgentView,
        *,
        allow_rotate: bool = False,
        background: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.registry = registry
        self.agent = agent
        self.background = background
        self.task: asyncio.Task[None] | None = None
        self.routes: dict[str, dict[str, Callable[[dict[str, list[str]]], Answer]]] = {
            "/metrics": {"GET": self.metrics},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
        }
        if allow_rotate:
            self.routes["/rotate"] = {"POST": self.rotate}

    def __getitem__(self, key: str) -> asyncio.Task[None]:
        if key != BACKGROUND or self.task is None:
            raise KeyError(key)
        return self.task

    def metrics(self, _query: dict[str, list[str]]) -> Answer:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry), {}

    def healthz(self, _query: dict[str, list[str]]) -> Answer:
        return 200, TEXT, b"ok\n", {}

    def readyz(self, _query: dict[str, list[str]]) -> Answer:
        ready = self.agent.readiness()
        waiting = sorted(name for name, ok in ready.items() if not ok)
        if waiting:
            return _json({"ready": False, "waiting": waiting}, 503)
        return _json({"ready": True, "secrets": sorted(ready)})

    def rotate(self, query: dict[str, list[str]]) -> Answer:
        name = (query.get("secret") or [""])[-1] or None
        try:
            names = self.agent.request_rotation(name)
        except KeyError:
            return _json(
                {"error": f"no secret named {name!r}", "secrets": sorted(self.agent.readiness())},
                404,
            )
        return _json({"rotating": names}, 202)

    def answer(self, method: str, target: str) -> Answer:
        """The answer to one request (never raises: a failing handler is a JSON 500)."""
        url = urlsplit(target)
        methods = self.routes.get(url.path)
        if methods is None:
            return _json({"error": f"no route {url.path}"}, 404)
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allow = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            status, ctype, body, _ = _json({"error": f"{method} is not allowed here"}, 405)
            return status, ctype, body, {"Allow": allow}
        try:
            return handler(parse_qs(url.query))
        except Exception as e:
            log.error("%s %s failed: %s", method, url.path, type(e).__name__)
            return _json({"error": "internal error"}, 500)


def make_app(
    registry: CollectorRegistry,
    agent: AgentView,
    *,
    allow_rotate: bool = False,
    background: Callable[[], Awaitable[None]] | None = None,
) -> App:
    """The app; ``background`` (e.g. the agent's rotation loop) runs while the app is served."""
    return App(registry, agent, allow_rotate=allow_rotate, background=background)


class _Closed(Exception):
    """The client went away or broke the protocol; the connection is dropped."""


async def _read_event(conn: h11.Connection, reader: asyncio.StreamReader, idle: float) -> h11.Event:
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:
            raise _Closed("paused")  # pipelined requests are read one cycle at a time
        try:
            async with asyncio.timeout(idle):
                data = await reader.read(READ_SIZE)
        except (TimeoutError, ConnectionError) as e:
            raise _Closed(type(e).__name__) from None
        conn.receive_data(data)


def _send(conn: h11.Connection, writer: asyncio.StreamWriter, answer: Answer, head: bool) -> None:
    status, ctype, body, extra = answer
    headers = [
        ("Content-Type", ctype),
        ("Content-Length", str(len(body))),
        *extra.items(),
    ]
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
    if body and not head:
        writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))


async def _handle(app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(our_role=h11.SERVER, max_incomplete_event_size=MAX_BODY)
    try:
        while True:
            try:
                event = await _read_event(conn, reader, KEEPALIVE)
                if not isinstance(event, h11.Request):
                    return  # closed (or an idle connection that timed out)
                method = event.method.decode("ascii", "replace")
                target = event.target.decode("ascii", "replace")
                size = 0
                while True:
                    part = await _read_event(conn, reader, KEEPALIVE)
                    if isinstance(part, h11.Data):
                        size += len(part.data)
                        if size > MAX_BODY:
                            _send(conn, writer, _json({"error": "body too large"}, 413), False)
                            return
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return
            except h11.RemoteProtocolError as e:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    _send(conn, writer, _json({"error": f"bad request: {e}"}, 400), False)
                return
            _send(conn, writer, app.answer(method, target), method == "HEAD")
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (_Closed, ConnectionError, h11.LocalProtocolError):
        return
    finally:
        with contextlib.suppress(Exception):
            await writer.drain()
        writer.close()


class Runner:
    """A served :class:`App`: its listening addresses; :meth:`cleanup` stops it."""

    def __init__(self, app: App, server: asyncio.Server) -> None:
        self.app = app
        self.server = server
        self.connections: set[asyncio.Task[None]] = set()

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for s in self.server.sockets]

    async def cleanup(self) -> None:
        self.server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        await self.server.wait_closed()
        background, self.app.task = self.app.task, None
        if background is not None:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background


async def serve(app: App, host: str, port: int) -> Runner:
    """Start ``app`` on ``host:port`` (0: any free port), then its background; the caller awaits
    ``runner.cleanup()`` to stop both. A port that cannot be bound raises OSError."""
    runner: Runner

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(_handle(app, reader, writer))
        runner.connections.add(task)
        task.add_done_callback(runner.connections.discard)

    server = await asyncio.start_server(connected, host, port, limit=READ_SIZE)
    runner = Runner(app, server)
    if app.background is not None:
        app.task = asyncio.ensure_future(app.background())
    return runner
