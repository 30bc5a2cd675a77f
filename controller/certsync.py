"""The I/O of webhook certificate management (decisions in :mod:`controller.certs`).

One :func:`sync_certs` pass: read the MutatingWebhookConfiguration (``get``; the chart grants
only get/patch on it by name), the serving Secret and the CA Secret; plan; then write in the
order that never leaves the webhook untrusted: the CA Secret, the caBundle (new CA added next to
the old), and only then the serving Secret. The leader runs it every :data:`CERT_POLL` seconds
(a ``helm upgrade`` that re-applies the configuration without a caBundle is repaired within one
poll).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from controller import certs
from controller.kube import JSON_PATCH, Kube, Obj, path
from controller.metrics import Metrics
from rotor.errors import NotFoundError
from rotor.layout import LABEL_MANAGED_BY, MANAGED_BY
from rotor.settings.controller import ControllerSettings

log = logging.getLogger("rotor.controller.certs")

CERT_POLL = 10.0
ADMISSION = "admissionregistration.k8s.io/v1"
WEBHOOK_CONFIGS = "mutatingwebhookconfigurations"


@dataclass(frozen=True)
class CertSync:
    """What one pass did (for logs and tests)."""

    new_ca: bool = False
    new_leaf: bool = False
    bundle_patched: bool = False
    trusted_updated: bool = False
    waiting: str = ""
    """Why nothing could be done yet (e.g. the webhook configuration does not exist)."""


def _secret_body(settings: ControllerSettings, name: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls" if "tls.crt" in data else "Opaque",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, "app.kubernetes.io/component": "webhook"},
        },
        "data": certs.secret_data(data),
    }


async def _put_secret(
    kube: Kube, settings: ControllerSettings, name: str, exists: bool, data: dict[str, str]
) -> None:
    body = _secret_body(settings, name, data)
    if exists:  # a Secret's type is immutable: leave it as it is
        body.pop("type")
        await kube.apatch(path("v1", "secrets", settings.namespace, name), body)
    else:
        await kube.aapply(path("v1", "secrets", settings.namespace), body)


def _pair(data: dict[str, str], cert: str, key: str) -> certs.KeyPair | None:
    return certs.KeyPair(data[cert], data[key]) if cert in data and key in data else None


async def _patch_bundle(kube: Kube, settings: ControllerSettings, ops: list[Obj]) -> bool:
    """Patch the caBundle; False when the webhook configuration went away meanwhile."""
    try:
        await kube.apatch(
            path(ADMISSION, WEBHOOK_CONFIGS, None, settings.webhook_config_name),
            ops,
            JSON_PATCH,
        )
    except NotFoundError:
        return False
    log.info("webhook certificates: caBundle of %s updated", settings.webhook_config_name)
    return True


async def sync_certs(kube: Kube, settings: ControllerSettings, now: float) -> CertSync:
    ns = settings.namespace
    config = await kube.aget(path(ADMISSION, WEBHOOK_CONFIGS, None, settings.webhook_config_name))
    if config is None:
        return CertSync(waiting=f"MutatingWebhookConfiguration {settings.webhook_config_name}")
    names = certs.service_names(config)
    if not names:
        return CertSync(waiting=f"{settings.webhook_config_name} names no service")
    serving_name = settings.webhook_cert_secret
    ca_name = serving_name + certs.CA_SUFFIX
    serving_obj = await kube.aget(path("v1", "secrets", ns, serving_name))
    ca_obj = await kube.aget(path("v1", "secrets", ns, ca_name))
    serving, ca_data = certs.read_secret(serving_obj), certs.read_secret(ca_obj)
    ca, leaf = _pair(ca_data, "ca.crt", "ca.key"), _pair(serving, "tls.crt", "tls.key")
    plan = certs.plan_certs(ca, leaf, serving.get("ca.crt"), now, names)
    if plan.new_ca or ca is None:
        ca = certs.make_ca(now)
        await _put_secret(
            kube,
            settings,
            ca_name,
            ca_obj is not None,
            {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem},
        )
        log.info("webhook certificates: new CA (Secret %s/%s)", ns, ca_name)
    trusted = certs.bundle(ca.cert_pem, plan.keep_old)
    ops = certs.ca_bundle_patch(config, trusted)
    if ops and not await _patch_bundle(kube, settings, ops):
        return CertSync(plan.new_ca, waiting=f"{settings.webhook_config_name} went away")
    if plan.new_leaf or leaf is None:
        leaf = certs.make_serving_cert(ca, names, now)
        data = {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": trusted}
        await _put_secret(kube, settings, serving_name, serving_obj is not None, data)
        log.info("webhook certificates: new serving certificate for %s", ", ".join(names))
        return CertSync(plan.new_ca, True, bool(ops), True)
    if serving.get("ca.crt") != trusted:
        await kube.apatch(
            path("v1", "secrets", ns, serving_name),
            {"data": certs.secret_data({"ca.crt": trusted})},
        )
        return CertSync(plan.new_ca, False, bool(ops), True)
    return CertSync(plan.new_ca, False, bool(ops), False)


async def cert_loop(
    kube: Kube,
    settings: ControllerSettings,
    clock: Callable[[], float],
    metrics: Metrics,
    every: float = CERT_POLL,
) -> None:
    """Keep the webhook's certificate and caBundle (``ROTOR_MANAGE_CERTS``; leader only)."""
    waiting = ""
    while True:
        try:
            done = await sync_certs(kube, settings, clock())
            if done.waiting and done.waiting != waiting:
                log.info("webhook certificates: waiting for %s", done.waiting)
            waiting = done.waiting
        except Exception as e:  # retried at the next poll
            metrics.errors.labels("certs").inc()
            log.warning("webhook certificates: %s", e)
        await asyncio.sleep(every)
