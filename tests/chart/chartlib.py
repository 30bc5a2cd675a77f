"""Render the chart with helm-python-sdk and pick documents out of the result.

``COMBINATIONS`` is the table of documented value sets every chart test runs over: the defaults
and each switch of docs/install.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rotor"
RELEASE = "rotor"
NAMESPACE = "rotor-system"
CANISTER_ID = "rrkah-fqaaa-aaaaa-aaaaq-cai"

Doc = dict[str, Any]

COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "combined": {"combined": True},
    "cert-manager": {"certs": {"provider": "cert-manager"}},
    "cert-manager-issuer": {
        "certs": {
            "provider": "cert-manager",
            "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
        }
    },
    "canister": {"acl": {"backend": "canister", "canister": {"id": CANISTER_ID}}},
    "classic-sidecars": {"webhook": {"sidecarMode": "classic"}},
    "monitors": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
    "networkpolicy": {"networkPolicy": {"enabled": True}},
    "networkpolicy-combined": {"networkPolicy": {"enabled": True}, "combined": True},
    "replicas-2": {"controller": {"replicas": 2}, "webhook": {"replicas": 2}},
    "failure-ignore": {"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 5}},
    "no-match-conditions": {"webhook": {"matchConditions": "never"}},
    "restart-evict": {"controller": {"restartMethod": "evict"}},
    "restart-off": {"controller": {"restartUninjected": False, "restartEnvConsumers": False}},
    "scheduling": {
        "imagePullSecrets": [{"name": "regcred"}],
        **{
            component: {
                "podAnnotations": {"example.com/team": "secrets"},
                "podLabels": {"example.com/tier": "infra"},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {
                                        "matchLabels": {"app.kubernetes.io/component": component}
                                    },
                                },
                            }
                        ]
                    }
                },
                "priorityClassName": "system-cluster-critical",
                "serviceAccount": {"annotations": {"example.com/role": component}},
            }
            for component in ("controller", "webhook")
        },
    },
    "everything": {
        "combined": True,
        "controller": {"replicas": 3},
        "certs": {"provider": "cert-manager"},
        "acl": {"backend": "canister", "canister": {"id": CANISTER_ID, "verify": "strict"}},
        "webhook": {"sidecarMode": "classic", "failurePolicy": "Ignore"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "podMonitor": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
            ],
        },
        "logLevel": "DEBUG",
    },
    "audit-receiver": {
        "auditReceiver": {
            "enabled": True,
            "socket": {"allowedSources": ["10.42.0.0/16"]},
            "ingest": {"enabled": True, "tokenSecret": "rotor-audit-ingest"},
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}}
            ],
        }
    },
}

IMAGES: dict[str, Any] = {
    "image": {"repository": "registry.example/rotor-controller"},
    "agent": {"image": {"repository": "registry.example/rotor-agent"}},
}
"""The two values every install must set (the chart fails without them: no registry publishes
the images); every value set here renders with them unless it says otherwise."""


def with_images(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with :data:`IMAGES` underneath (the values' own settings win)."""

    def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for k, v in top.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return merge(IMAGES, values)


COMBINATIONS = {name: with_images(values) for name, values in COMBINATIONS.items()}


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render_files(
    values: dict[str, Any], namespace: str = NAMESPACE, images: bool = True
) -> dict[str, str]:
    values = with_images(values) if images else values
    return chart().render(values, name=RELEASE, namespace=namespace)


def render(values: dict[str, Any], namespace: str = NAMESPACE) -> list[Doc]:
    """Every rendered Kubernetes object (NOTES.txt left out), in file order."""
    out: list[Doc] = []
    for path, text in sorted(render_files(values, namespace).items()):
        if path.endswith(".yaml"):
            out.extend(d for d in yaml.safe_load_all(text) if d)
    return out


def crds() -> list[Doc]:
    """The CRDs the chart ships (Helm installs them before the templates)."""
    return [yaml.safe_load(c["data"]) for c in chart().crds]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def containers(deployment: Doc) -> dict[str, Doc]:
    spec = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def env_of(container: Doc) -> dict[str, str]:
    """The container's literal env values (the chart sets no valueFrom)."""
    out = {}
    for e in container.get("env", []):
        assert "valueFrom" not in e, f"{e['name']} uses valueFrom"
        out[e["name"]] = e["value"]
    return out


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
