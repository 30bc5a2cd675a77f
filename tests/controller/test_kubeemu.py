"""The strict emulator's additions: uid, resourceVersion, creationTimestamp, 409s, selectors."""

from __future__ import annotations

import json
import urllib.request

import pytest

from controller.kube import JSON_PATCH, Kube, path
from rotor.errors import ConflictError


@pytest.fixture
def kube(kube_emulator):
    k = Kube(kube_emulator.api_client())
    yield k
    k.close()


def test_create_stamps_metadata_and_patch_checks_resource_version(kube):
    made = kube.create(path("v1", "secrets", "ns"), {"metadata": {"name": "s"}})
    meta = made["metadata"]
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert meta["namespace"] == "ns"
    rv = meta["resourceVersion"]
    url = path("v1", "secrets", "ns", "s")
    after = kube.patch(url, {"metadata": {"resourceVersion": rv}, "data": {"a": "YQ=="}})
    assert int(after["metadata"]["resourceVersion"]) > int(rv)
    with pytest.raises(ConflictError):
        kube.patch(url, {"metadata": {"resourceVersion": rv}, "data": {"a": "Yg=="}})
    with pytest.raises(ConflictError):
        kube.patch(
            url,
            [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}],
            JSON_PATCH,
        )
    assert kube.get(url)["data"] == {"a": "YQ=="}
    # a patch without a precondition still applies
    kube.patch(url, {"data": {"b": "Yg=="}})


def test_status_subresource_keeps_only_status(kube):
    url = path("rotor.dev/v1alpha1", "rotatingsecrets", "ns", "x")
    spec = {
        "keys": [{"name": "password", "generator": {"type": "password", "length": 20}}],
        "rotation": {"interval": "24h", "overlap": "1h"},
    }
    kube.create(
        path("rotor.dev/v1alpha1", "rotatingsecrets", "ns"),
        {"metadata": {"name": "x"}, "spec": spec},
    )
    kube.patch(url + "/status", {"status": {"phase": "Active"}, "spec": {"keys": None}})
    obj = kube.get(url)
    assert obj["status"] == {"phase": "Active"}
    assert obj["spec"] == spec


def test_list_and_watch_filter_by_label_selector(kube_emulator, kube):
    """The emulator answers a labelSelector as the API server does (equality, exists, sets), so
    a watch that asks for Rotor's objects only is measured as it would be in a cluster."""
    for name, labels in (("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {})):
        kube.create(path("v1", "pods", "ns"), {"metadata": {"name": name, "labels": labels}})
    names = lambda sel: sorted(o["metadata"]["name"] for o in kube.items(path("v1", "pods"), sel))  # noqa: E731
    assert names("app=x") == ["a"]
    assert names("app==y") == ["b"]
    assert names("app") == ["a", "b"]
    assert names("!app") == ["c"]
    assert names("app!=x") == ["b", "c"]
    assert names("app in (x, y),tier") == ["a"]
    assert names("app notin (x)") == ["b", "c"]
    assert names("") == ["a", "b", "c"]
    with pytest.raises(Exception, match="400"):
        kube.items(path("v1", "pods"), "app in x")

    url = f"{kube_emulator.url}/api/v1/pods?watch=true&labelSelector=app%3Dy"
    kube.patch(path("v1", "pods", "ns", "a"), {"metadata": {"annotations": {"n": "1"}}})
    kube.patch(path("v1", "pods", "ns", "b"), {"metadata": {"annotations": {"n": "1"}}})
    seen = []
    with urllib.request.urlopen(url, timeout=5) as r:
        seen.append(json.loads(r.readline()))  # the existing one
        kube.patch(path("v1", "pods", "ns", "a"), {"metadata": {"annotations": {"n": "2"}}})
        kube.patch(path("v1", "pods", "ns", "b"), {"metadata": {"annotations": {"n": "2"}}})
        seen.append(json.loads(r.readline()))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen] == [
        ("ADDED", "b"),
        ("MODIFIED", "b"),
    ]
