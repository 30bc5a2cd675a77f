"""The part of the Deployment and ReplicaSet controllers the harness plays: the objects a
Deployment, its ReplicaSet and each of their pods would be, with owner references (pure; the
harness creates them in the emulator). Pods come only when the harness asks for one: nothing
here reconciles a replica count."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rotorctl.kubelet import Pod

Obj = dict[str, Any]


@dataclass
class Workload:
    namespace: str
    name: str
    service_account: str
    annotations: dict[str, str]
    replica_set: str = ""
    pods: list[Pod] = field(default_factory=list)


def owner_reference(obj: Mapping[str, Any]) -> Obj:
    """The controller owner reference to ``obj`` (as a ReplicaSet or a pod carries)."""
    m = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": m["name"],
        "uid": m.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_template(name: str, annotations: Mapping[str, str], service_account: str) -> Obj:
    """One app container labelled ``app: <name>``, with the annotations that ask for secrets."""
    return {
        "metadata": {"labels": {"app": name}, "annotations": dict(annotations)},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "app", "image": "app:1"}],
        },
    }


def deployment(namespace: str, name: str, template: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": copy.deepcopy(dict(template)),
        },
    }


def replica_set(deployment: Mapping[str, Any], name: str) -> Obj:
    """The ReplicaSet ``name`` of ``deployment`` (as created, with its uid), same template."""
    m = deployment["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": m["namespace"],
            "labels": dict(m.get("labels") or {}),
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": {
            "selector": copy.deepcopy(deployment["spec"]["selector"]),
            "template": copy.deepcopy(deployment["spec"]["template"]),
        },
    }


def pod_of(replica_set: Mapping[str, Any], name: str) -> Obj:
    """The pod ``name`` the ReplicaSet (as stored, with its uid) makes from its template."""
    tmpl = replica_set["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": replica_set["metadata"]["namespace"],
            "labels": dict(tmpl["metadata"].get("labels") or {}),
            "annotations": dict(tmpl["metadata"].get("annotations") or {}),
            "ownerReferences": [owner_reference(replica_set)],
        },
        "spec": copy.deepcopy(tmpl["spec"]),
    }
