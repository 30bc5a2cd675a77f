"""System tests: the whole of Rotor as processes (rotorctl.harness), as `rotor demo` runs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rotorctl.harness import System


@pytest.fixture
def system(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """Emulator, webhook and controller (ACL polled every second); logs printed on failure."""
    s = System(tmp_path / "sys", log_level="INFO")
    with s:
        yield s
        if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
            for p in [s.controller, s.webhook, *[pod.agent for pod in s.pods.values()]]:
                if p is not None:
                    print(f"--- {p.name} ---\n{p.tail(3000)}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
