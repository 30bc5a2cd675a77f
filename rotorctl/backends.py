"""The two Kubernetes API servers the harness (:mod:`rotorctl.harness`) runs Rotor on, behind one
small interface: the strict emulator (:mod:`rotorctl.kubeemu`, in this process, fast) and a real
control plane (:mod:`rotorctl.realkube`: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) with the process kubelet's Node (:class:`rotorctl.kubelet.ProcessNode`).

What differs, and how each does it:

* namespaces: objects on the real server (NamespaceLifecycle refuses writes into a missing
  one); the emulator needs none;
* Rotor's CRDs: applied as generated (``crds/``) and served by the real server (schemas
  enforced); the emulator has them built in;
* the webhook: the emulator routes the chart's Service to the local port itself; the real
  server is given the chart's MutatingWebhookConfiguration with its ``service`` reference
  replaced by ``url: https://127.0.0.1:PORT/PATH`` (what envtest does: Endpoints may not point
  at loopback, and no kube-proxy runs here);
* pods: the emulator's are created by the harness as the ReplicaSet controller would; on the
  real server the Deployment is scaled and the real controller-manager creates each pod, the
  real scheduler binds it to the process kubelet's Node, which runs it.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rotorctl.kubeapi import Api, ApiError
from rotorctl.kubelet import Pod, ProcessNode
from rotorctl.processes import HarnessError, wait_for
from rotorctl.workloads import Workload

Obj = dict[str, Any]
KINDS = ("emulator", "real")
Node = ProcessNode
CRDS = Path(__file__).resolve().parent.parent / "crds"
WEBHOOK_ADMISSION = "admissionregistration.k8s.io/v1"


class EmulatorBackend:
    """The strict emulator, HTTPS with tokens and RBAC, in a thread of this process."""

    kind = "emulator"

    def __init__(self, workdir: Path, progress: Callable[[str], None]) -> None:
        from rotorctl.kubeemu import EmulatorThread

        self.workdir = workdir
        self.progress = progress
        self.emulator: EmulatorThread | None = None
        self._thread = EmulatorThread

    def start(self) -> Api:
        self.progress(
            "starting the Kubernetes API emulator (kmock, in this process; tokens and RBAC "
            "enforced)"
        )
        self.emulator = self._thread(secure=True).start()
        return Api(self.emulator.url, self.emulator.admin_token, self.emulator.ca_file)

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    @property
    def url(self) -> str:
        return self.emulator.url if self.emulator else ""

    def write_kubeconfig(self, path: Path, token: str | None = None, user: str = "admin") -> Path:
        assert self.emulator is not None
        return self.emulator.write_kubeconfig(path, token, user)

    def ensure_namespace(self, api: Api, ns: str) -> None:
        """Namespaces need no object in the emulator (it does not check that they exist)."""

    def install_crds(self, api: Api) -> None:
        """The emulator serves Rotor's kinds built in."""

    def route_webhook(self, api: Api, config: Obj, port: int, ca_pem: str) -> None:
        """What the Service, kube-proxy and cert-manager's cainjector do in a cluster: the
        emulator reaches the Service at this port and trusts this CA (caBundle)."""
        from controller import certs

        assert self.emulator is not None
        hooks = config.get("webhooks") or [{}]
        svc = (hooks[0].get("clientConfig") or {}).get("service") or {}
        key = (str(svc.get("namespace") or ""), str(svc.get("name") or ""))
        self.emulator.call(
            lambda k8s: k8s.admission.endpoints.__setitem__(key, f"127.0.0.1:{port}")
        )
        api.request(
            "PATCH",
            f"/apis/{WEBHOOK_ADMISSION}/mutatingwebhookconfigurations/{config['metadata']['name']}",
            certs.ca_bundle_patch(config, ca_pem),
            "application/json-patch+json",
        )


def url_webhook(config: Obj, port: int, ca_pem: str) -> Obj:
    """The chart's webhook configuration with each ``service`` reference replaced by the URL
    of the local webhook (the same path) and ``caBundle`` set: what envtest does."""
    import base64

    out = copy.deepcopy(config)
    bundle = base64.b64encode(ca_pem.encode()).decode()
    for hook in out.get("webhooks") or []:
        cc = hook.setdefault("clientConfig", {})
        svc = cc.pop("service", None) or {}
        cc["url"] = f"https://127.0.0.1:{port}{svc.get('path') or '/'}"
        cc["caBundle"] = bundle
    return out


def crd_documents(folder: Path = CRDS) -> list[Obj]:
    docs: list[Obj] = []
    for f in sorted(folder.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def established(api: Api, name: str) -> bool:
    crd = api.get("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name) or {}
    conds = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)


class RealBackend:
    """A real control plane in ``<workdir>/kube`` and the process kubelet's Node."""

    kind = "real"

    def __init__(
        self, workdir: Path, progress: Callable[[str], None], cancel: threading.Event
    ) -> None:
        from rotorctl.realkube import ControlPlane

        self.workdir = workdir
        self.progress = progress
        self.plane = ControlPlane(workdir / "kube", progress=progress, cancel=cancel)
        self.cancel = cancel

    def start(self) -> Api:
        self.plane.start()
        return self.plane.api()

    def stop(self) -> None:
        self.plane.stop()

    @property
    def url(self) -> str:
        return self.plane.url

    def write_kubeconfig(self, path: Path, token: str | None = None, user: str = "admin") -> Path:
        return self.plane.write_kubeconfig(path, token, user)

    def ensure_namespace(self, api: Api, ns: str) -> None:
        api.ensure({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    def install_crds(self, api: Api) -> None:
        self.progress("applying Rotor's CRDs (crds/, as generated)")
        self.install_crds_on(api, self.cancel)

    @staticmethod
    def install_crds_on(api: Api, cancel: threading.Event | None = None) -> None:
        """Rotor's CRDs as generated (crds/), then wait until the server serves each."""
        names = []
        for doc in crd_documents():
            api.ensure(doc)
            names.append(doc["metadata"]["name"])
        for name in names:
            wait_for(
                lambda name=name: established(api, name),  # type: ignore[misc]
                f"CRD {name} established",
                30,
                cancel,
            )

    def route_webhook(self, api: Api, config: Obj, port: int, ca_pem: str) -> None:
        body = url_webhook(config, port, ca_pem)
        name = body["metadata"]["name"]
        current = api.get(WEBHOOK_ADMISSION, "mutatingwebhookconfigurations", None, name)
        if current is None:
            api.create(body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        try:
            api.request(
                "PUT",
                f"/apis/{WEBHOOK_ADMISSION}/mutatingwebhookconfigurations/{name}",
                body,
            )
        except ApiError as e:
            raise HarnessError(f"the webhook configuration was refused: {e}") from None

    def start_node(
        self, on_pod: Callable[[Obj], None], on_gone: Callable[[Obj], None]
    ) -> ProcessNode:
        """The process kubelet's Node, as ``system:node:<name>`` (its own client certificate)."""
        creds = self.plane.client("node", f"system:node:{NODE_NAME}", ["system:nodes"])
        api = Api(self.url, ca_file=self.plane.ca_file, client_cert=(creds.cert, creds.key))
        return ProcessNode(api, NODE_NAME, on_pod, on_gone).start()


NODE_NAME = "rotor-node"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def scale(api: Api, namespace: str, name: str, replicas: int) -> None:
    """The Deployment's replica count (kube-controller-manager makes or removes the pods)."""
    api.patch("apps/v1", "deployments", namespace, name, {"spec": {"replicas": replicas}})


def mark_for_removal(api: Api, namespace: str, name: str) -> None:
    """The pod the ReplicaSet controller removes first when it scales down."""
    with contextlib.suppress(ApiError):
        api.patch(
            "v1",
            "pods",
            namespace,
            name,
            {"metadata": {"annotations": {DELETION_COST: "-2147483647"}}},
        )


def failed_creates(api: Api, namespace: str, workload: str) -> dict[str, tuple[int, str]]:
    """The ReplicaSet controller's FailedCreate Events for ``workload``'s ReplicaSets: how it
    reports that the API refused a pod (name -> (count, message))."""
    out = api.request(
        "GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector=reason%3DFailedCreate"
    )
    found: dict[str, tuple[int, str]] = {}
    for e in (out or {}).get("items") or []:
        obj = e.get("involvedObject") or {}
        if obj.get("kind") == "ReplicaSet" and str(obj.get("name", "")).startswith(workload + "-"):
            found[e["metadata"]["name"]] = (int(e.get("count") or 1), str(e.get("message", "")))
    return found


def refusal(message: str) -> ApiError:
    """The API's refusal of a pod, as the ReplicaSet controller reported it, as the error a
    direct create would have raised (the status code from the message's reason)."""
    text = message.removeprefix("Error creating: ")
    code = 500 if text.startswith("Internal error") else 403 if "forbidden" in text else 422
    return ApiError(f"the API refused the pod: HTTP {code} {text!r}", code, {"message": text})


def scale_up(api: Api, w: Workload, pods: Callable[[], list[Pod]], cancel: threading.Event) -> Pod:
    """One more replica of ``w``; its new pod once the Node runs it (``pods``: those it runs).
    The API's refusal of the pod (a webhook's denial, failurePolicy Fail) raises ApiError."""
    before = failed_creates(api, w.namespace, w.name)

    def new_pod() -> Pod | None:
        for p in pods():
            if p.namespace == w.namespace and p.app == w.name and p not in w.pods:
                return p
        for name, (count, message) in failed_creates(api, w.namespace, w.name).items():
            if count > before.get(name, (0, ""))[0]:
                scale(api, w.namespace, w.name, len(w.pods))
                raise refusal(message)
        return None

    scale(api, w.namespace, w.name, len(w.pods) + 1)
    what = f"a pod of {w.namespace}/{w.name} made, scheduled and started"
    return wait_for(new_pod, what, cancel=cancel)
