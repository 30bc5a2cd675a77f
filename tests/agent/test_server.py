"""The agent's aiohttp app on a real loopback port: metrics, health, readiness, rotate-now."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from agent.engine import Agent, SecretRotator
from agent.files import AtomicWriter
from agent.metrics import AgentMetrics
from agent.server import make_app, serve
from agent.store import MemoryStore
from rotor.settings.agent import AgentSettings
from rotor.spec import RotatingSecretSpec
from tests.agent.fakes import FakeClock
from tests.conftest import free_port

SPEC = RotatingSecretSpec.from_dict({"keys": [{"name": "pw", "generator": {"type": "uuid"}}]})


def agent_for(tmp_path: Path, registry: CollectorRegistry, names: list[str]) -> Agent:
    metrics = AgentMetrics(registry)
    clock = FakeClock()
    return Agent(
        SecretRotator(
            n,
            SPEC,
            MemoryStore(),
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
