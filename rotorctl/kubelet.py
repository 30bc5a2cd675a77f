"""The kubelet's part of a pod that the harness plays: the pod's agent container as a process,
the downward API, its files."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotorctl.processes import Proc
from webhook.inject import AGENT_CONTAINER, FILES_VOLUME

__all__ = [
    "AGENT_CONTAINER",
    "FILES_VOLUME",
    "Pod",
    "agent_container",
    "container_env",
    "field_ref",
    "pod_status",
]

Obj = dict[str, Any]


def pod_status(pod: Mapping[str, Any], ready: bool, now: str) -> Obj:
    """The ``status`` a kubelet reports for a running pod whose containers are (not) ready."""
    status = "True" if ready else "False"
    containers = [c["name"] for c in pod["spec"].get("containers") or []]
    return {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "startTime": now,
        "conditions": [
            {"type": t, "status": status, "lastTransitionTime": now}
            for t in ("Initialized", "ContainersReady", "Ready")
        ]
        + [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [
            {"name": c, "ready": ready, "started": ready, "restartCount": 0} for c in containers
        ],
    }


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """A container's ``env`` as the kubelet gives it: values, and ``fieldRef`` from the pod."""
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath"):
            env[e["name"]] = field_ref(pod, e["valueFrom"]["fieldRef"]["fieldPath"])
    return env


def field_ref(pod: Mapping[str, Any], path: str) -> str:
    """The downward API: a ``fieldRef.fieldPath`` of the pod object."""
    m = pod.get("metadata") or {}
    if path.startswith(("metadata.annotations['", "metadata.labels['")):
        kind, _, rest = path.partition("['")
        return str((m.get(kind.split(".")[1]) or {}).get(rest.rstrip("']"), ""))
    node: Any = pod
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return "" if node is None else str(node)


@dataclass
class Pod:
    """A pod created in the emulator and, if the webhook injected it, its agent process."""

    namespace: str
    name: str
    obj: Obj
    dir: Path
    agent: Proc | None = None
    metrics_port: int = 0
    mount: Path | None = None
    kubelet: threading.Thread | None = None

    @property
    def injected(self) -> bool:
        return agent_container(self.obj) is not None

    def files(self, secret: str) -> dict[str, str]:
        """The visible files of one secret (what the app reads), ``{}`` when absent."""
        if self.mount is None:
            return {}
        folder = self.mount / secret
        out: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for f in sorted(folder.iterdir()):
                if not f.name.startswith(".."):
                    with contextlib.suppress(OSError):
                        out[f.name] = f.read_text()
        return out

    def data_link(self, secret: str) -> str:
        """Where ``..data`` points (changes exactly when a new set of files is swapped in)."""
        if self.mount is None:
            return ""
        try:
            return os.readlink(self.mount / secret / "..data")
        except OSError:
            return ""

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


def agent_container(pod: Mapping[str, Any]) -> Obj | None:
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == AGENT_CONTAINER:
            return dict(c)
    return None
