"""Webhook serving certificates, managed by the controller (``certs.provider: controller``).

What the chart expects: the Secret ``ROTOR_WEBHOOK_CERT_SECRET`` in ``ROTOR_NAMESPACE`` with
``tls.crt``/``tls.key`` (the webhook serves them and reloads them when they change) and
``ca.crt`` (the CAs the API server is told to trust), valid for every name of every service
that the MutatingWebhookConfiguration ``ROTOR_WEBHOOK_CONFIG_NAME`` points at
(``<svc>.<ns>.svc``, ``<svc>.<ns>``, ``<svc>.<ns>.svc.cluster.local``), and that
configuration's ``webhooks[].clientConfig.caBundle`` set to those CAs.

The CA's key lives in a Secret of its own, ``<cert secret>-ca`` (``ca.crt``/``ca.key``), which
the webhook pods never mount: only the controller can mint certificates.

Lifetimes (ECDSA P-256): the CA 1 year, the serving certificate 90 days; each is renewed at 2/3
of its lifetime (or at once when the names change or the object is unreadable).

CA rotation without an untrusted moment: a new CA is first *added* to the caBundle (old and new
both trusted), then the serving certificate is re-issued by the new CA, and the old CA is
dropped from the bundle only after that certificate has been out for :data:`CA_OVERLAP`
(the kubelet refreshes Secret volumes within about a minute and the webhook reloads its files
within seconds, so an hour is ample) or when the old CA expires. Whatever order the API server
and the webhook pods see these changes in, the certificate served is signed by a CA in the bundle.

Everything here but :func:`make_ca`/:func:`make_serving_cert` (which draw random keys) is a pure
function of its inputs and ``now``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = 86400.0
CA_LIFETIME = 365 * DAY
LEAF_LIFETIME = 90 * DAY
RENEW_AT = 2 / 3
"""Renew at this fraction of a certificate's lifetime."""
CA_OVERLAP = 3600.0
"""Keep a replaced CA in the bundle this long after the new CA's certificate was issued."""
BACKDATE = 300.0
"""notBefore is set this far in the past, for clocks that lag ours."""
CA_SUFFIX = "-ca"


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str

    def __repr__(self) -> str:  # never show the key
        return "KeyPair(***)"


# -- parsing -------------------------------------------------------------------------------------
def load_cert(pem: str | bytes | None) -> x509.Certificate | None:
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except ValueError:
        return None


def load_certs(pem: str | bytes | None) -> list[x509.Certificate]:
    if not pem:
        return []
    try:
        return x509.load_pem_x509_certificates(pem.encode() if isinstance(pem, str) else pem)
    except ValueError:
        return []


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _ts(dt: datetime.datetime) -> float:
    return dt.timestamp()


def _names(cert: x509.Certificate) -> frozenset[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(ext.value.get_values_for_type(x509.DNSName))


def _renew_due(cert: x509.Certificate, now: float) -> bool:
    start, end = _ts(cert.not_valid_before_utc), _ts(cert.not_valid_after_utc)
    return now >= start + (end - start) * RENEW_AT or now < start


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert: x509.Certificate, key_pem: str | None) -> bool:
    if not key_pem:
        return False
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    return bool(key.public_key() == cert.public_key())


# -- decisions -----------------------------------------------------------------------------------
def service_names(webhook_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The DNS names of every service the webhook configuration calls, sorted."""
    out: set[str] = set()
    for hook in webhook_config.get("webhooks") or []:
        svc = ((hook or {}).get("clientConfig") or {}).get("service") or {}
        name, ns = svc.get("name"), svc.get("namespace")
        if name and ns:
            out.update({f"{name}.{ns}.svc", f"{name}.{ns}", f"{name}.{ns}.svc.cluster.local"})
    return tuple(sorted(out))


def needs_new_cert(cert_pem: str | None, now: float, names: Iterable[str]) -> bool:
    """A serving certificate must be (re)issued: absent, unreadable, for other names, not yet
    valid, or past 2/3 of its lifetime."""
    cert = load_cert(cert_pem)
    if cert is None:
        return True
    return _names(cert) != frozenset(names) or _renew_due(cert, now)


def needs_new_ca(ca: KeyPair | None, now: float) -> bool:
    cert = load_cert(ca.cert_pem) if ca else None
    if ca is None or cert is None or not key_matches(cert, ca.key_pem):
        return True
    return _renew_due(cert, now)


@dataclass(frozen=True)
class CertPlan:
    new_ca: bool
    """Make a new CA (the current one is kept in the bundle as the old one)."""
    new_leaf: bool
    """Issue a new serving certificate from the (new) current CA."""
    keep_old: tuple[str, ...]
    """PEMs of replaced CAs still trusted (the overlap)."""


def plan_certs(
    ca: KeyPair | None,
    leaf: KeyPair | None,
    trusted_pem: str | None,
    now: float,
    names: Sequence[str],
) -> CertPlan:
    """What to renew, and which replaced CAs stay in the bundle (see the module docstring)."""
    new_ca = needs_new_ca(ca, now)
    ca_cert = None if new_ca or ca is None else load_cert(ca.cert_pem)
    leaf_cert = load_cert(leaf.cert_pem) if leaf else None
    new_leaf = (
        new_ca
        or leaf is None
        or leaf_cert is None
        or ca_cert is None
        or needs_new_cert(leaf.cert_pem, now, names)
        or not key_matches(leaf_cert, leaf.key_pem)
        or not signed_by(leaf_cert, ca_cert)
    )
    old: list[x509.Certificate] = [
        c
        for c in load_certs(trusted_pem)
        if (ca_cert is None or c != ca_cert) and _ts(c.not_valid_after_utc) > now
    ]
    if new_ca and ca is not None:
        current = load_cert(ca.cert_pem)
        if current is not None and _ts(current.not_valid_after_utc) > now and current not in old:
            old.insert(0, current)
    # Drop replaced CAs once the certificate of the current CA has been out long enough.
    if not new_ca and not new_leaf and leaf_cert is not None:
        issued = _ts(leaf_cert.not_valid_before_utc) + BACKDATE
        if now >= issued + CA_OVERLAP:
            old = []
    return CertPlan(new_ca, new_leaf, tuple(to_pem(c) for c in old))


def bundle(ca_pem: str, keep_old: Sequence[str]) -> str:
    """The caBundle/ca.crt text: the current CA first, then replaced ones still trusted."""
    return "".join(p if p.endswith("\n") else p + "\n" for p in (ca_pem, *keep_old))


def ca_bundle_patch(webhook_config: Mapping[str, Any], ca_pem: str) -> list[dict[str, Any]]:
    """A JSON patch setting every webhook's ``clientConfig.caBundle`` to ``ca_pem`` (each
    index guarded by a ``test`` of the webhook's name); empty when all are set already."""
    want = base64.b64encode(ca_pem.encode()).decode()
    ops: list[dict[str, Any]] = []
    for i, hook in enumerate(webhook_config.get("webhooks") or []):
        if ((hook or {}).get("clientConfig") or {}).get("caBundle") == want:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
        ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": want})
    return ops


# -- minting -------------------------------------------------------------------------------------
def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _validity(
    builder: x509.CertificateBuilder, now: float, lifetime: float
) -> x509.CertificateBuilder:
    start = datetime.datetime.fromtimestamp(now - BACKDATE, datetime.UTC)
    end = datetime.datetime.fromtimestamp(now + lifetime, datetime.UTC)
    return builder.not_valid_before(start).not_valid_after(end)


def make_ca(now: float, lifetime: float = CA_LIFETIME, name: str = "rotor-webhook-ca") -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rotor.dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {int(now)}"),
        ]
    )
    builder = _validity(
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number()),
        now,
        lifetime,
    )
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(to_pem(cert), key_pem(key))


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """ECDSA signatures only; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_serving_cert(
    ca: KeyPair,
    names: Sequence[str],
    now: float,
    lifetime: float = LEAF_LIFETIME,
    ips: Sequence[str] = (),
) -> KeyPair:
    """A serving certificate for DNS ``names`` (the first is its CN) and IP addresses ``ips``
    (the webhook's Service has none; the local demo serves on 127.0.0.1), signed by ``ca``."""
    if not names:
        raise ValueError("a serving certificate needs at least one DNS name")
    ca_cert = load_cert(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    if ca_cert is None or not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA is unreadable")
    # a leaf outliving its CA would be untrusted at the end; cut it short instead
    lifetime = min(lifetime, _ts(ca_cert.not_valid_after_utc) - now)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _validity(
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number()),
        now,
        lifetime,
    )
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(n) for n in names),
                    *(x509.IPAddress(ipaddress.ip_address(a)) for a in ips),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(to_pem(cert), key_pem(key))


def secret_data(pairs: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in pairs.items()}


def read_secret(obj: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in ((obj or {}).get("data") or {}).items():
        try:
            out[k] = base64.b64decode(v).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    return out
