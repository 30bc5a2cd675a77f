"""End to end on a kind cluster: build both images, install the chart with the helm CLI, annotate
a writer and a reader, approve their grants, and read the rotated file in the reader's pod.

Opt-in (it creates a cluster and builds images, several minutes): ``pytest -m e2e tests/e2e``
or ``ROTOR_E2E=1``. It skips itself with the reason when Docker, kind, kubectl or helm is
missing. See tests/e2e/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "rotor-system"
APP_NS = "e2e-shop"
SECRET = "db"
KEY = "password"
MOUNT = "/var/run/secrets/rotor"
TOOLS = {
    "docker": "https://docs.docker.com/engine/install/",
    "kind": "go install sigs.k8s.io/kind@latest, or a release binary",
    "kubectl": "https://kubernetes.io/docs/tasks/tools/",
    "helm": "https://helm.sh/docs/intro/install/",
}
T = TypeVar("T")


def _opted_in(config: pytest.Config) -> bool:
    expr = str(config.getoption("markexpr", "") or "")
    return os.environ.get("ROTOR_E2E") == "1" or ("e2e" in expr and "not e2e" not in expr)


@pytest.fixture(scope="module")
def tools(request: pytest.FixtureRequest) -> dict[str, str]:
    if not _opted_in(request.config):
        pytest.skip("the kind suite is opt-in: pytest -m e2e tests/e2e (or ROTOR_E2E=1)")
    found = {}
    for name, how in TOOLS.items():
        path = shutil.which(name)
        if path is None:
            pytest.skip(f"{name} is not installed ({how}); the kind suite needs it")
        found[name] = path
    info = subprocess.run([found["docker"], "info"], capture_output=True, text=True)
    if info.returncode != 0:
        pytest.skip(
            f"the Docker daemon is not reachable (docker info: {info.stderr.strip()[:200]})"
        )
    return found


class Cluster:
    def __init__(self, tools: dict[str, str], name: str, kubeconfig: Path) -> None:
        self.tools = tools
        self.name = name
        self.kubeconfig = kubeconfig

    def run(self, *cmd: str, stdin: str | None = None, check: bool = True) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        out = subprocess.run(
            [self.tools.get(cmd[0], cmd[0]), *cmd[1:]],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=900,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
        return out.stdout

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.run("kubectl", *args, stdin=stdin, check=check)

    def diagnose(self) -> str:
        parts = []
        for args in (
            ("get", "pods", "-A", "-o", "wide"),
            ("-n", NAMESPACE, "logs", "deploy/rotor-controller", "--tail=80"),
            ("-n", NAMESPACE, "logs", "deploy/rotor-webhook", "--tail=40"),
            ("-n", APP_NS, "get", "rsec", "-o", "yaml"),
            ("-n", APP_NS, "describe", "pods"),
            ("-n", NAMESPACE, "get", "configmap", "rotor-acl", "-o", "yaml"),
        ):
            out = subprocess.run(
                ["kubectl", *args],
                capture_output=True,
                text=True,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            )
            parts.append(f"$ kubectl {' '.join(args)}\n{out.stdout}{out.stderr}")
        return "\n".join(parts)


def poll(what: str, check: Callable[[], T | None], cluster: Cluster, timeout: float) -> T:
    """Call ``check`` until it returns a value (not None), or fail with the cluster's state."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            value = check()
        except AssertionError as e:
            value, last = None, str(e)
        if value is not None:
            return value
        time.sleep(2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{last}\n{cluster.diagnose()}")


@pytest.fixture(scope="module")
def cluster(tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    reuse = os.environ.get("ROTOR_E2E_CLUSTER")
    name = reuse or f"rotor-e2e-{uuid.uuid4().hex[:6]}"
    c = Cluster(tools, name, kubeconfig)
    if reuse:
        c.run("kind", "export", "kubeconfig", "--name", name, "--kubeconfig", str(kubeconfig))
    else:
        create = ["kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)]
        if image := os.environ.get("ROTOR_E2E_NODE_IMAGE"):
            create += ["--image", image]
        c.run(*create, "--wait", "180s")
    try:
        yield c
    finally:
        if not reuse and os.environ.get("ROTOR_E2E_KEEP") != "1":
            c.run("kind", "delete", "cluster", "--name", name, check=False)


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Cluster:
    """Both images built and loaded into the nodes, the chart installed and ready."""
    for image, dockerfile in (
        ("rotor-controller:e2e", "Dockerfile.controller"),
        ("rotor-agent:e2e", "Dockerfile.agent"),
    ):
        cluster.run("docker", "build", "-f", dockerfile, "-t", image, ".")
        cluster.run("kind", "load", "docker-image", image, "--name", cluster.name)
    cluster.run(
        "helm", "upgrade", "--install", "rotor", "charts/rotor",
        "--namespace", NAMESPACE, "--create-namespace",
        "--set", "image.repository=rotor-controller,image.tag=e2e,image.pullPolicy=Never",
        "--set", "agent.image.repository=rotor-agent,agent.image.tag=e2e",
        "--set", "agent.image.pullPolicy=Never",
        "--set", "acl.poll=2s,logLevel=DEBUG",
        "--wait", "--timeout", "6m",
    )  # fmt: skip
    return cluster


WORKLOADS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {APP_NS}}}
---
apiVersion: rotor.dev/v1alpha1
kind: RotatingSecret
metadata: {{name: {SECRET}, namespace: {APP_NS}}}
spec:
  keys: [{{name: {KEY}, generator: {{type: password, length: 24}}}}]
  rotation: {{interval: 24h, overlap: 1h}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: api, namespace: {APP_NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web, namespace: {APP_NS}}}
""" + "".join(
    f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {APP_NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {annotations}
    spec:
      serviceAccountName: {sa}
      containers:
        - name: app
          image: busybox:1.36
          command: [sleep, "36000"]
"""
    for name, sa, annotations in (
        ("api", "api", '{"rotor.dev/rw": "' + SECRET + '"}'),
        ("web", "web", '{"rotor.dev/ro": "' + SECRET + '"}'),
        ("plain", "default", "{}"),
    )
)


def read_file(cluster: Cluster, deployment: str) -> str | None:
    out = subprocess.run(
        ["kubectl", "-n", APP_NS, "exec", f"deploy/{deployment}", "-c", "app", "--",
         "cat", f"{MOUNT}/{SECRET}/{KEY}"],
        capture_output=True, text=True, env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )  # fmt: skip
    return out.stdout if out.returncode == 0 and out.stdout else None


def pod_labels(cluster: Cluster, app: str) -> dict[str, str] | None:
    """The labels of the deployment's first pod, or None while it has none."""
    pods = json.loads(
        cluster.kubectl("-n", APP_NS, "get", "pods", "-l", f"app={app}", "-o", "json")
    )
    items = pods["items"]
    return dict(items[0]["metadata"].get("labels", {})) if items else None


def test_reader_gets_the_rotated_value(release: Cluster) -> None:
    c = release
    c.kubectl("apply", "-f", "-", stdin=WORKLOADS)
    # only annotated pods are injected (the webhook labels them rotor.dev/injected=true)
    for app, injected in (("api", "true"), ("web", "true"), ("plain", None)):
        labels = poll(f"a pod of {app}", lambda a=app: pod_labels(c, a), c, 120)
        assert labels.get("rotor.dev/injected") == injected, (app, labels)

    for principal, mode in ((f"{APP_NS}/api", "rw"), (f"{APP_NS}/web", "ro")):
        c.kubectl(
            "-n", NAMESPACE, "exec", "deploy/rotor-controller", "-c", "controller", "--",
            "rotor", "acl", "approve", f"{APP_NS}/{SECRET}", principal, mode,
        )  # fmt: skip

    first = poll("the reader's file", lambda: read_file(c, "web"), c, 300)
    assert len(first.strip()) == 24
    poll("the writer's file to match", lambda: read_file(c, "api") == first or None, c, 60)

    c.kubectl(
        "-n", APP_NS, "annotate", "rotatingsecret", SECRET,
        f"rotor.dev/rotate-now={uuid.uuid4().hex[:8]}", "--overwrite",
    )  # fmt: skip
    second = poll(
        "a new value after rotor.dev/rotate-now",
        lambda: v if (v := read_file(c, "web")) and v != first else None,
        c,
        180,
    )
    assert len(second.strip()) == 24
    poll("the writer's new value", lambda: read_file(c, "api") == second or None, c, 60)
