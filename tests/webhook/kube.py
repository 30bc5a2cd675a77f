"""Helpers for the webhook tests: AdmissionReviews in, patched and schema-checked pods out."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import kubernetes_validate

from webhook.admission import mutate

KUBE_VERSIONS = ("1.29", "1.33")
"""Native sidecars (restartPolicy on init containers) are in the schema from 1.29 on."""


def review(pod: dict[str, Any], namespace: str = "shop", operation: str = "CREATE") -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b5e3c2a-1111-4b1e-9d5f-2f6c1a7e9a01",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": False,
        },
    }


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A minimal valid pod, as a ReplicaSet creates it (generateName, no name yet)."""
    meta: dict[str, Any] = {"generateName": "api-7d9f-", "namespace": "shop"}
    if annotations is not None:
        meta["annotations"] = annotations
    body = {"containers": [{"name": "app", "image": "example/app:1"}], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def ops_of(answer: dict) -> list[dict]:
    resp = answer["response"]
    if "patch" not in resp:
        return []
    assert resp["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(resp["patch"]))


def apply(original: dict[str, Any], answer: dict) -> dict[str, Any]:
    """The pod the API server would store: the patch applied with the jsonpatch package."""
    return jsonpatch.apply_patch(copy.deepcopy(original), ops_of(answer))


def validate(obj: dict[str, Any]) -> None:
    """kubernetes-validate --strict against every supported schema version."""
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"invalid for Kubernetes {version}: {e.message}") from None


def containers(obj: dict[str, Any], key: str = "containers") -> dict[str, dict]:
    return {c["name"]: c for c in obj["spec"].get(key) or []}


def env_of(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def mutate_ok(pod: dict[str, Any], settings: Any, namespace: str = "shop") -> dict:
    """mutate() that must allow and patch; the answer."""
    answer = mutate(review(pod, namespace), settings)
    assert answer["response"]["allowed"] is True, answer["response"].get("status")
    assert ops_of(answer), "expected a patch"
    return answer
