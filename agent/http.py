"""The agent's HTTP/1.1 client: asyncio streams and h11, with keep-alive (no aiohttp).

Used by :mod:`agent.kube` (the Kubernetes API: TLS with the service-account CA, long watches
read as a stream) and :mod:`agent.hooks` (apply hook and reload POSTs to a loopback URL).

Why not aiohttp, which the webhook and the controller use: the agent is the one part that runs
in every annotated pod, so its memory is paid once per pod. Measured with
``bench/agent_kube_client.py`` (fresh interpreter per line, median of 5, VmHWM): ``asyncio``,
``ssl`` and ``prometheus_client`` together peak at about 25.5 MiB, adding ``h11`` costs about
0.4 MiB, while ``import aiohttp`` alone peaks at about 34.8 MiB. h11 (from the authors of
Trio/httpx, the protocol core of httpcore and uvicorn) does the parsing and framing that is
easy to get wrong (chunked bodies, keep-alive rules, ``Connection: close``); this module only
moves bytes between it and an asyncio stream and keeps idle connections for reuse.

Errors: a connection that cannot be opened, closes early, breaks the protocol or times out
raises :class:`HttpError` (an :class:`OSError`) or :class:`TimeoutError` (also an ``OSError``).
An HTTP status is never an error here; the callers decide what it means.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import h11

READ_SIZE = 65536
MAX_IDLE = 4
"""Idle keep-alive connections kept per :class:`Pool` (a watch holds its own while it runs)."""


class HttpError(OSError):
    """The connection failed or the peer broke HTTP/1.1 (never carries a body)."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    """Lower-case names; the last value of a repeated header."""
    body: bytes


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


class Connection:
    """One HTTP/1.1 connection: send a request, read its answer, maybe reuse it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.received = False  # any byte of an answer arrived on this request cycle

    @classmethod
    async def open(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None, seconds: float
    ) -> Connection:
        try:
            async with asyncio.timeout(seconds):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None,
                    limit=READ_SIZE,
                )
        except TimeoutError:
            raise TimeoutError(f"connecting to {host}:{port} timed out") from None
        except ssl.SSLError as e:
            raise HttpError(f"TLS with {host}:{port} failed: {e.reason or e}") from None
        return cls(reader, writer)

    @property
    def idle_and_open(self) -> bool:
        """Reusable: the last cycle ended cleanly and the peer has not closed the socket."""
        return (
            self.h11.our_state is h11.IDLE
            and self.h11.their_state is h11.IDLE
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> None:
        if body is not None:
            headers = [*headers, ("Content-Length", str(len(body)))]
        try:
            self.writer.write(
                self.h11.send(h11.Request(method=method, target=target, headers=headers))
            )
            if body:
                self.writer.write(self.h11.send(h11.Data(data=body)))
            self.writer.write(self.h11.send(h11.EndOfMessage()))
            await self.writer.drain()
        except h11.ProtocolError as e:
            raise HttpError(f"cannot send the request: {e}") from None

    async def _event(self, deadline: float | None) -> h11.Event:
        while True:
            try:
                event = self.h11.next_event()
            except h11.ProtocolError as e:
                raise HttpError(f"bad answer: {e}") from None
            if event is h11.PAUSED:
                raise HttpError("the connection is paused (an answer after the answer?)")
            if isinstance(event, h11.Event):
                return event
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self.reader.read(READ_SIZE)
            except ssl.SSLError as e:
                raise HttpError(f"TLS error: {e.reason or e}") from None
            if data:
                self.received = True
            try:
                self.h11.receive_data(data)  # b"": the peer closed the connection
            except h11.ProtocolError as e:
                raise HttpError(f"bad answer: {e}") from None

    async def response(self, deadline: float | None) -> tuple[int, dict[str, str]]:
        """The status and headers of the answer (informational 1xx answers skipped)."""
        while True:
            event = await self._event(deadline)
            if isinstance(event, h11.Response):
                return event.status_code, _headers(event.headers)
            if isinstance(event, h11.ConnectionClosed):
                raise HttpError("the server closed the connection without an answer")
            if not isinstance(event, h11.InformationalResponse):
                raise HttpError(f"unexpected {type(event).__name__} before the answer")

    async def chunks(self, deadline: float | None) -> AsyncIterator[bytes]:
        """The body as it arrives; then the connection is ready for the next request or done."""
        while True:
            event = await self._event(deadline)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise HttpError("the server closed the connection in the middle of an answer")
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.received = False

    async def read_body(self, deadline: float | None) -> bytes:
        parts = [c async for c in self.chunks(deadline)]
        return b"".join(parts)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class Pool:
    """Keep-alive connections to one origin (``http://`` or ``https://host:port``).

    :meth:`request` reads a whole answer and returns the connection to the pool;
    :meth:`stream` keeps one connection for as long as the caller reads (watches).
    """

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == default else f"{host}:{self.port}"
        if self.tls and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self.ssl_context = ssl_context if self.tls else None
        self._idle: list[Connection] = []
        self._busy: set[Connection] = set()

    def target(self, path: str, params: Mapping[str, str] | None = None) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.prefix}{path}{query}"

    async def _connection(self, connect_timeout: float) -> tuple[Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_and_open:
                return conn, True
            conn.close()
        return await Connection.open(self.host, self.port, self.ssl_context, connect_timeout), False

    def _release(self, conn: Connection) -> None:
        self._busy.discard(conn)
        if conn.idle_and_open and len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    async def _start(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        connect_timeout: float,
        deadline: float | None,
    ) -> tuple[Connection, int, dict[str, str]]:
        """Send the request and read the answer's head, on a pooled connection if one is left.

        A kept connection the server closed while idle fails before any answer arrives; the
        request is then sent once more on a new connection (the server never saw the first).
        """
        sent = [("Host", self.authority), *headers.items()]
        for attempt in (0, 1):
            conn, reused = await self._connection(connect_timeout)
            self._busy.add(conn)
            try:
                await conn.send(method, target, sent, body)
                status, head = await conn.response(deadline)
            except (HttpError, ConnectionError) as e:
                self._busy.discard(conn)
                conn.close()
                if reused and not conn.received and attempt == 0:
                    continue
                if isinstance(e, HttpError):
                    raise
                raise HttpError(str(e) or type(e).__name__) from None
            except BaseException:
                self._busy.discard(conn)
                conn.close()
                raise
            return conn, status, head
        raise AssertionError("unreachable")  # pragma: no cover

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        seconds: float,
    ) -> Response:
        """One request and its whole answer within ``seconds`` (connecting included)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            async with asyncio.timeout_at(deadline):
                conn, status, head = await self._start(
                    method, target, headers or {}, body, seconds, deadline
                )
                try:
                    data = await conn.read_body(deadline)
                except BaseException:
                    conn.close()
                    self._busy.discard(conn)
                    raise
        except TimeoutError:
            raise TimeoutError(f"no answer in {seconds:g} s") from None
        except ConnectionError as e:
            raise HttpError(str(e) or type(e).__name__) from None
        self._release(conn)
        return Response(status, head, data)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float,
        deadline: float | None,
    ) -> AsyncIterator[tuple[int, dict[str, str], AsyncIterator[bytes]]]:
        """``(status, headers, body chunks)`` of one request, read while the block runs.

        Every read waits at most until ``deadline`` (a loop time), then raises TimeoutError;
        the caller's own awaits between chunks are never cut short.
        """
        try:
            conn, status, head = await self._start(
                method, target, headers or {}, None, connect_timeout, deadline
            )
        except ConnectionError as e:
            raise HttpError(str(e) or type(e).__name__) from None
        try:
            yield status, head, conn.chunks(deadline)
        except ConnectionError as e:
            conn.close()
            raise HttpError(str(e) or type(e).__name__) from None
        except BaseException:
            conn.close()
            raise
        finally:
            self._release(conn)

    async def close(self) -> None:
        conns = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()


async def post_json(url: str, body: bytes, seconds: float, pool: Pool | None = None) -> int:
    """POST a JSON body to ``url``; the answer's status (the body is read and dropped)."""
    pool = pool or Pool(url)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    resp = await pool.request(
        "POST",
        target,
        headers={"Content-Type": "application/json"},
        body=body,
        seconds=seconds,
    )
    return resp.status
