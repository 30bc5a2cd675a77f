"""The real control plane (rotorctl.realkube) as a user and Rotor's parts meet it: `rotor kube
--real` answers a real kubectl with a real version; the admin works by client certificate; a
TokenRequest token authenticates as its ServiceAccount and dies with it; kube-controller-manager
finishes namespace deletion and makes a Deployment's pods; Rotor's CRDs refuse a bad
RotatingSecret by their schema. Needs `make kube-bin` (skipped without, failed in CI)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotor import API
from rotorctl import backends
from rotorctl.harness import ApiError, wait_for
from rotorctl.kubeapi import Api
from rotorctl.realkube import ControlPlane, bin_dir
from tests.system.conftest import require_real, rotor_kube

GO_MOD = Path(__file__).resolve().parents[2] / "tools" / "kube" / "kubernetes" / "go.mod"


def pinned_version() -> str:
    m = re.search(r"^require k8s.io/kubernetes (v[0-9.]+)$", GO_MOD.read_text(), re.M)
    assert m is not None
    return m.group(1)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    require_real()
    with ControlPlane(tmp_path_factory.mktemp("kube")) as cp:
        backends.RealBackend.install_crds_on(cp.api())
        yield cp


def ns(api: Api, name: str) -> None:
    api.ensure({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def test_kubectl_version_against_rotor_kube_real_is_the_pinned_release(tmp_path: Path) -> None:
    require_real()
    with rotor_kube(tmp_path, real=True, stop_timeout=60) as (cfg, output):
        kubectl = str(bin_dir(("kubectl",)) / "kubectl")
        out = subprocess.run(
            [kubectl, "--kubeconfig", str(cfg), "version", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        server = json.loads(out.stdout)["serverVersion"]
        assert server["gitVersion"] == pinned_version()
        assert server["minor"] == pinned_version().split(".")[1]
        crds = subprocess.run(
            [kubectl, "--kubeconfig", str(cfg), "get", "rotatingsecrets", "-A"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert crds.returncode == 0, crds.stderr  # Rotor's kinds are served
    assert f"Kubernetes control plane {pinned_version()}" in output[0]
    assert "stopped" in output[0]


def whoami(api: Api) -> Any:
    return api.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )


def test_admin_by_client_certificate_and_a_service_account_token(plane: ControlPlane) -> None:
    admin = plane.api()
    ns(admin, "qa")
    admin.ensure(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "bot", "namespace": "qa"},
        }
    )
    token = admin.token_for("qa", "bot", 600)
    bot = Api(plane.url, token, plane.ca_file)
    review = whoami(bot)
    assert review is not None
    assert review["status"]["userInfo"]["username"] == "system:serviceaccount:qa:bot"
    with pytest.raises(ApiError) as e:
        bot.request("GET", "/api/v1/namespaces/qa/secrets")
    assert e.value.code == 403
    admin.delete("v1", "serviceaccounts", "qa", "bot")

    def refused() -> bool:
        try:
            whoami(bot)
        except ApiError as err:
            return err.code == 401
        return False

    wait_for(refused, "the token refused once its ServiceAccount is gone", 30)


def test_the_controller_manager_makes_pods_and_finishes_namespace_deletion(
    plane: ControlPlane,
) -> None:
    admin = plane.api()
    ns(admin, "apps")
    admin.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                },
            },
        }
    )

    def pods() -> list[Any]:
        out = admin.request("GET", "/api/v1/namespaces/apps/pods?labelSelector=app%3Dweb")
        return list((out or {}).get("items") or [])

    wait_for(lambda: len(pods()) == 2, "two pods made by the ReplicaSet controller", 60)
    owner = pods()[0]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet"
    assert owner["name"].startswith("web-")
    assert admin.get("v1", "configmaps", "apps", "kube-root-ca.crt") is not None
    admin.delete("v1", "namespaces", None, "apps")
    wait_for(
        lambda: admin.get("v1", "namespaces", None, "apps") is None,
        "the namespace gone (its objects deleted first)",
        120,
    )


def test_a_bad_rotating_secret_is_refused_by_the_crd_schema(plane: ControlPlane) -> None:
    admin = plane.api()
    ns(admin, "shop")
    bad = {
        "apiVersion": API,
        "kind": "RotatingSecret",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {
            "keys": [{"name": "password", "generator": {"type": "pasword"}}],
            "rotation": {"interval": 24, "overlap": "1h"},
        },
    }
    with pytest.raises(ApiError) as e:
        admin.create(bad)
    assert e.value.code == 422
    message = e.value.status["message"]
    assert "spec.keys[0].generator.type" in message
    assert "spec.rotation.interval" in message
    assert admin.get(API, "rotatingsecrets", "shop", "db") is None  # nothing stored


def test_endpoints_may_not_point_at_loopback(plane: ControlPlane) -> None:
    """Why the harness gives the real server the webhook as `url:` (as envtest does): an
    Endpoints object cannot route the chart's Service to 127.0.0.1."""
    admin = plane.api()
    ns(admin, "rotor-system")
    with pytest.raises(ApiError) as e:
        admin.create(
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "rotor-webhook", "namespace": "rotor-system"},
                "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 8443}]}],
            }
        )
    assert e.value.code == 422
    assert "loopback" in e.value.status["message"]
