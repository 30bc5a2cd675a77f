"""The agent's aiohttp app on a real loopback port: metrics, health, readiness, rotate-now."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from agent.engine import Agent, SecretRotator
from agent.files import AtomicWriter
from agent.metrics import AgentMetrics
from agent.server import make_app, serve
from rotor.settings.agent import AgentSettings
from rotor.spec import RotatingSecretSpec
from tests.agent.fakes import FakeClock
from tests.conftest import free_port, until
from tests.doubles import MemoryStateStore

SPEC = RotatingSecretSpec.from_dict({"keys": [{"name": "pw", "generator": {"type": "uuid"}}]})


def agent_for(tmp_path: Path, registry: CollectorRegistry, names: list[str]) -> Agent:
    metrics = AgentMetrics(registry)
    clock = FakeClock()
    return Agent(
        SecretRotator(
            n,
            SPEC,
            MemoryStateStore(),
            AtomicWriter(tmp_path / n),
            settings=AgentSettings(),
            metrics=metrics,
            clock=clock,
            writer_id="t",
        )
        for n in names
    )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Agent, CollectorRegistry]]:
    registry = CollectorRegistry()
    agent = agent_for(tmp_path, registry, ["db", "api"])
    port = free_port()
    runner = await serve(make_app(registry, agent, allow_rotate=True), "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}", agent, registry
    finally:
        await runner.cleanup()


async def test_ready_only_once_every_secret_has_its_files(
    served: tuple[str, Agent, CollectorRegistry],
) -> None:
    url, agent, _ = served
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz") as r:
            assert r.status == 200
        async with http.get(url + "/readyz") as r:
            assert r.status == 503
            assert (await r.json())["waiting"] == ["api", "db"]
        await agent.rotators["db"].step()
        async with http.get(url + "/readyz") as r:
            assert r.status == 503
            assert (await r.json())["waiting"] == ["api"]
        await agent.start()
        async with http.get(url + "/readyz") as r:
            assert r.status == 200
        async with http.get(url + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=")
            text = await r.text()
    assert 'rotor_agent_secret_version{secret="db"} 1.0' in text
    assert 'rotor_agent_secret_ready{secret="api"} 1.0' in text
    value = agent.rotators["db"].state.current["pw"].decode()
    assert value not in text


async def test_rotate_now_one_or_all_and_unknown_name(
    served: tuple[str, Agent, CollectorRegistry],
) -> None:
    url, agent, _ = served
    await agent.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/rotate", params={"secret": "db"}) as r:
            assert r.status == 202
            assert await r.json() == {"rotating": ["db"]}
        await agent.rotators["db"].step()
        await agent.rotators["api"].step()
        assert agent.rotators["db"].state.version == 2
        assert agent.rotators["api"].state.version == 1
        async with http.post(url + "/rotate") as r:
            assert (await r.json())["rotating"] == ["db", "api"]
        async with http.post(url + "/rotate", params={"secret": "nope"}) as r:
            assert r.status == 404
            assert (await r.json())["secrets"] == ["api", "db"]


async def test_rotate_is_absent_unless_allowed_and_background_runs(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    agent = agent_for(tmp_path, registry, ["db"])
    started = asyncio.Event()

    async def background() -> None:
        started.set()
        await asyncio.Event().wait()

    port = free_port()
    runner = await serve(make_app(registry, agent, background=background), "127.0.0.1", port)
    try:
        await asyncio.wait_for(started.wait(), 10)
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/rotate") as r,
        ):
            assert r.status in (404, 405)
    finally:
        await runner.cleanup()


async def _exchange(port: int, *requests: bytes) -> list[bytes]:
    """Send ``requests`` one after another on ONE connection, each once the answer to the one
    before is complete; ``status;headers\nbody`` of each answer (read by h11)."""
    import h11

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h11.Connection(our_role=h11.CLIENT)
    out: list[bytes] = []
    try:
        async with asyncio.timeout(10):
            for raw in requests:
                # Move h11's client side past "request sent", then send the raw bytes instead.
                method = raw.split(b" ", 1)[0]  # HEAD: h11 then expects no body
                conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
                conn.send(h11.EndOfMessage())
                writer.write(raw)
                await writer.drain()
                head, body = b"", b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Response):
                        head = f"{event.status_code} ".encode() + b";".join(
                            k + b"=" + v for k, v in event.headers
                        )
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        raise AssertionError(f"unexpected {event!r}")
                out.append(head + b"\n" + body)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break  # the server closes this connection
                conn.start_next_cycle()
    finally:
        writer.close()
    return out


async def test_keep_alive_serves_many_requests_on_one_connection(
    served: tuple[str, Agent, CollectorRegistry],
) -> None:
    url, _, _ = served
    port = int(url.rsplit(":", 1)[1])
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    ready = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await _exchange(port, get, ready, get)
    assert [a.split(b" ", 1)[0] for a in answers] == [b"200", b"503", b"200"]
    assert answers[0].endswith(b"\nok\n")


async def test_unknown_paths_methods_and_bad_requests_get_clear_answers(
    served: tuple[str, Agent, CollectorRegistry],
) -> None:
    url, _, _ = served
    port = int(url.rsplit(":", 1)[1])
    [missing] = await _exchange(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert missing.startswith(b"404 ")
    [wrong] = await _exchange(port, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wrong.startswith(b"405 ")
    assert b"allow=GET, HEAD" in wrong
    [head] = await _exchange(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"200 ")
    assert head.endswith(b"\n")  # headers only
    [bad] = await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert bad.startswith(b"400 ")
    big = b"POST /rotate HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
    [large] = await _exchange(port, big)
    assert large.startswith(b"413 ")
    [healthy] = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert healthy.startswith(b"200 ")  # the server still serves


async def test_a_failing_handler_is_a_json_500_without_the_error_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def readiness(self) -> dict[str, bool]:
            raise RuntimeError("s3cr3t-value")

        def request_rotation(self, name: str | None = None) -> list[str]:
            return []

    port = free_port()
    runner = await serve(make_app(CollectorRegistry(), Broken()), "127.0.0.1", port)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as r,
        ):
            assert r.status == 500
            assert await r.json() == {"error": "internal error"}
    finally:
        await runner.cleanup()
    assert "s3cr3t-value" not in caplog.text
    assert "RuntimeError" in caplog.text


async def test_cleanup_stops_the_background_and_open_connections(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    agent = agent_for(tmp_path, registry, ["db"])
    stopped = asyncio.Event()

    async def background() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    runner = await serve(make_app(registry, agent, background=background), "127.0.0.1", 0)
    port = int(runner.addresses[0][1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # an idle keep-alive
    await asyncio.wait_for(runner.cleanup(), 10)
    assert stopped.is_set()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the server closed it
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


# -- hostile clients (issue 24, item 3) -----------------------------------------------------------
async def _served_runner(tmp_path: Path) -> tuple[Any, int]:
    registry = CollectorRegistry()
    runner = await serve(make_app(registry, agent_for(tmp_path, registry, ["db"])), "127.0.0.1", 0)
    return runner, int(runner.addresses[0][1])


async def _closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent before it closed the connection (fails if it is still open)."""
    out = b""
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            out += chunk
    return out


async def test_a_request_head_over_8_kib_is_refused(
    served: tuple[str, Agent, CollectorRegistry],
) -> None:
    url, _, _ = served
    port = int(url.rsplit(":", 1)[1])
    pad = b"X-Pad: " + b"a" * 9000 + b"\r\n"
    [big] = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
    assert big.startswith(b"431 ")
    [unfinished] = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad * 8)
    assert unfinished.startswith(b"431 ")
    pad = b"X-Pad: " + b"a" * 7000 + b"\r\n"
    [fine] = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
    assert fine.startswith(b"200 ")


async def test_a_slow_request_head_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slowloris (one header byte now and then, never the end) is closed REQUEST_TIMEOUT after
    its first byte, although it is never idle for the keep-alive time."""
    import agent.server

    monkeypatch.setattr(agent.server, "REQUEST_TIMEOUT", 0.5, raising=False)
    runner, port = await _served_runner(tmp_path)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = asyncio.get_running_loop().time()

        async def trickle() -> None:
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            for _ in range(100):
                await asyncio.sleep(0.1)
                writer.write(b"X: y\r\n")

        task = asyncio.create_task(trickle())
        assert await _closed(reader, 5) == b""
        assert asyncio.get_running_loop().time() - start < 2
        task.cancel()
        writer.close()
    finally:
        await runner.cleanup()


async def test_a_client_that_never_reads_its_answers_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipelined requests whose answers are never read: drain() gives up after WRITE_TIMEOUT and
    the connection goes, with what was buffered for it."""
    import socket

    import agent.server

    monkeypatch.setattr(agent.server, "WRITE_TIMEOUT", 0.5, raising=False)
    runner, port = await _served_runner(tmp_path)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        _, writer = await asyncio.open_connection(sock=sock)
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(request * 5000)  # answers of a few MiB, more than the socket buffers
        await until(lambda: len(runner.connections) == 1, what="the connection")
        await until(lambda: not runner.connections, timeout=10, what="the connection dropped")
        writer.transport.abort()
    finally:
        await asyncio.wait_for(runner.cleanup(), 10)


async def test_at_most_32_connections_and_the_probe_still_gets_in(tmp_path: Path) -> None:
    """300 connections each holding an unfinished 7 KiB head (the issue: 300 x 63 KiB took the
    agent from 28 to 66 MiB): at most MAX_CONNECTIONS stay open, the oldest waiting ones give
    way, and a probe that comes after them is answered."""
    from agent.server import MAX_CONNECTIONS

    runner, port = await _served_runner(tmp_path)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 7000
    held = []
    try:
        for _ in range(300):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            held.append((reader, writer))
        await asyncio.sleep(0.2)
        assert len(runner.connections) <= MAX_CONNECTIONS
        [probe] = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert probe.startswith(b"200 ")
        gone = 0
        for reader, _ in held[:200]:  # the oldest were closed to make room
            gone += await _closed(reader, 5) == b""
        assert gone == 200
    finally:
        for _, writer in held:
            writer.close()
        await runner.cleanup()
