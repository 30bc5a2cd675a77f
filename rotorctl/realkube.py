"""A real Kubernetes control plane on 127.0.0.1, started the way envtest starts one, and more.

What runs, each a process logging to ``<workdir>/logs/<name>.log`` (all data in ``workdir``):

* ``etcd`` on loopback ports, ``--unsafe-no-fsync`` (a test store, not a durable one);
* ``kube-apiserver``: client-certificate authentication against one throwaway CA
  (:mod:`rotorctl.kubepki`), ``--authorization-mode=Node,RBAC``, a service-account issuer and
  signing key (TokenRequest works; tokens die with their ServiceAccount), the default admission
  plugins (NamespaceLifecycle, ServiceAccount, the mutating and validating webhooks, ...);
* ``kube-controller-manager`` (garbage collection, namespaces, Deployments and ReplicaSets,
  ServiceAccounts and their tokens' root CA ConfigMap ``kube-root-ca.crt``, CSR signing), each
  controller under its own ServiceAccount;
* ``kube-scheduler``.

No node runs here (pods stay Pending until a kubelet registers one: :mod:`rotorctl.kubelet`).
The binaries are the ones ``make kube-bin`` builds (tools/kube/build.sh); without them
:class:`KubeBinariesMissing` says in one line how to build them.

Use::

    with ControlPlane(Path("work")) as cp:
        cp.url, cp.ca_file, cp.admin_kubeconfig      # kubectl --kubeconfig cp.admin_kubeconfig
        cp.api().get("v1", "namespaces", None, "default")   # rotorctl.kubeapi.Api as admin
        cp.write_kubeconfig(path, token, "someone")  # a kubeconfig holding a bearer token
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from rotorctl import kubepki
from rotorctl.kubeapi import Api
from rotorctl.processes import (
    STOP_TIMEOUT,
    HarnessError,
    Proc,
    Started,
    free_port,
    wait_for,
)

__all__ = [
    "ADMIN_USER",
    "BIN_ENV",
    "COMPONENTS",
    "ControlPlane",
    "KubeBinariesMissing",
    "bin_dir",
]

BIN_ENV = "ROTOR_KUBE_BIN"
"""A folder holding the binaries; overrides the ``make kube-bin`` cache."""
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
ADMIN_USER = "rotor-admin"  # in system:masters
SERVICE_RANGE = "10.0.0.0/24"
START_TIMEOUT = 90.0  # a cold kube-apiserver on a loaded 2-core machine takes 10-30 s
TOOLS = Path(__file__).resolve().parents[1] / "tools" / "kube"


class KubeBinariesMissing(HarnessError):
    """The Kubernetes binaries are not built (the message says how to build them)."""


def _go_version() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def cache_folder(tools: Path = TOOLS, go_version: str | None = None) -> Path | None:
    """Where tools/kube/build.sh puts its binaries: the same content key it computes
    (build.sh, then each module's go.mod, then each go.sum, and the Go version)."""
    if not (tools / "build.sh").is_file():
        return None
    go_version = _go_version() if go_version is None else go_version
    if not go_version:
        return None
    h = hashlib.sha256((tools / "build.sh").read_bytes())
    for name in ("go.mod", "go.sum"):
        for f in sorted(tools.glob(f"*/{name}")):
            h.update(f.read_bytes())
    root = os.environ.get("ROTOR_KUBE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rotor-kube"
    )
    return Path(root) / f"{h.hexdigest()[:16]}-{go_version}" / "bin"


def bin_dir(names: Sequence[str] = COMPONENTS) -> Path:
    """The folder holding ``names``: ``$ROTOR_KUBE_BIN``, else ``make kube-bin``'s cache."""
    explicit = os.environ.get(BIN_ENV)
    folder = Path(explicit) if explicit else cache_folder()
    missing = [n for n in names if folder is None or not os.access(folder / n, os.X_OK)]
    if folder is not None and not missing:
        return folder
    where = f"{BIN_ENV}={explicit}" if explicit else "the make kube-bin cache"
    raise KubeBinariesMissing(
        f"the Kubernetes binaries are not built ({', '.join(missing)} missing from {where}): "
        "run `make kube-bin` (builds them from tools/kube with Go, about 20-40 min cold), "
        f"or set {BIN_ENV} to a folder holding them"
    )


class ControlPlane(Started):
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1.

    ``url``, ``ca_file`` (the cluster CA), ``admin_kubeconfig`` and ``admin`` (client
    certificate of ``rotor-admin`` in ``system:masters``) are set once :meth:`start` returns.
    ``controller_manager``/``scheduler``: False leaves that component out (envtest's shape)."""

    def __init__(
        self,
        workdir: Path,
        *,
        controller_manager: bool = True,
        scheduler: bool = True,
        binaries: Path | None = None,
        progress: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.workdir = workdir.resolve()
        self.with_controller_manager = controller_manager
        self.with_scheduler = scheduler
        self.binaries = binaries
        self.progress = progress or (lambda _msg: None)
        self.cancel = cancel or threading.Event()
        self.start_timeout = start_timeout
        self.procs: dict[str, Proc] = {}
        self.port = 0
        self.etcd_url = ""
        self.pki: kubepki.Pki | None = None
        self.admin = kubepki.Credentials(Path(), Path())
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self._health: dict[str, str] = {}  # component -> its /healthz URL

    # -- the public interface ----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}" if self.port else ""

    @property
    def ca_file(self) -> Path:
        assert self.pki is not None, "the control plane is not started"
        return self.pki.ca_file

    def api(self) -> Api:
        """The API as the admin (client certificate), for :mod:`rotorctl.kubeapi` callers."""
        return Api(self.url, ca_file=self.ca_file, client_cert=(self.admin.cert, self.admin.key))

    def write_kubeconfig(self, path: Path, token: str | None = None, user: str = "admin") -> Path:
        """A kubeconfig for this API server holding ``token`` (default: the admin's client
        certificate), mode 0600; the same call as the emulator's."""
        if token:
            return kubepki.kubeconfig(path, self.url, self.ca_file, user, token=token)
        return kubepki.kubeconfig(path, self.url, self.ca_file, ADMIN_USER, client=self.admin)

    def client(self, name: str, user: str, groups: Sequence[str] = ()) -> kubepki.Credentials:
        """A client certificate of ``user`` in ``groups`` signed by the cluster CA (a node's
        ``system:node:NAME`` in ``system:nodes``, or any user a test needs)."""
        assert self.pki is not None, "the control plane is not started"
        return self.pki.client(name, user, groups)

    def version(self) -> dict[str, str]:
        """The server's ``/version`` (``gitVersion``: ``v1.34.4``)."""
        out = self.api().request("GET", "/version")
        return {k: str(v) for k, v in (out or {}).items()}

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # -- start and stop -------------------------------------------------------------------
    def start(self) -> ControlPlane:
        folder = self.binaries or bin_dir(self._needed())
        self.binaries = folder
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.pki = kubepki.Pki(self.workdir / "pki")
        self.admin = self.pki.client("admin", ADMIN_USER, ["system:masters"])
        self.progress("starting etcd (127.0.0.1, no fsync)")
        self._start_etcd()
        self.progress("starting kube-apiserver (client certificates, Node,RBAC, admission)")
        self._start_apiserver()
        self.write_kubeconfig(self.admin_kubeconfig)
        if self.with_controller_manager:
            self.progress("starting kube-controller-manager")
            self._start_component("kube-controller-manager", self._controller_manager_args())
        if self.with_scheduler:
            self.progress("starting kube-scheduler")
            self._start_component("kube-scheduler", self._scheduler_args())
        if self.with_controller_manager:
            self._wait_controllers()
        return self

    def stop(self) -> None:
        """Stop every component (the API server's clients first, etcd last)."""
        for name in reversed(list(self.procs)):
            self.procs[name].stop(STOP_TIMEOUT)
        self.procs.clear()

    def _needed(self) -> tuple[str, ...]:
        return tuple(
            n
            for n in COMPONENTS
            if (n != "kube-controller-manager" or self.with_controller_manager)
            and (n != "kube-scheduler" or self.with_scheduler)
        )

    def _run(self, name: str, args: list[str]) -> Proc:
        assert self.binaries is not None
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir)}
        proc = Proc(name, [str(self.binaries / name), *args], env, self.log(name)).start()
        self.procs[name] = proc
        return proc

    def _wait(self, name: str, check: Callable[[], bool], what: str) -> None:
        proc = self.procs[name]

        def ready() -> bool:
            if not proc.running:
                raise HarnessError(
                    f"{name} exited while starting (log: {proc.log}):\n{proc.tail(3000)}"
                )
            return check()

        try:
            wait_for(ready, what, self.start_timeout, self.cancel)
        except HarnessError as e:
            if proc.running:  # a timeout: show what the component said
                raise HarnessError(f"{e} (log: {proc.log}):\n{proc.tail(3000)}") from None
            raise

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._run(
            "etcd",
            [
                "--name=rotor",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=rotor={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: _http_ok(self.etcd_url + "/health"), "etcd's /health")

    def _apiserver_args(self) -> list[str]:
        pki = self.pki
        assert pki is not None
        return [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca_file}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--kubelet-client-certificate={self._kubelet_client().cert}",
            f"--kubelet-client-key={self._kubelet_client().key}",
            "--profiling=false",
        ]

    def _kubelet_client(self) -> kubepki.Credentials:
        assert self.pki is not None
        return kubepki.Credentials(
            self.pki.dir / "apiserver-kubelet-client.crt",
            self.pki.dir / "apiserver-kubelet-client.key",
        )

    def _start_apiserver(self) -> None:
        assert self.pki is not None
        self.pki.client(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"]
        )
        self.port = free_port()
        self._run("kube-apiserver", self._apiserver_args())
        ctx = self._admin_context()
        self._wait(
            "kube-apiserver",
            lambda: _http_ok(self.url + "/readyz", ctx),
            f"kube-apiserver's /readyz on {self.url}",
        )

    def _admin_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return ctx

    def _component_kubeconfig(self, name: str, user: str) -> Path:
        assert self.pki is not None
        creds = self.pki.client(name, user)
        return kubepki.kubeconfig(
            self.workdir / f"{name}.kubeconfig", self.url, self.ca_file, user, client=creds
        )

    def _serving_args(self, name: str, kubeconfig: Path) -> list[str]:
        port = free_port()
        self._health[name] = f"https://127.0.0.1:{port}/healthz"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / (name + '-certs')}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _controller_manager_args(self) -> list[str]:
        assert self.pki is not None
        kc = self._component_kubeconfig("controller-manager", "system:kube-controller-manager")
        return [
            *self._serving_args("kube-controller-manager", kc),
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.ca_file}",
            f"--cluster-signing-cert-file={self.ca_file}",
            f"--cluster-signing-key-file={self.pki.ca_key}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            "--controllers=*",
            "--concurrent-gc-syncs=5",
        ]

    def _scheduler_args(self) -> list[str]:
        kc = self._component_kubeconfig("scheduler", "system:kube-scheduler")
        return self._serving_args("kube-scheduler", kc)

    def _start_component(self, name: str, args: list[str]) -> None:
        self._run(name, args)
        url = self._health[name]
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # its self-signed serving certificate, on loopback
        self._wait(name, lambda: _http_ok(url, ctx), f"{name}'s /healthz")

    def _wait_controllers(self) -> None:
        """The controller-manager is working: the root CA ConfigMap is in ``default``."""
        api = self.api()

        def published() -> bool:
            try:
                return api.get("v1", "configmaps", "default", "kube-root-ca.crt") is not None
            except (HarnessError, OSError):
                return False

        self._wait(
            "kube-controller-manager",
            published,
            "kube-controller-manager publishing kube-root-ca.crt in namespace default",
        )


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False
