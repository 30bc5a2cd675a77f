"""System tests: the whole of Rotor as processes (rotorctl.harness), as `rotor demo` runs it, on
the API emulator or, with `--kube=real` (or ROTOR_TEST_KUBE=real), on a real control plane
(rotorctl.realkube; `make kube-bin` builds it)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotorctl.harness import System, wait_for
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


@contextlib.contextmanager
def rotor_kube(
    tmp_path: Path, *, real: bool, stop_timeout: float
) -> Iterator[tuple[Path, list[str]]]:
    """``rotor kube`` (``--real``: the real control plane) as a process, as a user starts it;
    yields its admin kubeconfig and a list that holds its output once SIGTERM has stopped it
    (with exit 0) at the end of the block."""
    cfg = tmp_path / "admin.kubeconfig"
    rotor = str(Path(sys.executable).parent / "rotor")
    real_args = ["--real", "--dir", str(tmp_path / "kube")] if real else []
    proc = subprocess.Popen(
        [rotor, "kube", "--kubeconfig", str(cfg), *real_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        wait_for(lambda: cfg.exists() or proc.poll() is not None, "the kubeconfig", 120)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield cfg, output
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=stop_timeout)
        output.append(out)
    assert proc.returncode == 0, out
