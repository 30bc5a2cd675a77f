"""The kubelet's part of a pod that the harness plays: the pod's agent container as a process,
the downward API, its files."""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import kube as agent_kube
from rotor import env as agent_env
from rotorctl.processes import HarnessError, Proc, _script, free_port
from webhook.inject import AGENT_CONTAINER, FILES_VOLUME

__all__ = [
    "AGENT_CONTAINER",
    "FILES_VOLUME",
    "Pod",
    "ProcessNode",
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

    @property
    def app(self) -> str:
        """Its workload's name (the ``app`` label of the harness's pod templates)."""
        return str(((self.obj.get("metadata") or {}).get("labels") or {}).get("app", ""))

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


class ProcessKubelet:
    """What a kubelet does for each pod here: runs its injected agent container as a process
    with the container's command, env (``fieldRef`` resolved), its files volume as a folder and
    a TokenRequest token of the pod's ServiceAccount; reports the pod Running, and Ready once
    the agent's ``/readyz`` answers 200 (the native sidecar's startup probe). App containers are
    not run. ``api`` requests the tokens and writes the status."""

    def __init__(
        self,
        api: Any,
        url: str,
        log_level: str,
        base_env: Mapping[str, str],
        stopping: threading.Event,
    ) -> None:
        self.api = api  # rotorctl.kubeapi.Api
        self.url = url
        self.log_level = log_level
        self.base_env = dict(base_env)
        self.stopping = stopping

    def run(self, p: Pod, extra_env: Mapping[str, str] | None = None) -> None:
        """The pod starts: Running, not Ready; its agent runs; no agent: Ready at once."""
        self.set_status(p, ready=False)
        if p.injected:
            self.start_agent(p, extra_env)
        else:
            self.set_status(p, ready=True)  # nothing holds the app back

    def set_status(self, p: Pod, ready: bool) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"status": pod_status(p.obj, ready, now)}
        self.api.patch("v1", "pods", p.namespace, p.name, body, subresource="status")

    def start_agent(self, p: Pod, extra_env: Mapping[str, str] | None = None) -> None:
        """Run the injected agent container as a process (what the kubelet would run)."""
        c = agent_container(p.obj)
        assert c is not None
        env = container_env(p.obj, c)
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        mount_path = env.get(agent_env.MOUNT_PATH, agent_env.DEFAULT_MOUNT_PATH)
        p.mount = p.dir / mounts.get(mount_path, FILES_VOLUME)  # the emptyDir, as a folder
        p.mount.mkdir(parents=True, exist_ok=True)
        token = p.dir / "serviceaccount" / "token"
        token.parent.mkdir(parents=True, exist_ok=True)
        # The kubelet's projected token: a TokenRequest for the pod's ServiceAccount.
        sa = p.obj["spec"].get("serviceAccountName") or "default"
        token.write_text(self.api.token_for(p.namespace, sa) + "\n")
        token.chmod(0o600)
        p.metrics_port = p.metrics_port or free_port()
        env |= {
            agent_env.MOUNT_PATH: str(p.mount),
            agent_env.METRICS_PORT: str(p.metrics_port),
            agent_kube.ENV_URL: self.url,
            agent_kube.ENV_TOKEN_FILE: str(token),
            agent_kube.ENV_CA_FILE: str(self.api.ca_file or ""),
            "ROTOR_LOG_LEVEL": self.log_level,
        }
        env |= dict(extra_env or {})
        argv = [*(c.get("command") or ["rotor-agent"]), *(c.get("args") or [])]
        argv[0] = _script(argv[0])
        p.agent = Proc(f"agent {p.name}", argv, self.base_env | env, p.dir / "agent.log")
        p.agent.start()
        p.kubelet = threading.Thread(
            target=self._ready, args=(p,), name=f"kubelet-{p.name}", daemon=True
        )
        p.kubelet.start()

    def _ready(self, p: Pod) -> None:
        """The part of a kubelet that matters here: Ready once the agent's /readyz says so."""
        while not self.stopping.is_set() and p.agent is not None and p.agent.running:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{p.metrics_port}/readyz", timeout=2
                ) as r:
                    if r.status == 200:
                        with contextlib.suppress(HarnessError, OSError):
                            self.set_status(p, ready=True)
                        return
            except OSError:
                pass
            self.stopping.wait(0.1)


# -- a Node on a real API server --------------------------------------------------------------
NODE_LEASE_NS = "kube-node-lease"
LEASE_SECONDS = 40
POLL = 0.2  # how often the pods bound to the Node are listed


class ProcessNode:
    """The process kubelet's Node on a real API server (:mod:`rotorctl.realkube`), as
    ``system:node:<name>`` (the Node authorizer's identity): registers the Node Ready with room
    for many pods, renews its Lease (so the node lifecycle controller never evicts), lists the
    pods the scheduler bound to it, calls ``on_pod`` for each new one and ``on_gone`` for each
    deleted one, and confirms a graceful deletion (a DELETE with no grace) as a kubelet does once
    its containers stopped."""

    def __init__(
        self,
        api: Any,
        name: str,
        on_pod: Callable[[Obj], None],
        on_gone: Callable[[Obj], None],
    ) -> None:
        self.api = api  # rotorctl.kubeapi.Api as system:node:<name>
        self.name = name
        self.on_pod = on_pod
        self.on_gone = on_gone
        self.known: dict[str, Obj] = {}  # uid -> pod
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._loop, name=f"node-{name}", daemon=True)
        self._last_lease = 0.0

    def start(self) -> ProcessNode:
        now = _now()
        self.api.ensure(node_object(self.name))
        self.api.patch("v1", "nodes", None, self.name, {"status": node_status(now)}, "status")
        self._renew_lease()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self.stopping.wait(POLL):
            try:
                self.sync()
                if time.monotonic() - self._last_lease > LEASE_SECONDS / 4:
                    self._renew_lease()
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                del self.errors[:-20]

    def sync(self) -> None:
        """One pass: start the new pods, stop and confirm the deleted ones."""
        out = self.api.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.name}")
        seen: dict[str, Obj] = {p["metadata"]["uid"]: p for p in (out or {}).get("items") or []}
        for uid, pod in seen.items():
            if uid not in self.known and not pod["metadata"].get("deletionTimestamp"):
                self.known[uid] = pod
                self.on_pod(pod)
            elif uid in self.known and pod["metadata"].get("deletionTimestamp"):
                self.on_gone(self.known.pop(uid))
                self._confirm_deletion(pod)
            elif pod["metadata"].get("deletionTimestamp"):
                self._confirm_deletion(pod)
        for uid in [u for u in self.known if u not in seen]:
            self.on_gone(self.known.pop(uid))

    def _confirm_deletion(self, pod: Obj) -> None:
        m = pod["metadata"]
        path = f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}"
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": m["uid"]},
        }
        with contextlib.suppress(HarnessError):
            self.api.request("DELETE", path, body)

    def _renew_lease(self) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": NODE_LEASE_NS},
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _now(micro=True),
            },
        }
        self.api.ensure(lease)
        self._last_lease = time.monotonic()


def _now(micro: bool = False) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.datetime.now(datetime.UTC).strftime(fmt)


def node_object(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {},
    }


def node_status(now: str) -> Obj:
    """Ready, room for many pods, the address of this machine's loopback."""
    room = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "100Gi"}
    return {
        "capacity": room,
        "allocatable": room,
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "rotor's process kubelet is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        ],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "rotor-process-kubelet",
            "bootID": "",
            "containerRuntimeVersion": "process://",
            "kernelVersion": "",
            "kubeProxyVersion": "",
            "machineID": "",
            "osImage": "",
            "systemUUID": "",
        },
    }
