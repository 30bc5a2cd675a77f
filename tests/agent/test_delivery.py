"""agent/delivery.py: which states rewrite the files and which tell the app (one copy for the
writer's engine and every mirror)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.delivery import Delivery, drain_notifications
from agent.files import AtomicWriter
from agent.hooks import Reloader
from agent.metrics import AgentMetrics
from rotor.annotations import parse_reload
from rotor.layout import SecretState
from rotor.protocol import commit, prepare


class Recording(Reloader):
    """A reload that records what it was told and answers ``ok``."""

    def __init__(self, ok: bool = True) -> None:
        super().__init__(parse_reload("http://127.0.0.1:1/reload"))
        self.ok = ok
        self.told: list[int] = []

    async def notify(self, secret: str, version: int, files: list[str]) -> bool:
        self.told.append(version)
        return self.ok


def committed(state: SecretState, value: bytes) -> SecretState:
    return commit(prepare(state, {"password": value}, 1_700_000_000.0, "w"), 1_700_000_000.0, 0)


V1 = committed(SecretState(), b"one")
V2 = committed(V1, b"two")


@pytest.mark.parametrize(
    ("steps", "writes", "told"),
    [
        (["V1"], [True], []),  # the first files: the app is starting, nothing to tell
        (["V1", "V1"], [True, False], []),  # the same files: nothing written
        (["V1", "V2"], [True, True], [2]),
        (["V1", "forget", "V2"], [True, True], []),  # after a hand-over: a first write again
        (["V1", "reset", "V1", "V2"], [True, True, True], [2]),
    ],
)
async def test_which_states_write_and_which_tell_the_app(
    tmp_path: Path, steps: list[str], writes: list[bool], told: list[int]
) -> None:
    reloader = Recording()
    d = Delivery("db", AtomicWriter(tmp_path / "db"), AgentMetrics(CollectorRegistry()), reloader)
    wrote = []
    for step in steps:
        if step == "forget":
            d.forget()
        elif step == "reset":
            d.reset()
        else:
            wrote.append(d.deliver({"V1": V1, "V2": V2}[step], None))
    await drain_notifications()
    assert wrote == writes
    assert reloader.told == told
    assert (tmp_path / "db" / "password").read_bytes() == {"V1": b"one", "V2": b"two"}[steps[-1]]


@pytest.mark.parametrize("ok", [True, False])
async def test_each_reload_is_counted_by_its_result(tmp_path: Path, ok: bool) -> None:
    registry = CollectorRegistry()
    d = Delivery("db", AtomicWriter(tmp_path / "db"), AgentMetrics(registry), Recording(ok))
    d.deliver(V1, None)
    d.deliver(V2, None)
    await drain_notifications()
    labels = {"secret": "db", "method": "http", "result": "success" if ok else "failure"}
    assert registry.get_sample_value("rotor_agent_reload_notifications_total", labels) == 1
