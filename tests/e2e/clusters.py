"""The two clusters the end-to-end suite runs on, behind one interface (the test bodies in
tests/e2e/test_e2e.py do not know which):

* ``real``: the control plane of rotorctl/realkube.py and the node of rotorctl/realnode.py
  (containerd, kubelet, kube-proxy built from source by tools/kube/build.sh), Rotor's images
  built with ``make images LOCAL_BASE=1`` and imported into containerd, ``helm`` and
  ``kubectl`` from the same build. Needs root and no network.
* ``kind``: a kind cluster, both images built with docker and loaded with ``kind load``; where a
  Docker engine exists (users' machines).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "rotor-system"
VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "pyproject.toml").read_text().splitlines()
    if line.startswith("version = ")
)
KIND_TOOLS = {
    "docker": "https://docs.docker.com/engine/install/",
    "kind": "go install sigs.k8s.io/kind@latest, or a release binary",
    "kubectl": "https://kubernetes.io/docs/tasks/tools/",
    "helm": "https://helm.sh/docs/intro/install/",
}


class Cluster:
    """A cluster the suite drives with kubectl and helm through ``kubeconfig``."""

    kind = ""
    app_image = ""  # what the workloads' app containers run (sleep, cat, sh)

    def __init__(self, kubeconfig: Path, tools: dict[str, str]) -> None:
        self.kubeconfig = kubeconfig
        self.tools = tools

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(
        self, *cmd: str, stdin: str | None = None, check: bool = True, timeout: float = 900
    ) -> str:
        out = subprocess.run(
            [self.tools.get(cmd[0], cmd[0]), *cmd[1:]],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=ROOT,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}{out.stdout[-2000:]}"
            )
        return out.stdout

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.run("kubectl", *args, stdin=stdin, check=check, timeout=120)

    def image_values(self) -> list[str]:
        """helm ``--set`` flags naming the images this cluster holds."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def component_logs(self) -> dict[str, str]:
        """The tail of each cluster component's log (control plane and node)."""
        return {}

    def diagnose(self) -> str:
        """Pods, events, Rotor's logs, the RotatingSecrets and the components' logs."""
        parts = []
        for args in (
            ("get", "nodes", "-o", "wide"),
            ("get", "pods", "-A", "-o", "wide"),
            ("get", "events", "-A", "--sort-by=.lastTimestamp"),
            ("-n", NAMESPACE, "logs", "deploy/rotor-controller", "--tail=80"),
            ("-n", NAMESPACE, "logs", "deploy/rotor-webhook", "--tail=40"),
            ("get", "rsec", "-A", "-o", "yaml"),
            ("-n", NAMESPACE, "get", "configmap", "rotor-acl", "-o", "yaml"),
        ):
            out = subprocess.run(
                [self.tools.get("kubectl", "kubectl"), *args],
                capture_output=True, text=True, env=self.env(), timeout=60,
            )  # fmt: skip
            parts.append(f"$ kubectl {' '.join(args)}\n{out.stdout[-6000:]}{out.stderr[-2000:]}")
        for name, text in self.component_logs().items():
            parts.append(f"--- {name} (last lines)\n{text}")
        return "\n".join(parts)

    def close(self) -> None:
        pass


class KindCluster(Cluster):
    kind = "kind"
    app_image = "busybox:1.36"

    def __init__(self, workdir: Path) -> None:
        tools = {name: shutil.which(name) or name for name in KIND_TOOLS}
        super().__init__(workdir / "kubeconfig", tools)
        self.reuse = os.environ.get("ROTOR_E2E_KIND_CLUSTER")
        self.name = self.reuse or f"rotor-e2e-{uuid.uuid4().hex[:6]}"

    @staticmethod
    def missing() -> str | None:
        for name, how in KIND_TOOLS.items():
            if shutil.which(name) is None:
                return f"{name} is not installed ({how}); the kind cluster needs it"
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
        if info.returncode != 0:
            return f"the Docker daemon is not reachable (docker info: {info.stderr.strip()[:200]})"
        return None

    def start(self) -> None:
        if self.reuse:
            self.run("kind", "export", "kubeconfig", "--name", self.name,
                     "--kubeconfig", str(self.kubeconfig))  # fmt: skip
            return
        create = ["kind", "create", "cluster", "--name", self.name,
                  "--kubeconfig", str(self.kubeconfig)]  # fmt: skip
        if image := os.environ.get("ROTOR_E2E_NODE_IMAGE"):
            create += ["--image", image]
        self.run(*create, "--wait", "180s")
        for image, dockerfile in (
            ("rotor-controller:e2e", "Dockerfile.controller"),
            ("rotor-agent:e2e", "Dockerfile.agent"),
        ):
            self.run("docker", "build", "-f", dockerfile, "-t", image, ".")
            self.run("kind", "load", "docker-image", image, "--name", self.name)

    def image_values(self) -> list[str]:
        return [
            "--set", "image.repository=rotor-controller,image.tag=e2e,image.pullPolicy=Never",
            "--set", "agent.image.repository=rotor-agent,agent.image.tag=e2e",
            "--set", "agent.image.pullPolicy=Never",
        ]  # fmt: skip

    def close(self) -> None:
        if not self.reuse and os.environ.get("ROTOR_E2E_KEEP") != "1":
            self.run("kind", "delete", "cluster", "--name", self.name, check=False)


class RealCluster(Cluster):
    """The source-built control plane and node, on this machine."""

    kind = "real"
    controller_image = f"localhost/rotor-controller:{VERSION}"
    agent_image = f"localhost/rotor-agent:{VERSION}"
    app_image = agent_image  # a Debian userland: sleep, cat, sh

    def __init__(self, workdir: Path) -> None:
        from rotorctl.realkube import bin_dir

        binaries = bin_dir(("kubectl", "helm"))
        super().__init__(
            workdir / "cp" / "admin.kubeconfig",
            {"kubectl": str(binaries / "kubectl"), "helm": str(binaries / "helm")},
        )
        self.workdir = workdir
        self.cp: object = None
        self.node: object = None

    @staticmethod
    def missing() -> str | None:
        from rotorctl.realkube import KubeBinariesMissing, bin_dir
        from rotorctl.realnode import NODE_BINARIES, node_missing

        try:
            bin_dir(("etcd", "kube-apiserver", "kubectl", "helm", *NODE_BINARIES))
        except KubeBinariesMissing as e:
            return str(e)
        return node_missing()

    def start(self) -> None:
        from rotorctl.realnode import Node, NodeControlPlane

        for image in (self.controller_image, self.agent_image):
            probe = subprocess.run(["podman", "image", "exists", image], check=False)
            if probe.returncode != 0:
                raise AssertionError(f"{image} is not built: run `make images LOCAL_BASE=1`")
        cp = NodeControlPlane(self.workdir / "cp")
        self.cp = cp
        cp.start()
        node = Node(cp, self.workdir / "node")
        self.node = node
        node.start()
        node.import_images([self.controller_image, self.agent_image])

    def image_values(self) -> list[str]:
        return [
            "--set", f"image.repository=localhost/rotor-controller,image.tag={VERSION}",
            "--set", f"agent.image.repository=localhost/rotor-agent,agent.image.tag={VERSION}",
        ]  # fmt: skip

    def component_logs(self) -> dict[str, str]:
        logs = {}
        for owner in (self.cp, self.node):
            for name, proc in dict(getattr(owner, "procs", {})).items():
                logs[name] = proc.tail(4000)
        return logs

    def close(self) -> None:
        from rotorctl.realkube import ControlPlane
        from rotorctl.realnode import Node

        if isinstance(self.node, Node):
            self.node.stop()
        if isinstance(self.cp, ControlPlane):
            self.cp.stop()
