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
and closed after 75 s idle. It listens without authentication, so everything a client sends is
bounded: request line and headers to 8 KiB, a request to 10 s from its first byte, an answer the
client does not read to 10 s, and 32 connections at once (the oldest idle one gives way to a new
one); the memory they hold goes with them.

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
MAX_HEAD = 8 * 1024
"""Bytes of request line and headers (h11's ``max_incomplete_event_size`` while incomplete, then
checked whole; 431 past it): the routes need a few hundred; nginx's default buffer is 8 KiB.
Up to 128 KiB were taken before."""
MAX_CONNECTIONS = 32
"""Open connections at once: probes, a scraper and a local client need a handful. At the cap, a
new connection closes the oldest one still waiting for a request (a slow or idle client), so a
flood of idle connections cannot lock the probes out; if none waits, the new one gets 503."""
REQUEST_TIMEOUT = 10.0
"""Seconds from a request's first byte to its last (slow headers, slowloris)."""
WRITE_TIMEOUT = 10.0
"""Seconds an answer may wait for a client that does not read it; then the connection is
dropped with what it holds."""
READ_SIZE = 8 * 1024
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


class _Deadline:
    """When the request being read must be complete: ``KEEPALIVE`` until its first byte, then
    at most ``REQUEST_TIMEOUT`` more."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.at = self.loop.time() + KEEPALIVE
        self.started = False

    def got_data(self) -> None:
        if not self.started:
            self.started = True
            self.at = min(self.at, self.loop.time() + REQUEST_TIMEOUT)


async def _read_event(
    conn: h11.Connection, reader: asyncio.StreamReader, deadline: _Deadline
) -> h11.Event:
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:
            raise _Closed("paused")  # pipelined requests are read one cycle at a time
        try:
            async with asyncio.timeout_at(deadline.at):
                data = await reader.read(READ_SIZE)
        except (TimeoutError, ConnectionError) as e:
            raise _Closed(type(e).__name__) from None
        deadline.got_data()
        conn.receive_data(data)


async def _drain(writer: asyncio.StreamWriter) -> None:
    """Wait until the client took the answer; one that does not read in WRITE_TIMEOUT is
    dropped with what is buffered for it."""
    try:
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()
    except TimeoutError:
        writer.transport.abort()
        raise _Closed("the client does not read") from None


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


def _head_size(request: h11.Request) -> int:
    """The bytes of a request line and headers, as sent (give or take whitespace)."""
    line = len(request.method) + len(request.target) + 11
    return line + sum(len(k) + len(v) + 4 for k, v in request.headers.raw_items())


async def _request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, str] | None:
    """The method and target of the next request, its body read (and dropped); None when the
    connection is to be closed (after an answer to a bad or too large request)."""
    deadline = _Deadline()
    try:
        event = await _read_event(conn, reader, deadline)
        if not isinstance(event, h11.Request):
            return None  # closed (or an idle connection that timed out)
        if _head_size(event) > MAX_HEAD:  # h11 bounds only a head still incomplete
            raise h11.RemoteProtocolError("request head too large", 431)
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        size = 0
        while True:
            part = await _read_event(conn, reader, deadline)
            if isinstance(part, h11.Data):
                size += len(part.data)
                if size > MAX_BODY:
                    _send(conn, writer, _json({"error": "body too large"}, 413), False)
                    return None
            elif isinstance(part, h11.EndOfMessage):
                return method, target
            else:
                return None
    except h11.RemoteProtocolError as e:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            answer = _json({"error": f"bad request: {e}"}, e.error_status_hint)
            _send(conn, writer, answer, False)
        return None


async def _handle(
    app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slots: _Slots
) -> None:
    conn = h11.Connection(our_role=h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        while True:
            slots.waiting()
            request = await _request(conn, reader, writer)
            if request is None:
                return
            slots.answering()
            method, target = request
            _send(conn, writer, app.answer(method, target), method == "HEAD")
            await _drain(writer)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (_Closed, ConnectionError, h11.LocalProtocolError):
        return
    finally:
        with contextlib.suppress(Exception):
            await _drain(writer)
        writer.close()


BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Slots:
    """The open connections, at most MAX_CONNECTIONS; those waiting for a request (idle or
    still sending one) in the order they began to wait."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.idle: dict[asyncio.Task[None], None] = {}

    def admit(self) -> bool:
        """Room for one more: at the cap, the longest-waiting connection is closed; False when
        every connection is being answered."""
        if len(self.tasks) - sum(t.cancelling() > 0 for t in self.tasks) < MAX_CONNECTIONS:
            return True
        for task in self.idle:
            if not task.cancelling():
                task.cancel()
                return True
        return False

    def add(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self._gone)

    def _gone(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.idle.pop(task, None)

    def waiting(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.idle.pop(task, None)  # to the end: it begins to wait now
            self.idle[task] = None

    def answering(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.idle.pop(task, None)


class Runner:
    """A served :class:`App`: its listening addresses; :meth:`cleanup` stops it."""

    def __init__(self, app: App, server: asyncio.Server, slots: _Slots) -> None:
        self.app = app
        self.server = server
        self.slots = slots

    @property
    def connections(self) -> set[asyncio.Task[None]]:
        return self.slots.tasks

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
    slots = _Slots()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not slots.admit():
            writer.write(BUSY)
            writer.close()
            return
        slots.add(asyncio.ensure_future(_handle(app, reader, writer, slots)))

    server = await asyncio.start_server(connected, host, port, limit=READ_SIZE)
    runner = Runner(app, server, slots)
    if app.background is not None:
        app.task = asyncio.ensure_future(app.background())
    return runner
