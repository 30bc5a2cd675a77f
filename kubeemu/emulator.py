"""A Kubernetes API emulator for the demo, the system tests and benchmarks: kmock's
KubernetesEmulator (from the author of kopf), made to behave as a kube-apiserver where Rotor and
its users depend on it. It is an emulator, not a kube-apiserver: docs/demo.md says what it
enforces and lists, each with a test, the differences that remain (tests/kubeapi runs one table
of API behaviours against it and against a real kube-apiserver).

With ``secure=True`` (the harness, ``rotor demo``, ``rotor kube``, tests/system) every request is
authenticated and authorized as the real server does it:

* **authentication** (:mod:`kubeemu.authn`): a bearer token, either the admin token (user
  ``rotor-admin``, group ``system:masters``) or a service-account token issued by the
  TokenRequest subresource (``POST .../serviceaccounts/<name>/token``; the ServiceAccount must
  exist, and the token ends with it). The user is then ``system:serviceaccount:<ns>:<name>`` in
  ``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``. An
  unknown token: 401 with a Status body; none: ``system:anonymous`` (RBAC refuses it, 403).
  ``Impersonate-*`` headers (``kubectl --as``) act as that user when RBAC allows
  ``impersonate``;
* **authorization**: Kubernetes RBAC (:mod:`kubeemu.rbac`) from the Roles, ClusterRoles and
  bindings stored here plus the bootstrap ``cluster-admin``, ``system:discovery``,
  ``system:public-info-viewer`` and
  ``system:basic-user``; a refusal is a 403 Status with the real server's message;
* **escalation**: creating or patching a Role/ClusterRole needs every right it grants (or
  ``escalate``), a binding needs the rights of the role it references (or ``bind`` on it; a
  missing role without ``bind`` is a 404, as the real server answers);
* the reviews (:mod:`kubeemu.reviews`): ``kubectl auth can-i`` (also ``--list``), ``auth
  whoami``, ``create token``.

``secure=False`` (the default of :class:`EmulatorThread`) is for test tiers that check no
permission (tests/controller, tests/agent_k8s, ...): every request is served as the admin's.

In every mode the server owns what it owns (:mod:`kubeemu.writes`): ``uid``,
``creationTimestamp``, ``resourceVersion`` (cluster-wide increasing; a stale one is a **409
Conflict**) and ``generation``; the namespace and name come from the URL (a body or a patch
naming others is a 400); a ``status`` subresource separates status from the rest; a binding's
``roleRef`` is immutable. PUT replaces an object (``kubectl replace``), protobuf bodies are
decoded (:mod:`kubeemu.protobuf`), namespaces are objects, custom resources are validated
against their CRD's schema and printed with its columns (:mod:`kubeemu.crds`), list and watch
are filtered by ``labelSelector`` and ``fieldSelector`` (:mod:`kubeemu.selectors`; a watch
reports an object that stops matching as DELETED and one that starts matching as ADDED), and a
watch from a ``resourceVersion`` starts after it (``kubectl get -w``).

For benchmarks and the soak, two hooks: :attr:`StrictEmulator.listeners` are called with every
object a create or patch stored and the ``time.monotonic()`` of the store (so a clock can start
when a commit is stored, not when some watch delivers it), and
:meth:`StrictEmulator.drop_watches` closes every open watch stream, as an API server restart or a
load balancer's idle timeout does (clients must resume).

:class:`EmulatorThread` runs it in a background thread with its own event loop, so synchronous
code, the ``kubernetes`` client and subprocesses (an agent, the controller) share one URL.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import kmock
import yaml
from kubernetes import client

from controller import certs
from kubeemu.crds import crd_documents, register_crds
from kubeemu.lifecycle import seed_namespaces
from kubeemu.server import StrictEmulator

__all__ = [
    "STARTUP_TIMEOUT",
    "EmulatorThread",
    "StrictEmulator",
    "crd_documents",
    "iter_items",
    "register_crds",
    "serving_certs",
]

STARTUP_TIMEOUT = 10.0


class EmulatorThread:
    """The strict emulator on 127.0.0.1, served from a background thread with its own loop."""

    def __init__(
        self,
        crds: Iterable[Mapping[str, Any]] | None = None,
        *,
        secure: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        """``secure``: authenticate and authorize every request (see the module docstring)."""
        self._crds = list(crd_documents() if crds is None else crds)
        self.secure = secure
        self._host = host
        self._port = port
        self.ca_file: Path | None = None  # secure: the CA of the emulator's HTTPS certificate
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.k8s: StrictEmulator | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server_kw: dict[str, Any] = {"host": self._host}
        if self._port:
            server_kw["port"] = self._port
        if self.secure:
            # HTTPS: kubectl (client-go) sends a bearer token over TLS only.
            self._tls_dir = tempfile.TemporaryDirectory(prefix="rotor-kubeemu-")
            ca, cert, key = serving_certs(Path(self._tls_dir.name))
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            self.ca_file = ca
            server_kw["server_cls"] = _tls_server(ctx)
        async with StrictEmulator() as k8s, kmock.Server(k8s, **server_kw) as srv:
            k8s.secure = self.secure
            with warnings.catch_warnings():  # kmock 0.8 uses importlib.resources.read_binary
                warnings.simplefilter("ignore", DeprecationWarning)
                k8s.resources.load_bundled()
            k8s.crds = register_crds(k8s, self._crds)
            seed_namespaces(k8s)
            self.k8s = k8s
            self.url = str(srv.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STARTUP_TIMEOUT)
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    def ssl_context(self) -> ssl.SSLContext | None:
        """What a client needs to trust the emulator (None: plain HTTP)."""
        if self.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def admin_token(self) -> str:
        assert self.k8s is not None
        return self.k8s.admin_token

    def configuration(self, token: str | None = None) -> client.Configuration:
        """A ``kubernetes`` client configuration with ``token`` (default: the admin's)."""
        cfg = client.Configuration()
        cfg.host = self.url
        cfg.api_key["authorization"] = token or self.admin_token
        cfg.api_key_prefix["authorization"] = "Bearer"
        if self.ca_file is not None:
            cfg.ssl_ca_cert = str(self.ca_file)
        return cfg

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(k8s, *args)`` on the emulator's loop (its state is not thread-safe)."""
        k8s, loop = self.k8s, self._loop
        assert k8s is not None
        assert loop is not None

        async def run() -> Any:
            return fn(k8s, *args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(STARTUP_TIMEOUT)

    def drop_watches(self) -> int:
        """Close every open watch stream now (:meth:`StrictEmulator.drop_watches`)."""
        dropped: int = self.call(lambda k8s: k8s.drop_watches())
        return dropped

    def issue_token(self, namespace: str, name: str) -> str:
        """A service-account token (as TokenRequest would issue; the account need not exist)."""
        token: str = self.call(lambda k8s: k8s.issue_token(namespace, name))
        return token

    def add_user(self, name: str, groups: Iterable[str] = ()) -> str:
        """A bearer token for the user ``name`` in ``groups`` (a static token)."""
        token: str = self.call(lambda k8s: k8s.add_user(name, groups))
        return token

    def write_kubeconfig(self, path: Path, token: str | None = None, user: str = "admin") -> Path:
        """A kubeconfig for this emulator and ``token`` (default: the admin's), mode 0600."""
        path.parent.mkdir(parents=True, exist_ok=True)
        cluster: dict[str, str] = {"server": self.url}
        if self.ca_file is not None:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.ca_file.read_bytes()
            ).decode()
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "rotor-emulator", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [
                {"name": "rotor-emulator", "context": {"cluster": "rotor-emulator", "user": user}}
            ],
            "current-context": "rotor-emulator",
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
        return path

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(self.configuration())

    def objects(self, api: str, plural: str) -> list[dict[str, Any]]:
        """A copy of the stored objects of ``api`` (``v1``, ``rotor.dev/v1alpha1``) ``plural``."""
        k8s, loop = self.k8s, self._loop
        assert k8s is not None
        assert loop is not None
        group, _, version = api.rpartition("/")

        async def grab() -> list[dict[str, Any]]:
            return [
                copy.deepcopy(obj.raw)
                for (res, _ns, _name), obj in k8s.objects.items()
                if (res.group, res.version, res.plural) == (group, version, plural)
                and not obj.deleted
            ]

        return asyncio.run_coroutine_threadsafe(grab(), loop).result(STARTUP_TIMEOUT)


def serving_certs(directory: Path, name: str = "rotor-kube-emulator") -> tuple[Path, Path, Path]:
    """A throwaway CA and the emulator's certificate for 127.0.0.1/localhost, for a day, minted
    by the controller's CA code (:mod:`controller.certs`): (ca, cert, key) files."""
    now = time.time()
    ca = certs.make_ca(now, certs.DAY, f"{name}-ca")
    leaf = certs.make_serving_cert(ca, (name, "localhost"), now, certs.DAY, ips=("127.0.0.1",))
    paths = (directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    for path, pem in zip(paths, (ca.cert_pem, leaf.cert_pem, leaf.key_pem), strict=True):
        path.write_text(pem)
    paths[2].chmod(0o600)
    return paths


def _tls_server(ctx: ssl.SSLContext) -> type[aiohttp.test_utils.RawTestServer]:
    """kmock's server class, serving TLS with ``ctx`` (kmock itself starts it without)."""

    class TLSRawTestServer(aiohttp.test_utils.RawTestServer):
        async def start_server(
            self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
        ) -> None:
            await super().start_server(loop, ssl=ctx, **kwargs)

    return TLSRawTestServer


def iter_items(objs: Iterable[Mapping[str, Any]], namespace: str) -> Iterator[Mapping[str, Any]]:
    return (o for o in objs if o.get("metadata", {}).get("namespace") == namespace)
