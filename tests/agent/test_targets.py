"""Targets without a database: the overlap-end hook (a real aiohttp app on 127.0.0.1), and
psycopg loaded only by an agent that has a PostgreSQL target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.engine import SecretRotator
from agent.files import AtomicWriter
from agent.metrics import AgentMetrics
from agent.targets import build_target
from rotor.layout import SecretState
from rotor.settings.agent import AgentSettings
from rotor.spec import RotatingSecretSpec
from tests.agent.fakes import FakeClock, app_server
from tests.doubles import MemoryStateStore


def _spec(url: str) -> RotatingSecretSpec:
    return RotatingSecretSpec.from_dict(
        {
            "keys": [{"name": "token", "generator": {"type": "token"}}],
            "rotation": {"interval": "1h", "overlap": "10m"},
            "target": {"hook": {"overlapEnd": url}},
        }
    )


async def test_overlap_end_hook_gets_the_retired_value_once(tmp_path: Path) -> None:
    async with app_server() as app:
        spec = _spec(app.url + "/apply")  # the recording app records POSTs to /apply
        assert spec.target is not None
        clock = FakeClock()
        registry = CollectorRegistry()
        target = build_target("api", spec.target, None, 5.0)
        r = SecretRotator(
            "api",
            spec,
            MemoryStateStore(),
            AtomicWriter(tmp_path / "api"),
            settings=AgentSettings(jitter=0.0),
            metrics=AgentMetrics(registry),
            clock=clock,
            writer_id="test",
            target=target,
        )
        try:
            await r.step()
            first = r.state.current["token"]
            await clock.advance(3600)
            await r.step()
            assert app.applied == []  # not before the overlap ends
            await clock.advance(601)
            await r.step()
            await r.step()
        finally:
            await target.close()
        assert app.applied == [
            {"secret": "api", "version": 1, "current": 2, "previous": {"token": first.decode()}}
        ]
        assert "token.previous" not in AtomicWriter(tmp_path / "api").read()


async def test_a_failing_overlap_end_hook_is_counted_and_the_value_still_leaves(
    tmp_path: Path,
) -> None:
    async with app_server() as app:
        app.status = 500
        spec = _spec(app.url + "/apply")
        assert spec.target is not None
        clock = FakeClock()
        registry = CollectorRegistry()
        target = build_target("api", spec.target, None, 5.0)
        r = SecretRotator(
            "api",
            spec,
            MemoryStateStore(),
            AtomicWriter(tmp_path / "api"),
            settings=AgentSettings(jitter=0.0),
            metrics=AgentMetrics(registry),
            clock=clock,
            writer_id="test",
            target=target,
        )
        try:
            await r.step()
            await clock.advance(3600)
            await r.step()
            await clock.advance(601)
            await r.step()
        finally:
            await target.close()
    assert not r.state.previous
    assert "token.previous" not in AtomicWriter(tmp_path / "api").read()
    labels = {"secret": "api", "step": "retire", "reason": "OverlapEndHookFailed"}
    assert registry.get_sample_value("rotor_agent_target_failures_total", labels) == 1


def test_psycopg_is_loaded_only_for_a_postgres_target(tmp_path: Path) -> None:
    code = """
import json, pathlib, sys
from agent.standalone import Options, StandaloneSecret, build_agent
from rotor.spec import RotatingSecretSpec
key = {"name": "password", "generator": {"type": "password"}}
out = pathlib.Path(sys.argv[1])
plain = RotatingSecretSpec.from_dict({"keys": [key]})
build_agent(Options(secrets=(StandaloneSecret("a", plain),), dir=out))
before = "psycopg" in sys.modules
target = {"postgres": {"host": "127.0.0.1", "role": "app"}}
pg = RotatingSecretSpec.from_dict({"keys": [key], "target": target})
build_agent(Options(secrets=(StandaloneSecret("b", pg),), dir=out))
print(json.dumps([before, "psycopg" in sys.modules]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == [False, True]


def _pg(**target: object) -> object:
    spec = RotatingSecretSpec.from_dict(
        {
            "keys": [{"name": "password", "generator": {"type": "password"}}],
            "target": {"postgres": {"host": "h", "role": "app", **target}},
        }
    )
    assert spec.target is not None
    return spec.target.postgres


def _state(version: int, current: str, previous: str = "") -> SecretState:
    return SecretState(
        version=version,
        current={"username": current.encode()} if current else {},
        previous={"username": previous.encode()} if previous else {},
    )


@pytest.mark.parametrize(
    ("target", "state", "next_", "retired"),
    [
        ({}, _state(0, ""), "app_a", None),
        ({}, _state(1, "app_a"), "app_b", None),
        ({}, _state(2, "app_b", "app_a"), "app_a", "app_a"),
        ({}, _state(3, "app_a", "app_b"), "app_b", "app_b"),
        ({}, _state(3, "other", "app_b"), "app_a", "app_b"),  # from single: start at _a
        ({}, _state(3, "app_a", "app_a"), "app_b", None),  # never the current role
        ({}, _state(3, "app_a", "intruder"), "app_b", None),  # never a role not ours
        ({"onOverlapEnd": "keep"}, _state(2, "app_b", "app_a"), "app_a", None),
        ({"strategy": "single"}, _state(2, "app", "app"), "app", None),
        ({"strategy": "per-version"}, _state(4, "app_v4", "app_v3"), "app_v5", "app_v3"),
        ({"strategy": "per-version"}, _state(4, "app_v4", "app_vx"), "app_v5", None),
    ],
)
def test_which_role_is_next_and_which_is_retired(
    target: dict[str, object], state: SecretState, next_: str, retired: str | None
) -> None:
    from agent.targets.postgres import next_role, retired_role

    pg = _pg(**target)
    assert next_role(pg, state) == next_  # type: ignore[arg-type]
    assert retired_role(pg, state) == retired  # type: ignore[arg-type]
