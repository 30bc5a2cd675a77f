"""Two Kubernetes API backends behind one interface, for the table of API behaviours
(test_api_behaviours.py): the strict emulator (kubeemu, secure, in this process) and a real
kube-apiserver (rotorctl.realkube: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built by `make kube-bin`; skipped with the reason when they are not built, a
failure in CI). Each case gets fresh namespaces, so one backend serves a whole module."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import queue
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, wait_until

ROOT = Path(__file__).resolve().parents[2]
RBAC = "rbac.authorization.k8s.io/v1"
KUBECTL = "/usr/bin/kubectl"
_count = itertools.count(1)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, list[str]]

    @property
    def message(self) -> str:
        return str(self.body.get("message") or "")


@dataclass
class Backend:
    """One API server: ``call`` as the admin (or with a bearer ``token``), ``kubectl``."""

    name: str
    url: str
    ca_file: Path
    workdir: Path
    write_kubeconfig: Callable[..., Path]
    admin_token: str | None = None  # the emulator's admin
    admin_cert: tuple[Path, Path] | None = None  # the real server's admin (client certificate)
    _kubeconfigs: dict[str, Path] = field(default_factory=dict)

    def context(self, admin: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if admin and self.admin_cert is not None:
            ctx.load_cert_chain(*self.admin_cert)
        return ctx

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        ctype: str = "application/json",
    ) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", ctype)
        req.add_header("Accept", "application/json")
        bearer = self.admin_token if token is None else token  # "": no credentials
        if bearer:
            req.add_header("Authorization", f"Bearer {bearer}")
        try:
            opener = _opener(self.context(admin=token is None), headers or [])
            with opener.open(req, timeout=30) as r:
                return Answer(r.status, _json(r.read()), _headers(r.headers))
        except urllib.error.HTTPError as e:
            return Answer(e.code, _json(e.read()), _headers(e.headers))

    def kubeconfig(self, token: str | None = None) -> Path:
        key = token or "admin"
        if key not in self._kubeconfigs:
            path = self.workdir / f"kubeconfig-{len(self._kubeconfigs)}"
            self._kubeconfigs[key] = self.write_kubeconfig(path, token)
        return self._kubeconfigs[key]

    def kubectl(
        self, *args: str, token: str | None = None, ok: bool | None = True
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig(token)), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok is not None:
            assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
        return out

    # -- fixtures of a case --------------------------------------------------------------------
    def namespace(self, labels: dict[str, str] | None = None) -> str:
        name = f"t{next(_count)}-{self.name[:4]}"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if labels:
            body["metadata"]["labels"] = labels
        answer = self.call("POST", "/api/v1/namespaces", body)
        assert answer.status == 201, answer
        return name

    def service_account(self, namespace: str, name: str, rules: list[dict[str, Any]]) -> str:
        """A ServiceAccount holding ``rules`` in ``namespace`` (a Role and its binding); its
        token from TokenRequest."""
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
        assert (
            self.call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", sa).status == 201
        )
        if rules:
            role = {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": name}, "rules": rules}
            rb = binding(name, "Role", name, [sa_subject(namespace, name)])
            base = f"/apis/{RBAC}/namespaces/{namespace}"
            assert self.call("POST", f"{base}/roles", role).status == 201
            assert self.call("POST", f"{base}/rolebindings", rb).status == 201
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        answer = self.call("POST", path, review)
        assert answer.status == 201, answer
        return str(answer.body["status"]["token"])

    def watch(self, path: str, token: str | None = None) -> Watch:
        return Watch(self, path, token)


class Watch:
    """A watch stream read in a thread: ``next()`` the events, ``close()`` it."""

    def __init__(self, backend: Backend, path: str, token: str | None) -> None:
        sep = "&" if "?" in path else "?"
        self.req = urllib.request.Request(f"{backend.url}{path}{sep}watch=true&timeoutSeconds=30")
        bearer = token or backend.admin_token
        if bearer:
            self.req.add_header("Authorization", f"Bearer {bearer}")
        self.ctx = backend.context(admin=token is None)
        self.events: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
        self.stop = threading.Event()
        self.response: Any = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(self.req, timeout=30, context=self.ctx) as r,
        ):
            self.response = r
            for line in r:
                if self.stop.is_set():
                    return
                e = json.loads(line)
                obj = e.get("object") or {}
                self.events.put((e.get("type", ""), obj.get("metadata", {}).get("name", ""), obj))

    def until(self, name: str, timeout: float = 20) -> list[tuple[str, str, dict[str, Any]]]:
        """Every event up to and including the first one about ``name``."""
        seen = []
        while True:
            event = self.events.get(timeout=timeout)
            seen.append(event)
            if event[1] == name:
                return seen

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError, AttributeError):
            self.response.fp.raw._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        self.thread.join(10)


def _opener(ctx: ssl.SSLContext, headers: list[tuple[str, str]]) -> urllib.request.OpenerDirector:
    """An opener that sends ``headers`` as given, a header name repeated as often as listed
    (urllib's Request keeps one value per name; ``Impersonate-Group`` may repeat)."""

    class Repeated(urllib.request.HTTPSHandler):
        def do_open(self, http_class: Any, req: Any, **kw: Any) -> Any:  # type: ignore[override]
            conn_factory = http_class

            def factory(host: str, **kwargs: Any) -> Any:
                conn = conn_factory(host, **kwargs)
                original = conn.endheaders

                def endheaders(*a: Any, **k: Any) -> Any:
                    for name, value in headers:
                        conn.putheader(name, value)
                    return original(*a, **k)

                conn.endheaders = endheaders
                return conn

            return super().do_open(factory, req, **kw)

    return urllib.request.build_opener(Repeated(context=ctx))


def _json(raw: bytes) -> dict[str, Any]:
    try:
        out = json.loads(raw or b"{}")
    except ValueError:
        return {"raw": raw.decode(errors="replace")}
    return out if isinstance(out, dict) else {"value": out}


def _headers(msg: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in msg.items():
        out.setdefault(k.lower(), []).append(v)
    return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sa_subject(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def binding(name: str, kind: str, role: str, subjects: list[dict[str, str]]) -> dict[str, Any]:
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}
    return {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": ref,
        "subjects": subjects,
    }


# -- the two backends ------------------------------------------------------------------------------
@contextlib.contextmanager
def _emulator(tmp: Path) -> Iterator[Backend]:
    from kubeemu.emulator import EmulatorThread

    with EmulatorThread(secure=True) as emu:
        assert emu.ca_file is not None
        yield Backend(
            "emulator", emu.url, emu.ca_file, tmp, emu.write_kubeconfig, admin_token=emu.admin_token
        )


@contextlib.contextmanager
def _real(tmp: Path) -> Iterator[Backend]:
    try:
        from rotorctl.realkube import ControlPlane, KubeBinariesMissing, bin_dir
    except ImportError:
        pytest.skip("the real control plane launcher (rotorctl/realkube.py, branch h23) is absent")
    try:
        bin_dir()
    except KubeBinariesMissing as e:
        if IN_CI:
            pytest.fail(str(e))
        pytest.skip(str(e))
    with ControlPlane(tmp / "plane") as plane:
        backend = Backend(
            "real",
            plane.url,
            plane.ca_file,
            tmp,
            plane.write_kubeconfig,
            admin_cert=(plane.admin.cert, plane.admin.key),
        )
        backend.kubectl("apply", "-f", str(ROOT / "crds"))
        backend.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        wait_until(
            "the default service account",
            lambda: (
                backend.call("GET", "/api/v1/namespaces/default/serviceaccounts/default").status
                == 200
            ),
        )
        yield backend


@pytest.fixture(scope="module", params=["emulator", pytest.param("real", marks=pytest.mark.slow)])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"kube-{request.param}")
    start = _emulator if request.param == "emulator" else _real
    with start(tmp) as b:
        yield b
