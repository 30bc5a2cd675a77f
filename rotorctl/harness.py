"""The whole of Rotor on one machine, as processes: used by ``rotor demo``, tests/system and
bench/propagation.py.

Split by concern: the API server is :mod:`kubeemu.emulator` (admission in
:mod:`kubeemu.admission`, RBAC in :mod:`kubeemu.rbac`), the client of it :mod:`rotorctl.kubeapi`,
the kubelet's pod :mod:`rotorctl.kubelet`, processes :mod:`rotorctl.processes`, the
propagation probe :mod:`rotorctl.probe`, the Deployment/ReplicaSet objects
:mod:`rotorctl.workloads`, OpenBao :mod:`rotorctl.openbao`, the certificates :mod:`rotorctl.tls`
(over :mod:`controller.certs`); this module wires them into :class:`System` (and re-exports
their names for its callers).

What runs for real: ``rotor-webhook`` (HTTPS, a certificate made here), ``rotor-controller``
(kopf, the ConfigMap ACL), ``rotor-agent`` once per pod with the command, env and mounts of the
container the webhook injected, and an OpenBao dev server (``bao``) when asked and installed.

What is simulated, and how:

* the Kubernetes API is :mod:`kubeemu.emulator` with ``secure=True`` (HTTPS, tokens, RBAC,
  mutating admission, garbage collection, selectors), not a kube-apiserver; or, with
  ``kube="real"``, a real control plane (:mod:`rotorctl.realkube`; what differs is in
  :mod:`rotorctl.backends`);
* identities: the chart's ServiceAccounts and RBAC are rendered from charts/rotor
  (:mod:`rotorctl.chartrbac`) and applied; the controller runs with its ServiceAccount's token
  (a kubeconfig), each agent with its pod's; this module acts as the admin;
* admission: the chart's MutatingWebhookConfiguration (``failure_policy``, default Ignore) is
  applied, its Service routed to the webhook's local port and its caBundle set to the CA made
  here, as cert-manager would; the emulator calls the webhook on each pod create;
* the kubelet: :class:`rotorctl.kubelet.ProcessKubelet` runs a pod's agent container as a
  local process (env, files volume as a folder, a TokenRequest token; its own metrics port) and
  reports it Ready once the agent's ``/readyz`` answers 200. App containers are not run.
* Deployments and ReplicaSets are plain objects in the emulator; this harness plays the
  ReplicaSet controller only for the pods it is told to create. On the real control plane the
  Deployment is scaled and kube-controller-manager creates each pod; the scheduler binds it to
  the process kubelet's Node (:class:`rotorctl.kubelet.ProcessNode`), which runs it here.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller import certs
from rotor import API
from rotor.annotations import ROTATE_NOW
from rotor.layout import SecretState
from rotorctl import backends, chartrbac
from rotorctl.kubeapi import Api, ApiError, plural_of
from rotorctl.kubelet import (
    AGENT_CONTAINER,
    Pod,
    ProcessKubelet,
    agent_container,
    field_ref,
)
from rotorctl.openbao import VAULT_TOKEN, DevServer
from rotorctl.probe import PropagationProbe
from rotorctl.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Cancelled,
    HarnessError,
    Proc,
    Started,
    _script,
    find_script,
    free_port,
    wait_for,
)
from rotorctl.tls import make_certs
from rotorctl.workloads import Workload, deployment, pod_of, pod_template, replica_set

__all__ = [
    "ACL_CONFIGMAP",
    "AGENT_CONTAINER",
    "ROTOR_NAMESPACE",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "VAULT_TOKEN",
    "Api",
    "ApiError",
    "Cancelled",
    "HarnessError",
    "Pod",
    "Proc",
    "PropagationProbe",
    "System",
    "Workload",
    "agent_container",
    "field_ref",
    "free_port",
    "plural_of",
    "system",
    "wait_for",
]

if TYPE_CHECKING:
    from kubeemu.emulator import EmulatorThread

Obj = dict[str, Any]
ROTOR_NAMESPACE = "rotor-system"
ACL_CONFIGMAP = "rotor-acl"


# -- the system ---------------------------------------------------------------------------------
class System(Started):
    """Emulator (or a real control plane, ``kube="real"``) + webhook + controller (+ OpenBao)
    + pods with agent processes."""

    def __init__(
        self,
        workdir: Path,
        *,
        vault: bool = False,
        acl_poll: str = "1s",
        log_level: str = "INFO",
        progress: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        rbac_filter: Callable[[list[Obj]], list[Obj]] | None = None,
        failure_policy: str = "Ignore",
        kube: str = "emulator",
    ) -> None:
        """``cancel``: when set (e.g. by a signal handler), waits while starting stop at once.
        ``rbac_filter``: changes the chart's rendered identities before they are applied.
        ``kube``: ``emulator`` (in this process) or ``real`` (:mod:`rotorctl.realkube`)."""
        if kube not in backends.KINDS:
            raise HarnessError(f"kube={kube!r}: use one of {', '.join(backends.KINDS)}")
        self.rbac_filter = rbac_filter
        self.failure_policy = failure_policy
        self.chart_identities: list[Obj] = []
        self.webhook_config: Obj = {}
        self.workdir = workdir
        self.want_vault = vault
        self.acl_poll = acl_poll
        self.log_level = log_level
        self.progress = progress or (lambda _msg: None)
        self.cancel = cancel or threading.Event()
        self.backend: backends.EmulatorBackend | backends.RealBackend = (
            backends.RealBackend(workdir, self.progress, self.cancel)
            if kube == "real"
            else backends.EmulatorBackend(workdir, self.progress)
        )
        self.node: backends.Node | None = None
        self.api = Api("")
        self.kubelet = ProcessKubelet(self.api, "", log_level, {}, threading.Event())
        self.workloads: list[Workload] = []
        self.webhook: Proc | None = None
        self.webhook_port = 0
        self.webhook_metrics_port = 0
        self.controller: Proc | None = None
        self.controller_metrics_port = 0
        self.openbao: DevServer | None = None
        self.ca = Path()
        self.kubeconfig = Path()
        self.pods: dict[str, Pod] = {}
        self._stopping = threading.Event()
        self._pod_env: dict[tuple[str, str], dict[str, str]] = {}

    # -- start and stop ---------------------------------------------------------------------
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api = self.backend.start()
        self.kubelet = ProcessKubelet(
            self.api, self.url, self.log_level, self._base_env(), self._stopping
        )
        self.kubeconfig = self.backend.write_kubeconfig(self.workdir / "kubeconfig")
        self.backend.install_crds(self.api)
        for ns in (ROTOR_NAMESPACE,):
            self.ensure_namespace(ns)
        self.progress("applying the chart's ServiceAccounts and RBAC (rendered from charts/rotor)")
        self.apply_identities()
        try:
            self.webhook_config = chartrbac.webhook_configuration(
                ROTOR_NAMESPACE, {"webhook": {"failurePolicy": self.failure_policy}}
            )
        except chartrbac.ChartUnavailable as e:
            raise HarnessError(str(e)) from None
        self.api.ensure(self.webhook_config)
        self.api.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": ACL_CONFIGMAP, "namespace": ROTOR_NAMESPACE},
                "data": {},
            }
        )
        self.progress("starting the webhook (rotor-webhook, HTTPS with a fresh certificate)")
        self.start_webhook()
        self.progress("starting the controller (rotor-controller, ConfigMap ACL)")
        self.start_controller()
        if isinstance(self.backend, backends.RealBackend):
            self.progress("registering the process kubelet's Node (runs the pods bound to it)")
            self.node = self.backend.start_node(self._run_pod, self._pod_gone)
        if self.want_vault:
            bao = find_script("bao")  # .venv/bin/bao too, when .venv/bin is not on PATH
            if bao is None:
                self.progress("OpenBao (bao) is not installed: no external store")
            else:
                self.progress("starting OpenBao (bao server -dev)")
                self.start_vault(bao)

    def stop(self) -> None:
        self._stopping.set()
        if self.node is not None:
            self.node.stop()  # no new pod starts while the others stop
        procs = [p.agent for p in self.pods.values() if p.agent is not None]
        procs += [p for p in (self.controller, self.webhook, self.vault) if p is not None]
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            p.stop()
        for pod in list(self.pods.values()):
            if pod.kubelet is not None:
                pod.kubelet.join(STOP_TIMEOUT)
        self.backend.stop()

    @property
    def emulator(self) -> EmulatorThread | None:
        """The emulator's thread (None on the real control plane)."""
        return getattr(self.backend, "emulator", None)

    real = property(lambda self: isinstance(self.backend, backends.RealBackend))

    @property
    def vault(self) -> Proc | None:
        """The OpenBao dev server's process, when one runs."""
        return self.openbao.proc if self.openbao is not None else None

    @property
    def vault_url(self) -> str:
        return self.openbao.url if self.openbao is not None else ""

    @property
    def url(self) -> str:
        return self.backend.url

    def ensure_namespace(self, ns: str) -> None:
        """A Namespace object on the real server; the emulator needs none."""
        self.backend.ensure_namespace(self.api, ns)

    def apply_identities(self) -> None:
        """The chart's ServiceAccounts, ClusterRoles, Roles and bindings, as ``helm install``
        would create them (``rbac_filter`` may change them first: a test removes a rule)."""
        try:
            docs = chartrbac.identities(ROTOR_NAMESPACE)
        except chartrbac.ChartUnavailable as e:
            raise HarnessError(str(e)) from None
        if self.rbac_filter is not None:
            docs = self.rbac_filter(docs)
        for d in docs:
            self.api.ensure(d)
        self.chart_identities = docs

    def service_account(self, namespace: str, name: str) -> None:
        """Create the ServiceAccount ``namespace/name`` unless it exists."""
        self.api.ensure(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }
        )

    def identity_kubeconfig(self, name: str, namespace: str, service_account: str) -> Path:
        """A kubeconfig holding a fresh token of ``namespace/service_account``."""
        token = self.api.token_for(namespace, service_account)
        return self.backend.write_kubeconfig(
            self.workdir / "identities" / f"{name}.kubeconfig", token, service_account
        )

    def token(self, namespace: str, service_account: str) -> str:
        """A token of the ServiceAccount, for a test acting as that identity."""
        return self.api.token_for(namespace, service_account)

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTOR_", "KUBERNETES_"))}
        env["ROTOR_LOG_LEVEL"] = self.log_level
        return env

    def start_webhook(self) -> None:
        self.ca, cert, key = make_certs(
            self.workdir / "webhook-tls", "rotor-webhook", certs.service_names(self.webhook_config)
        )
        self.webhook_port = self.webhook_port or free_port()
        self.webhook_metrics_port = self.webhook_metrics_port or free_port()
        env = self._base_env() | {
            "ROTOR_WEBHOOK_HOST": "127.0.0.1",
            "ROTOR_WEBHOOK_PORT": str(self.webhook_port),
            "ROTOR_WEBHOOK_METRICS_PORT": str(self.webhook_metrics_port),
            "ROTOR_WEBHOOK_CERT_FILE": str(cert),
            "ROTOR_WEBHOOK_KEY_FILE": str(key),
            "ROTOR_NAMESPACE": ROTOR_NAMESPACE,
        }
        self.webhook = Proc(
            "webhook", [_script("rotor-webhook")], env, self.workdir / "logs" / "webhook.log"
        ).start()
        wait_for(
            lambda: self._webhook_healthy(), "the webhook's /healthz over TLS", cancel=self.cancel
        )
        # What the Service, kube-proxy and cert-manager's cainjector do in a cluster: the API
        # reaches the webhook at this port and trusts this CA (caBundle).
        self.backend.route_webhook(
            self.api, self.webhook_config, self.webhook_port, self.ca.read_text()
        )

    def _webhook_healthy(self) -> bool:
        if self.webhook is None or not self.webhook.running:
            raise HarnessError(
                "rotor-webhook exited:\n" + (self.webhook.tail() if self.webhook else "")
            )
        ctx = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{self.webhook_port}/healthz", context=ctx, timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop_webhook(self) -> None:
        if self.webhook is not None:
            self.webhook.stop()

    def start_controller(self) -> None:
        self.controller_metrics_port = self.controller_metrics_port or free_port()
        env = self._base_env() | {
            "ROTOR_NAMESPACE": ROTOR_NAMESPACE,
            "ROTOR_ACL_BACKEND": "configmap",
            "ROTOR_ACL_CONFIGMAP": ACL_CONFIGMAP,
            "ROTOR_ACL_POLL": self.acl_poll,
            "ROTOR_CONTROLLER_METRICS_PORT": str(self.controller_metrics_port),
            "ROTOR_MANAGE_CERTS": "false",
            "ROTOR_RESTART_MIN_INTERVAL": "1s",
            "POD_NAME": "rotor-controller-0",
            # The chart's ServiceAccount: the controller holds exactly the chart's RBAC.
            "KUBECONFIG": str(
                self.identity_kubeconfig("controller", ROTOR_NAMESPACE, chartrbac.CONTROLLER_SA)
            ),
        }
        if not self.real:  # no Deployment controller moves a workload's status as its pods
            env["ROTOR_UNINJECTED_SWEEP"] = "1s"  # come: list uninjected pods each second
        self.controller = Proc(
            "controller",
            [_script("rotor-controller")],
            env,
            self.workdir / "logs" / "controller.log",
        ).start()

        def up() -> bool:
            if self.controller is None or not self.controller.running:
                raise HarnessError(
                    "rotor-controller exited:\n"
                    + (self.controller.tail() if self.controller else "")
                )
            return "rotor_controller_leader 1.0" in self.controller_metrics()

        wait_for(up, "the controller leading (rotor_controller_leader 1)", cancel=self.cancel)

    def controller_metrics(self) -> str:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.controller_metrics_port}/metrics", timeout=2
            ) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def start_vault(self, bao: str) -> None:
        self.openbao = DevServer(bao, self.workdir / "logs" / "openbao.log", self._base_env())
        self.openbao.start(self.cancel)

    def stop_vault(self) -> None:
        if self.vault is not None:
            self.vault.stop()

    def seal_vault(self) -> None:
        """OpenBao goes down the way it does in production: sealed, every call answers 503."""
        assert self.openbao is not None
        self.openbao.seal()

    def unseal_vault(self) -> None:
        assert self.openbao is not None
        self.openbao.unseal()

    def vault_version(self, path: str) -> int:
        """The current KV v2 version at ``secret/<path>`` (0: none or not readable)."""
        return self.openbao.version(path) if self.openbao is not None else 0

    # -- objects ----------------------------------------------------------------------------
    def rotating_secret(
        self,
        namespace: str,
        name: str,
        keys: list[Obj],
        interval: str = "24h",
        overlap: str = "10s",
        external: list[Obj] | None = None,
    ) -> Obj:
        self.ensure_namespace(namespace)
        spec: Obj = {"keys": keys, "rotation": {"interval": interval, "overlap": overlap}}
        if external:
            spec["externalStores"] = external
        return self.api.create(
            {
                "apiVersion": API,
                "kind": "RotatingSecret",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        )

    def vault_store(self, namespace: str, name: str = "vault") -> None:
        """An ExternalStore for the OpenBao dev server and the Secret holding its token."""
        self.ensure_namespace(namespace)
        self.api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-token", "namespace": namespace},
                "data": {"token": base64.b64encode(VAULT_TOKEN.encode()).decode()},
            }
        )
        self.api.create(
            {
                "apiVersion": API,
                "kind": "ExternalStore",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "vault": {
                        "server": self.vault_url,
                        "mount": "secret",
                        "auth": {"token": {"secretRef": {"name": f"{name}-token", "key": "token"}}},
                    }
                },
            }
        )

    def rotate_now(self, namespace: str, name: str) -> str:
        value = uuid.uuid4().hex[:12]
        self.api.patch(
            API,
            "rotatingsecrets",
            namespace,
            name,
            {"metadata": {"annotations": {ROTATE_NOW: value}}},
        )
        return value

    def source(self, namespace: str, name: str) -> Obj | None:
        return self.api.get("v1", "secrets", namespace, name)

    def state(self, namespace: str, name: str) -> SecretState:
        """The source Secret read as the protocol's state (empty when there is none)."""
        s = self.source(namespace, name) or {}
        return SecretState.from_secret(s.get("data"), (s.get("metadata") or {}).get("annotations"))

    def version(self, namespace: str, name: str) -> int:
        return self.state(namespace, name).version

    def current(self, namespace: str, name: str) -> dict[str, str]:
        """The committed values of the source Secret (decoded)."""
        return {k: v.decode() for k, v in self.state(namespace, name).current.items()}

    def status(self, namespace: str, name: str) -> Obj:
        rs = self.api.get(API, "rotatingsecrets", namespace, name) or {}
        return dict(rs.get("status") or {})

    def acl(self, verb: str, secret: str, principal: str, mode: str) -> str:
        """``rotor acl VERB SECRET PRINCIPAL MODE`` against the emulator's ACL ConfigMap."""
        import io
        from contextlib import redirect_stdout

        from controller import cli

        out = io.StringIO()
        with redirect_stdout(out):
            code = cli.main(
                ["acl", verb, secret, principal, mode, "--kubeconfig", str(self.kubeconfig)]
            )
        if code != 0:
            raise HarnessError(f"rotor acl {verb} {secret} {principal} {mode}: exit {code}")
        return out.getvalue().strip()

    # -- workloads and pods -----------------------------------------------------------------
    def workload(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str],
        service_account: str | None = None,
    ) -> Workload:
        """A Deployment and its ReplicaSet (pods come from :meth:`add_pod`)."""
        self.ensure_namespace(namespace)
        sa = service_account or name
        self.service_account(namespace, sa)
        dep = deployment(namespace, name, pod_template(name, annotations, sa))
        if self.real:  # kube-controller-manager makes its ReplicaSet; add_pod scales it
            self.api.create(dep | {"spec": dep["spec"] | {"replicas": 0}})
            self.workloads.append(Workload(namespace, name, sa, dict(annotations)))
            return self.workloads[-1]
        dep = self.api.create(dep)
        rs_name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.api.create(replica_set(dep, rs_name))
        self.workloads.append(Workload(namespace, name, sa, dict(annotations), rs_name))
        return self.workloads[-1]

    def add_pod(self, w: Workload, *, extra_env: Mapping[str, str] | None = None) -> Pod:
        """A pod of ``w`` as its ReplicaSet would make it: created in the emulator (which calls
        the webhook, as its MutatingWebhookConfiguration says), its agent started, and marked
        Ready once the agent is ready. The API's refusal (failurePolicy Fail with the webhook
        down, or a denial) raises :class:`ApiError`. On the real control plane the Deployment is
        scaled by one and its new pod, made by kube-controller-manager and bound to the process
        kubelet's Node by kube-scheduler, is run by that Node."""
        if self.real:
            return self._scale_up(w, extra_env)
        rs = self.api.get("apps/v1", "replicasets", w.namespace, w.replica_set)
        assert rs is not None
        name = f"{w.replica_set}-{uuid.uuid4().hex[:5]}"
        created = self.api.create(pod_of(rs, name))
        p = Pod(w.namespace, name, created, self.workdir / "pods" / name)
        self.pods[name] = p
        w.pods.append(p)
        self.kubelet.run(p, extra_env)
        return p

    def _scale_up(self, w: Workload, extra_env: Mapping[str, str] | None) -> Pod:
        self._pod_env[(w.namespace, w.name)] = dict(extra_env or {})
        p = backends.scale_up(self.api, w, lambda: list(self.pods.values()), self.cancel)
        w.pods.append(p)
        return p

    def _run_pod(self, obj: Obj) -> None:
        """The Node's part: a pod bound to it starts (its agent, when injected)."""
        m = obj["metadata"]
        p = Pod(m["namespace"], m["name"], obj, self.workdir / "pods" / m["name"])
        self.kubelet.run(p, self._pod_env.get((p.namespace, p.app)))
        self.pods[p.name] = p

    def _pod_gone(self, obj: Obj) -> None:
        p = self.pods.pop(obj["metadata"]["name"], None)
        if p is not None and p.agent is not None:
            p.agent.stop()

    def start_agent(self, p: Pod, extra_env: Mapping[str, str] | None = None) -> None:
        """Run the injected agent container as a process (what the kubelet would run)."""
        self.kubelet.start_agent(p, extra_env)

    def kill_agent(self, p: Pod) -> None:
        assert p.agent is not None
        p.agent.kill()

    def restart_agent(self, p: Pod) -> None:
        """The kubelet restarts the container (same pod, same folder, same port)."""
        assert p.agent is not None
        p.agent = Proc(p.agent.name, p.agent.argv, p.agent.env, p.agent.log).start()

    def delete_pod(self, p: Pod) -> None:
        if self.real:  # one fewer replica, this one first; the Node stops it
            w = next(w for w in self.workloads if p in w.pods)
            backends.mark_for_removal(self.api, p.namespace, p.name)
            w.pods.remove(p)
            backends.scale(self.api, p.namespace, w.name, len(w.pods))
        if p.agent is not None:
            p.agent.stop()
        self.api.delete("v1", "pods", p.namespace, p.name)
        self.pods.pop(p.name, None)

    def agent_metrics(self, p: Pod) -> str:
        try:
            with urllib.request.urlopen(p.metrics_url, timeout=2) as r:  # noqa: S310
                return str(r.read().decode())
        except OSError:
            return ""


@contextlib.contextmanager
def system(workdir: Path, **kwargs: Any) -> Iterator[System]:
    with System(workdir, **kwargs) as s:
        yield s
