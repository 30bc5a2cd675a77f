"""docs/install.md's Install steps and then every command the chart's NOTES print, run as
printed (bash, the cluster's kubectl, this checkout's ``rotor``) against the release the
``release`` fixture installed with ``helm install``; the files the NOTES promise then appear in
both pods."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.clusters import NAMESPACE, Cluster
from tests.e2e.test_e2e import poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOP = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
""" + "".join(
    f"""---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: shop}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: {name}
      terminationGracePeriodSeconds: 2
      containers:
        - {{name: app, image: IMAGE, imagePullPolicy: IfNotPresent, command: [sleep, "36000"]}}
"""
    for name in ("api", "web")
)


def commands(notes: str) -> list[str]:
    """Each kubectl or rotor command the NOTES print, a heredoc with its body."""
    out: list[str] = []
    lines = notes.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line.startswith(("kubectl ", "rotor ")):
            continue
        if line.endswith("<<'YAML'"):
            body = []
            while lines[i].strip() != "YAML":
                body.append(lines[i])
                i += 1
            i += 1
            line += "\n" + textwrap.dedent("\n".join(body)) + "\nYAML"
        out.append(line)
    return out


def test_every_command_the_notes_print_works(release: Cluster) -> None:
    c = release
    c.kubectl("apply", "-f", "-", stdin=SHOP.replace("IMAGE", c.app_image))
    notes = c.run("helm", "get", "notes", "rotor", "--namespace", NAMESPACE)
    cmds = commands(notes)
    assert len(cmds) >= 9, notes
    kubectl_dir = str(Path(c.tools.get("kubectl", "kubectl")).parent)
    env_path = os.pathsep.join([kubectl_dir, str(Path(sys.executable).parent), os.environ["PATH"]])
    ran = []
    for cmd in cmds:  # each exits 0 (c.run fails with its output otherwise)
        ran.append(c.run("bash", "-c", f"export PATH={env_path!r}\n{cmd}", timeout=300))

    def files(deploy: str) -> str | None:
        out = c.run(
            "kubectl", "-n", "shop", "exec", f"deploy/{deploy}", "-c", "app", "--",
            "ls", "/var/run/secrets/rotor/db-password/", check=False, timeout=60,
        )  # fmt: skip
        return out if "password" in out.split() else None

    for deploy in ("api", "web"):
        poll(f"the files in shop/{deploy}", lambda d=deploy: files(d), c, 300)
    status = c.kubectl("-n", "shop", "get", "rsec", "db-password", "-o", "json")
    assert '"writer"' in status, status
