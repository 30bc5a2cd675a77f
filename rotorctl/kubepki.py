"""Throwaway certificates and keys for the real control plane (:mod:`rotorctl.realkube`): one
cluster CA, the API server's serving certificate, client certificates whose subject is the
identity (CN the user, O the groups, as kube-apiserver's ``--client-ca-file`` reads them) and
the service-account signing key. The CA and the serving certificate come from the
controller's own code (:mod:`controller.certs`); everything lives for a day."""

from __future__ import annotations

import base64
import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller import certs

LIFETIME = certs.DAY
SERVICE_IP = "10.0.0.1"  # the first address of the service range realkube passes
SERVING_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
)


@dataclass(frozen=True)
class Credentials:
    """A client certificate and its key, as files."""

    cert: Path
    key: Path


def _write(path: Path, text: str, secret: bool = False) -> Path:
    path.write_text(text)
    path.chmod(0o600 if secret else 0o644)
    return path


class Pki:
    """The cluster CA in ``directory`` (``ca.crt``, ``ca.key``), and what it signs."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        now = time.time()
        self._ca = certs.make_ca(now, LIFETIME, "rotor-kube-ca")
        self.ca_file = _write(self.dir / "ca.crt", self._ca.cert_pem)
        self.ca_key = _write(self.dir / "ca.key", self._ca.key_pem, secret=True)
        serving = certs.make_serving_cert(
            self._ca, SERVING_NAMES, now, LIFETIME, ips=("127.0.0.1", SERVICE_IP)
        )
        self.serving = Credentials(
            _write(self.dir / "apiserver.crt", serving.cert_pem),
            _write(self.dir / "apiserver.key", serving.key_pem, secret=True),
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())
        self.sa_key = _write(self.dir / "sa.key", certs.key_pem(sa_key), secret=True)
        self.sa_pub = _write(
            self.dir / "sa.pub",
            sa_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
        )

    def client(self, name: str, user: str, groups: Sequence[str] = ()) -> Credentials:
        """A client certificate for ``user`` in ``groups``, as ``<name>.crt``/``<name>.key``."""
        cert_pem, key_pem = client_cert(self._ca, user, groups)
        return Credentials(
            _write(self.dir / f"{name}.crt", cert_pem),
            _write(self.dir / f"{name}.key", key_pem, secret=True),
        )


def client_cert(ca: certs.KeyPair, user: str, groups: Sequence[str]) -> tuple[str, str]:
    """(certificate PEM, key PEM) of a client certificate: CN ``user``, one O per group."""
    ca_cert = certs.load_cert(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    assert ca_cert is not None
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        + [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=certs.BACKDATE))
        .not_valid_after(now + datetime.timedelta(seconds=LIFETIME))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), certs.key_pem(key)


def kubeconfig(
    path: Path,
    server: str,
    ca_file: Path,
    user: str,
    *,
    client: Credentials | None = None,
    token: str = "",
) -> Path:
    """A kubeconfig (mode 0600) for ``server`` as ``user``: a client certificate or a token,
    both embedded so the file works when copied elsewhere."""
    creds: dict[str, str] = {}
    if client is not None:
        creds["client-certificate-data"] = _b64(client.cert)
        creds["client-key-data"] = _b64(client.key)
    if token:
        creds["token"] = token
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "rotor-kube",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_file)},
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "rotor-kube", "context": {"cluster": "rotor-kube", "user": user}}],
        "current-context": "rotor-kube",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
