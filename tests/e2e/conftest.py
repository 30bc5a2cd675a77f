"""The cluster fixture of the end-to-end suite: ``ROTOR_E2E_CLUSTER=real`` (the source-built
control plane and node on this machine; the default as root when its binaries are built) or
``kind`` (Docker and kind). Opt-in: ``pytest -m e2e tests/e2e``, ``ROTOR_E2E=1`` or
``make e2e``. See tests/e2e/README.md."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.e2e.clusters import NAMESPACE, Cluster, KindCluster, RealCluster


def _opted_in(config: pytest.Config) -> bool:
    expr = str(config.getoption("markexpr", "") or "")
    return os.environ.get("ROTOR_E2E") == "1" or ("e2e" in expr and "not e2e" not in expr)


def _which() -> str:
    chosen = os.environ.get("ROTOR_E2E_CLUSTER", "")
    if chosen in ("real", "kind"):
        return chosen
    if chosen:
        pytest.fail(f"ROTOR_E2E_CLUSTER={chosen!r}: use real or kind")
    return "kind" if RealCluster.missing() and not KindCluster.missing() else "real"


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    if not _opted_in(request.config):
        pytest.skip("the end-to-end suite is opt-in: make e2e, or pytest -m e2e tests/e2e")
    which = _which()
    why = RealCluster.missing() if which == "real" else KindCluster.missing()
    if why:
        pytest.skip(f"no {which} cluster here: {why}")
    work = tmp_path_factory.mktemp("cluster")
    c: Cluster = RealCluster(work) if which == "real" else KindCluster(work)
    started = time.monotonic()
    try:
        c.start()
    except BaseException:
        print(c.diagnose())
        c.close()
        raise
    print(f"\n{which} cluster up in {time.monotonic() - started:.0f} s")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def release(cluster: Cluster) -> Cluster:
    """The chart installed as docs/install.md says, with the real helm CLI, and ready."""
    cluster.run(
        "helm", "install", "rotor", "charts/rotor",
        "--namespace", NAMESPACE, "--create-namespace",
        *cluster.image_values(),
        "--set", "acl.poll=2s,logLevel=DEBUG",
    )  # fmt: skip
    for deploy in ("rotor-controller", "rotor-webhook"):
        cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deploy/{deploy}", "--timeout=300s")
    return cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, the pods, events and the components' logs go into the report."""
    outcome = yield
    report = outcome.get_result()
    c = item.funcargs.get("release") or item.funcargs.get("cluster")  # type: ignore[attr-defined]
    if report.failed and isinstance(c, Cluster):
        report.sections.append(("cluster state", c.diagnose()))
