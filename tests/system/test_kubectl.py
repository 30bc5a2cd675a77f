"""A real kubectl against ``rotor kube`` (the emulator alone, HTTPS, admin kubeconfig; with
``--kube=real``, ``rotor kube --real``): apply, get (tables, selectors), patch, delete, and a
refused request - on the oldest and the newest kubectl of this machine (1.27 and 1.33 here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.system.conftest import rotor_kube


def kubectls() -> list[str]:
    found = shutil.which("kubectl")
    if not found:
        return []
    folder = Path(found).resolve().parent
    versioned = sorted(str(p) for p in folder.glob("kubectl.1.*"))
    return sorted({versioned[0], versioned[-1]}) if versioned else [found]


pytestmark = pytest.mark.skipif(not kubectls(), reason="kubectl is not installed")

MANIFEST = """\
apiVersion: rotor.dev/v1alpha1
kind: RotatingSecret
metadata: {name: db, namespace: shop}
spec:
  keys: [{name: password, generator: {type: password, length: 20}}]
  rotation: {interval: 24h, overlap: 1h}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: shop, labels: {app: web}}
data: {a: "%s"}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: shop}
"""


@pytest.fixture
def served(tmp_path: Path, kube: str) -> Iterator[Path]:
    """``rotor kube`` (``--real`` on the real backend) as a process; yields its admin
    kubeconfig."""
    with rotor_kube(tmp_path, real=kube == "real", stop_timeout=20) as (cfg, output):
        yield cfg
    assert "admin kubeconfig" in output[0]


def token_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """The admin's kubeconfig with its user's credentials replaced by ``token`` alone."""
    doc = yaml.safe_load(admin.read_text())
    for user in doc["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def run(kubectl: str, cfg: Path, *args: str, ok: bool = True) -> str:
    out = subprocess.run(
        [kubectl, "--kubeconfig", str(cfg), *args], capture_output=True, text=True, timeout=60
    )
    assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
    return out.stdout + out.stderr


@pytest.mark.parametrize("kubectl", kubectls())
def test_kubectl_apply_get_patch_delete(
    served: Path, kubectl: str, tmp_path: Path, kube: str
) -> None:
    real, cfg = kube == "real", served
    if real:  # a real server keeps nothing in a namespace that does not exist
        assert "namespace/shop created" in run(kubectl, cfg, "create", "namespace", "shop")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST % "1")
    out = run(kubectl, cfg, "apply", "--validate=false", "-f", str(manifest))
    assert "rotatingsecret.rotor.dev/db created" in out
    assert "configmap/cfg created" in out
    manifest.write_text(MANIFEST % "2")  # a changed apply: kubectl patches
    out = run(kubectl, cfg, "apply", "--validate=false", "-f", str(manifest))
    assert "configmap/cfg configured" in out
    cm = json.loads(run(kubectl, cfg, "get", "configmap", "cfg", "-n", "shop", "-o", "json"))
    assert cm["data"] == {"a": "2"}
    header = run(kubectl, cfg, "get", "rotatingsecrets", "-n", "shop").splitlines()[0].split()
    # the CRD's printer columns, on the real server and on the emulator
    assert header == ["NAME", "VERSION", "PHASE", "WRITER", "NEXT", "ROTATION", "AGE"]
    assert run(kubectl, cfg, "get", "cm", "-n", "shop", "-l", "app=web", "-o", "name") == (
        "configmap/cfg\n"
    )
    assert run(kubectl, cfg, "get", "cm", "-n", "shop", "-l", "app=db", "-o", "name") == ""
    run(
        kubectl,
        cfg,
        "patch",
        "rotatingsecret",
        "db",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        '{"metadata":{"annotations":{"rotor.dev/rotate-now":"now"}}}',
    )
    ann = run(
        kubectl,
        cfg,
        "get",
        "rotatingsecret",
        "db",
        "-n",
        "shop",
        "-o",
        "jsonpath={.metadata.annotations.rotor\\.dev/rotate-now}",
    )
    assert ann == "now"
    # A service account's token (TokenRequest through kubectl) is refused what it lacks.
    # Its own kubeconfig: `--token` beside the admin's client certificate (the real server's
    # admin kubeconfig) would still authenticate as the admin, by the certificate.
    token = run(kubectl, cfg, "create", "token", "reader", "-n", "shop").strip()
    assert token
    reader = token_kubeconfig(cfg, token, tmp_path / "reader.kubeconfig")
    out = run(kubectl, reader, "get", "secrets", "-n", "shop", ok=False)
    assert (
        'secrets is forbidden: User "system:serviceaccount:shop:reader" cannot list resource '
        '"secrets" in API group "" in the namespace "shop"'
    ) in out
    assert run(kubectl, reader, "auth", "can-i", "list", "secrets", "-n", "shop",
               ok=False).strip() == "no"  # fmt: skip
    out = run(kubectl, cfg, "delete", "rotatingsecret", "db", "-n", "shop")
    assert 'rotatingsecret.rotor.dev "db" deleted' in out
    assert "No resources found" in run(kubectl, cfg, "get", "rotatingsecrets", "-n", "shop")
