"""Throwaway TLS material for local servers (the webhook, the emulator's HTTPS), minted by the
controller's own CA code (:mod:`controller.certs`, what ``certs.provider: controller`` runs in
a cluster), for a day."""

from __future__ import annotations

import time
from pathlib import Path

from controller import certs


def make_certs(
    directory: Path, name: str = "rotor-webhook", dns_names: tuple[str, ...] = ()
) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate ``name`` for 127.0.0.1/localhost: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    ca = certs.make_ca(now, certs.DAY, f"{name}-ca")
    leaf = certs.make_serving_cert(
        ca, (name, "localhost", *dns_names), now, certs.DAY, ips=("127.0.0.1",)
    )
    paths = (directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    paths[0].write_text(ca.cert_pem)
    paths[1].write_text(leaf.cert_pem)
    paths[2].write_text(leaf.key_pem)
    paths[2].chmod(0o600)
    return paths
