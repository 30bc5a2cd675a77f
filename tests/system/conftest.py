"""System tests: the whole of Rotor as processes (rotorctl.harness), as `rotor demo` runs it, on
the API emulator or, with `--kube=real` (or ROTOR_TEST_KUBE=real), on a real control plane
(rotorctl.realkube; `make kube-bin` builds it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rotorctl.harness import System
from tests.conftest import IN_CI


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> str:
    """The backend under test: "emulator" or "real" (skipped without the binaries; CI fails)."""
    kind = str(request.config.getoption("--kube"))
    if kind == "real":
        require_real()
    return kind


def require_real() -> None:
    from rotorctl.realkube import KubeBinariesMissing, bin_dir

    try:
        bin_dir()
    except KubeBinariesMissing as e:
        if IN_CI:
            pytest.fail(str(e))
        pytest.skip(str(e))


def emulator_only(kube: str, why: str) -> None:
    """Skip on the real control plane: ``why`` names what only the emulator exposes."""
    if kube == "real":
        pytest.skip(f"emulator only: {why}")


@pytest.fixture
def system(tmp_path: Path, request: pytest.FixtureRequest, kube: str) -> Iterator[System]:
    """Emulator (or real control plane), webhook and controller (ACL polled every second);
    logs printed on failure."""
    s = System(tmp_path / "sys", log_level="INFO", kube=kube)
    with s:
        yield s
        if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
            for p in [s.controller, s.webhook, *[pod.agent for pod in s.pods.values()]]:
                if p is not None:
                    print(f"--- {p.name} ---\n{p.tail(3000)}")
            if s.node is not None and s.node.errors:
                print("--- node ---\n" + "\n".join(s.node.errors))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
