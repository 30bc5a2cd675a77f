"""The objects the harness plays the Deployment/ReplicaSet controllers and the kubelet with
(rotorctl/workloads.py, rotorctl/kubelet.py): pure, checked without a server."""

from __future__ import annotations

import pytest

from rotorctl.kubelet import container_env, field_ref, pod_status
from rotorctl.workloads import deployment, pod_of, pod_template, replica_set


def stored(obj: dict, uid: str) -> dict:
    """``obj`` as the API returns it: with a uid."""
    return {**obj, "metadata": {**obj["metadata"], "uid": uid}}


def test_a_pod_carries_the_owner_chain_and_the_template_of_its_deployment() -> None:
    tmpl = pod_template("api", {"rotor.dev/rw": "db"}, "api-sa")
    dep = stored(deployment("shop", "api", tmpl), "d-1")
    rs = stored(replica_set(dep, "api-abc"), "r-1")
    pod = pod_of(rs, "api-abc-x")
    assert rs["metadata"]["ownerReferences"][0] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api",
        "uid": "d-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "r-1"
    assert pod["metadata"]["namespace"] == "shop"
    assert pod["metadata"]["annotations"] == {"rotor.dev/rw": "db"}
    assert pod["metadata"]["labels"] == {"app": "api"}
    assert pod["spec"]["serviceAccountName"] == "api-sa"
    assert dep["spec"]["selector"] == rs["spec"]["selector"] == {"matchLabels": {"app": "api"}}
    pod["spec"]["containers"].append({"name": "extra"})  # a copy: the template is untouched
    assert len(rs["spec"]["template"]["spec"]["containers"]) == 1


POD = {
    "metadata": {"name": "p", "namespace": "shop", "labels": {"app": "api"}},
    "spec": {"serviceAccountName": "api", "containers": [{"name": "app"}, {"name": "side"}]},
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "p"),
        ("metadata.namespace", "shop"),
        ("spec.serviceAccountName", "api"),
        ("metadata.labels['app']", "api"),
        ("metadata.labels['absent']", ""),
        ("status.podIP", ""),
    ],
)
def test_field_ref(path: str, value: str) -> None:
    assert field_ref(POD, path) == value


def test_container_env_resolves_values_and_field_refs() -> None:
    c = {
        "env": [
            {"name": "A", "value": 3},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ]
    }
    assert container_env(POD, c) == {"A": "3", "B": "p"}


@pytest.mark.parametrize("ready", [True, False])
def test_pod_status_reports_every_container(ready: bool) -> None:
    status = pod_status(POD, ready, "2026-01-01T00:00:00Z")
    want = "True" if ready else "False"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Initialized": want,
        "ContainersReady": want,
        "Ready": want,
        "PodScheduled": "True",
    }
    assert [(c["name"], c["ready"]) for c in status["containerStatuses"]] == [
        ("app", ready),
        ("side", ready),
    ]
