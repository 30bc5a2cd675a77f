"""The strict emulator's additions: uid, resourceVersion, creationTimestamp and 409s."""

from __future__ import annotations

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
    kube.create(
        path("rotor.dev/v1alpha1", "rotatingsecrets", "ns"),
        {"metadata": {"name": "x"}, "spec": {"keys": []}},
    )
    kube.patch(url + "/status", {"status": {"phase": "Active"}, "spec": {"keys": None}})
    obj = kube.get(url)
    assert obj["status"] == {"phase": "Active"}
    assert obj["spec"] == {"keys": []}
