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
  mutating admission, garbage collection, selectors), not a kube-apiserver;
* identities: the chart's ServiceAccounts and RBAC are rendered from charts/rotor
  (:mod:`rotorctl.chartrbac`) and applied; the controller runs with its ServiceAccount's token
  (a kubeconfig), each agent with its pod's; this module acts as the admin;
* admission: the chart's MutatingWebhookConfiguration (``failure_policy``, default Ignore) is
  applied, its Service routed to the webhook's local port and its caBundle set to the CA made
  here, as cert-manager would; the emulator calls the webhook on each pod create;
* the kubelet: a pod's agent container runs as a local process (``subprocess``, its own process
  group); downward-API ``fieldRef`` env is resolved from the pod object; the agent's
  memory-backed emptyDir is a folder ``<workdir>/<pod>/<volume>``; each agent gets its own
  metrics port (pods have their own network namespace, processes here share one); the
  service-account token is a file with a TokenRequest token of the pod's account; the pod turns
  Ready (status patched in the emulator) once the agent's ``/readyz`` answers 200, as the
  startup probe of a native sidecar would make it. App containers are not run.
* Deployments and ReplicaSets are plain objects; this harness plays the ReplicaSet controller
  only for the pods it is told to create.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import shutil
import signal
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from agent import kube as agent_kube
from controller import certs
from kubeemu.emulator import EmulatorThread
from rotor import API
from rotor import env as agent_env
from rotor.annotations import ROTATE_NOW
from rotor.kubepaths import api_path
from rotor.layout import SecretState
from rotorctl import chartrbac
from rotorctl.kubeapi import Api, ApiError, plural_of
from rotorctl.kubelet import (
    AGENT_CONTAINER,
    FILES_VOLUME,
    Pod,
    agent_container,
    container_env,
    field_ref,
    pod_status,
)
from rotorctl.openbao import VAULT_TOKEN, DevServer
from rotorctl.probe import PropagationProbe
from rotorctl.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Cancelled,
    HarnessError,
    Proc,
    _script,
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

Obj = dict[str, Any]
ROTOR_NAMESPACE = "rotor-system"
ACL_CONFIGMAP = "rotor-acl"


# -- the system ---------------------------------------------------------------------------------
class System:
    """Emulator + webhook + controller (+ OpenBao) + pods with agent processes."""

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
    ) -> None:
        """``cancel``: when set (e.g. by a signal handler), waits while starting stop at once.
        ``rbac_filter``: changes the chart's rendered identities before they are applied."""
        self.rbac_filter = rbac_filter
        self.failure_policy = failure_policy
        self.chart_identities: list[Obj] = []
        self.webhook_config: Obj = {}
        self.workdir = workdir
        self.want_vault = vault
        self.acl_poll = acl_poll
        self.log_level = log_level
        self.progress = progress or (lambda _msg: None)
        self.emulator: EmulatorThread | None = None
        self.api = Api("")
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
        self.cancel = cancel or threading.Event()

    # -- start and stop ---------------------------------------------------------------------
    def __enter__(self) -> System:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.progress(
            "starting the Kubernetes API emulator (kmock, in this process; tokens and RBAC "
            "enforced)"
        )
        self.emulator = EmulatorThread(secure=True).start()
        self.api = Api(self.emulator.url, self.emulator.admin_token, self.emulator.ca_file)
        self.kubeconfig = self.emulator.write_kubeconfig(self.workdir / "kubeconfig")
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
        if self.want_vault:
            bao = shutil.which("bao")
            if bao is None:
                self.progress("OpenBao (bao) is not installed: no external store")
            else:
                self.progress("starting OpenBao (bao server -dev)")
                self.start_vault(bao)

    def stop(self) -> None:
        self._stopping.set()
        procs = [p.agent for p in self.pods.values() if p.agent is not None]
        procs += [p for p in (self.controller, self.webhook, self.vault) if p is not None]
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            p.stop()
        for pod in self.pods.values():
            if pod.kubelet is not None:
                pod.kubelet.join(STOP_TIMEOUT)
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    @property
    def vault(self) -> Proc | None:
        """The OpenBao dev server's process, when one runs."""
        return self.openbao.proc if self.openbao is not None else None

    @property
    def vault_url(self) -> str:
        return self.openbao.url if self.openbao is not None else ""

    @property
    def url(self) -> str:
        return self.emulator.url if self.emulator else ""

    def ensure_namespace(self, ns: str) -> None:
        """Namespaces need no object in the emulator (it does not check that they exist)."""

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
        assert self.emulator is not None
        return self.emulator.write_kubeconfig(
            self.workdir / "identities" / f"{name}.kubeconfig", token, service_account
        )

    def token(self, namespace: str, service_account: str) -> str:
        """A token of the ServiceAccount, for a test acting as that identity."""
        return self.api.token_for(namespace, service_account)

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTOR_", "KUBERNETES_"))}
        env["ROTOR_LOG_LEVEL"] = self.log_level
        return env

    def _webhook_service(self) -> tuple[str, str]:
        hooks = self.webhook_config.get("webhooks") or [{}]
        svc = (hooks[0].get("clientConfig") or {}).get("service") or {}
        return str(svc.get("namespace") or ROTOR_NAMESPACE), str(svc.get("name") or "")

    def start_webhook(self) -> None:
        svc_ns, svc = self._webhook_service()
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
        # reaches the Service at this port and trusts this CA (caBundle).
        assert self.emulator is not None
        port = self.webhook_port
        self.emulator.call(
            lambda k8s: k8s.admission.endpoints.__setitem__((svc_ns, svc), f"127.0.0.1:{port}")
        )
        name = self.webhook_config["metadata"]["name"]
        self.api.request(
            "PATCH",
            api_path(
                "admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", None, name
            ),
            certs.ca_bundle_patch(self.webhook_config, self.ca.read_text()),
            "application/json-patch+json",
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
            # no Deployment controller here moves a workload's status as its pods come: list
            # every annotated workload's uninjected pods each second instead
            "ROTOR_UNINJECTED_SWEEP": "1s",
            "POD_NAME": "rotor-controller-0",
            # The chart's ServiceAccount: the controller holds exactly the chart's RBAC.
            "KUBECONFIG": str(
                self.identity_kubeconfig("controller", ROTOR_NAMESPACE, chartrbac.CONTROLLER_SA)
            ),
        }
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
        dep = self.api.create(deployment(namespace, name, pod_template(name, annotations, sa)))
        rs_name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.api.create(replica_set(dep, rs_name))
        return Workload(namespace, name, sa, dict(annotations), rs_name)

    def add_pod(self, w: Workload, *, extra_env: Mapping[str, str] | None = None) -> Pod:
        """A pod of ``w`` as its ReplicaSet would make it: created in the emulator (which calls
        the webhook, as its MutatingWebhookConfiguration says), its agent started, and marked
        Ready once the agent is ready. The API's refusal (failurePolicy Fail with the webhook
        down, or a denial) raises :class:`ApiError`."""
        rs = self.api.get("apps/v1", "replicasets", w.namespace, w.replica_set)
        assert rs is not None
        name = f"{w.replica_set}-{uuid.uuid4().hex[:5]}"
        created = self.api.create(pod_of(rs, name))
        p = Pod(w.namespace, name, created, self.workdir / "pods" / name)
        self.pods[name] = p
        w.pods.append(p)
        self._set_pod_status(p, ready=False)
        if p.injected:
            self.start_agent(p, extra_env)
        else:
            self._set_pod_status(p, ready=True)  # nothing holds the app back
        return p

    def _set_pod_status(self, p: Pod, ready: bool) -> None:
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
        volume = mounts.get(mount_path, FILES_VOLUME)
        p.mount = p.dir / volume  # the memory emptyDir, as a local folder
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
        p.agent = Proc(f"agent {p.name}", argv, self._base_env() | env, p.dir / "agent.log")
        p.agent.start()
        p.kubelet = threading.Thread(
            target=self._kubelet, args=(p,), name=f"kubelet-{p.name}", daemon=True
        )
        p.kubelet.start()

    def _kubelet(self, p: Pod) -> None:
        """The part of a kubelet that matters here: Ready once the agent's /readyz says so."""
        while not self._stopping.is_set() and p.agent is not None and p.agent.running:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{p.metrics_port}/readyz", timeout=2
                ) as r:
                    if r.status == 200:
                        with contextlib.suppress(HarnessError, OSError):
                            self._set_pod_status(p, ready=True)
                        return
            except OSError:
                pass
            self._stopping.wait(0.1)

    def kill_agent(self, p: Pod) -> None:
        assert p.agent is not None
        p.agent.kill()

    def restart_agent(self, p: Pod) -> None:
        """The kubelet restarts the container (same pod, same folder, same port)."""
        assert p.agent is not None
        p.agent = Proc(p.agent.name, p.agent.argv, p.agent.env, p.agent.log).start()

    def delete_pod(self, p: Pod) -> None:
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
