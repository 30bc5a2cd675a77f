"""Webhook certificates: the pure decisions (controller.certs) and the controller keeping the
Secret and the caBundle against the strict emulator (controller.certsync)."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from typing import Any

import pytest
from cryptography import x509

from controller import certs
from controller.certsync import ADMISSION, WEBHOOK_CONFIGS, sync_certs
from controller.kube import Kube, path
from rotor.settings.controller import ControllerSettings
from tests.controller.conftest import eventually, running_controller, with_settings

NOW = 1_800_000_000.0
NAMES = (
    "rotor-webhook.rotor-system",
    "rotor-webhook.rotor-system.svc",
    "rotor-webhook.rotor-system.svc.cluster.local",
)
SETTINGS = ControllerSettings(webhook_config_name="rotor-webhook")


def webhook_config(svc: str = "rotor-webhook", ca_bundle: str | None = None) -> dict[str, Any]:
    client_config: dict[str, Any] = {
        "service": {"name": svc, "namespace": "rotor-system", "path": "/mutate", "port": 443}
    }
    if ca_bundle:
        client_config["caBundle"] = ca_bundle
    return {
        "apiVersion": ADMISSION,
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "rotor-webhook"},
        "webhooks": [
            {
                "name": "inject.rotor.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": client_config,
            }
        ],
    }


# -- pure ---------------------------------------------------------------------------------------
def test_service_names_are_the_three_dns_forms():
    assert certs.service_names(webhook_config()) == NAMES
    assert certs.service_names({"webhooks": [{"clientConfig": {"url": "https://x"}}]}) == ()


@pytest.mark.parametrize(
    ("age_fraction", "names", "expected"),
    [
        (0.0, NAMES, False),
        (0.6, NAMES, False),
        (0.67, NAMES, True),  # past 2/3 of the lifetime
        (0.0, (*NAMES, "other.rotor-system.svc"), True),  # the names changed
        (0.0, NAMES[:1], True),
    ],
)
def test_needs_new_cert(age_fraction, names, expected):
    ca = certs.make_ca(NOW)
    leaf = certs.make_serving_cert(ca, NAMES, NOW)
    lifetime = certs.LEAF_LIFETIME + certs.BACKDATE
    now = NOW - certs.BACKDATE + lifetime * age_fraction
    assert certs.needs_new_cert(leaf.cert_pem, now, names) is expected


def test_needs_new_cert_when_absent_or_garbage():
    assert certs.needs_new_cert(None, NOW, NAMES)
    assert certs.needs_new_cert("not a certificate", NOW, NAMES)


def test_serving_cert_is_p256_signed_by_the_ca_and_within_its_life():
    ca = certs.make_ca(NOW)
    leaf = certs.make_serving_cert(ca, NAMES, NOW)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem.encode())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    assert certs.signed_by(cert, ca_cert)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.not_valid_after_utc.timestamp() == pytest.approx(NOW + certs.LEAF_LIFETIME)
    assert ca_cert.not_valid_after_utc.timestamp() == pytest.approx(NOW + certs.CA_LIFETIME)
    assert "KEY" not in repr(leaf)


def test_serving_cert_can_name_ip_addresses():
    """The local demo and the system tests serve on 127.0.0.1 (rotorctl/tls.py)."""
    import ipaddress

    leaf = certs.make_serving_cert(certs.make_ca(NOW), NAMES, NOW, ips=("127.0.0.1",))
    sans = x509.load_pem_x509_certificate(leaf.cert_pem.encode()).extensions
    alt = sans.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert alt.get_values_for_type(x509.DNSName) == list(NAMES)


def test_ca_bundle_patch_sets_every_webhook_and_is_empty_when_set():
    cfg = webhook_config()
    cfg["webhooks"].append({**cfg["webhooks"][0], "name": "second.rotor.dev"})
    ops = certs.ca_bundle_patch(cfg, "PEM")
    want = base64.b64encode(b"PEM").decode()
    assert [o["path"] for o in ops if o["op"] == "add"] == [
        "/webhooks/0/clientConfig/caBundle",
        "/webhooks/1/clientConfig/caBundle",
    ]
    assert {o["value"] for o in ops if o["op"] == "add"} == {want}
    for hook in cfg["webhooks"]:
        hook["clientConfig"]["caBundle"] = want
    assert certs.ca_bundle_patch(cfg, "PEM") == []


def test_ca_rotation_keeps_the_old_ca_until_the_new_leaf_has_been_out_a_while():
    ca = certs.make_ca(NOW)
    leaf = certs.make_serving_cert(ca, NAMES, NOW)
    trusted = certs.bundle(ca.cert_pem, ())
    late = NOW + certs.CA_LIFETIME * 0.7  # the CA is due; its leaf would be anyway
    plan = certs.plan_certs(ca, leaf, trusted, late, NAMES)
    assert (plan.new_ca, plan.new_leaf) == (True, True)
    assert plan.keep_old == (ca.cert_pem,)  # the old CA stays trusted
    new_ca = certs.make_ca(late)
    new_leaf = certs.make_serving_cert(new_ca, NAMES, late)
    both = certs.bundle(new_ca.cert_pem, plan.keep_old)
    soon = certs.plan_certs(new_ca, new_leaf, both, late + 60, NAMES)
    assert (soon.new_ca, soon.new_leaf) == (False, False)
    assert soon.keep_old == (ca.cert_pem,)
    later = certs.plan_certs(new_ca, new_leaf, both, late + certs.CA_OVERLAP + 60, NAMES)
    assert later.keep_old == ()


def test_nothing_to_do_for_a_valid_pair():
    ca = certs.make_ca(NOW)
    leaf = certs.make_serving_cert(ca, NAMES, NOW)
    plan = certs.plan_certs(ca, leaf, certs.bundle(ca.cert_pem, ()), NOW + 86400, NAMES)
    assert plan == certs.CertPlan(False, False, ())


def test_a_leaf_from_another_ca_is_replaced():
    ca, other = certs.make_ca(NOW), certs.make_ca(NOW)
    leaf = certs.make_serving_cert(other, NAMES, NOW)
    assert certs.plan_certs(ca, leaf, ca.cert_pem, NOW, NAMES).new_leaf


# -- against the emulator -------------------------------------------------------------------------
async def secret(kube: Kube, name: str) -> dict[str, str]:
    return certs.read_secret(await kube.aget(path("v1", "secrets", "rotor-system", name)))


async def bundle_of(kube: Kube) -> str:
    cfg = await kube.aget(path(ADMISSION, WEBHOOK_CONFIGS, None, "rotor-webhook")) or {}
    raw = cfg["webhooks"][0]["clientConfig"].get("caBundle", "")
    return base64.b64decode(raw).decode()


def assert_served_cert_trusted(data: dict[str, str], ca_bundle: str, names=NAMES) -> None:
    """What the API server does: verify the served chain against the caBundle, by name."""
    cert = x509.load_pem_x509_certificate(data["tls.crt"].encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(names)
    cas = x509.load_pem_x509_certificates(ca_bundle.encode())
    assert any(certs.signed_by(cert, ca) for ca in cas)
    # and the pair loads as a TLS server identity (key matches certificate)
    assert certs.key_matches(cert, data["tls.key"])


@pytest.fixture
def kube(kube_emulator):
    k = Kube(kube_emulator.api_client())
    yield k
    k.close()


async def install_config(kube: Kube, cfg: dict[str, Any] | None = None) -> None:
    await kube.acreate(path(ADMISSION, WEBHOOK_CONFIGS), cfg or webhook_config())


async def test_secret_and_ca_bundle_are_created(kube):
    assert (await sync_certs(kube, SETTINGS, NOW)).waiting  # no configuration yet
    await install_config(kube)
    done = await sync_certs(kube, SETTINGS, NOW)
    assert (done.new_ca, done.new_leaf, done.bundle_patched) == (True, True, True)
    data = await secret(kube, "rotor-webhook-tls")
    assert_served_cert_trusted(data, await bundle_of(kube))
    assert data["ca.crt"] == await bundle_of(kube)
    assert "ca.key" not in data  # the webhook pods never get the CA key
    assert "ca.key" in await secret(kube, "rotor-webhook-tls-ca")


async def test_restart_keeps_a_valid_cert(kube):
    await install_config(kube)
    await sync_certs(kube, SETTINGS, NOW)
    before = await secret(kube, "rotor-webhook-tls")
    again = await sync_certs(kube, SETTINGS, NOW + 86400)  # a new leader, a day later
    assert again == type(again)()
    assert await secret(kube, "rotor-webhook-tls") == before


async def test_renewal_near_expiry(kube):
    await install_config(kube)
    await sync_certs(kube, SETTINGS, NOW)
    before = await secret(kube, "rotor-webhook-tls")
    done = await sync_certs(kube, SETTINGS, NOW + certs.LEAF_LIFETIME * 0.7)
    assert (done.new_leaf, done.new_ca) == (True, False)
    after = await secret(kube, "rotor-webhook-tls")
    assert after["tls.crt"] != before["tls.crt"]
    assert_served_cert_trusted(after, await bundle_of(kube))


async def test_ca_rotation_never_leaves_the_served_cert_untrusted(kube):
    await install_config(kube)
    await sync_certs(kube, SETTINGS, NOW)
    old = await secret(kube, "rotor-webhook-tls")
    t = NOW + certs.CA_LIFETIME * 0.7
    done = await sync_certs(kube, SETTINGS, t)
    assert done.new_ca
    new = await secret(kube, "rotor-webhook-tls")
    ca_bundle = await bundle_of(kube)
    assert_served_cert_trusted(old, ca_bundle)  # a webhook pod still on the old files
    assert_served_cert_trusted(new, ca_bundle)
    await sync_certs(kube, SETTINGS, t + certs.CA_OVERLAP + 60)
    trimmed = await bundle_of(kube)
    assert len(x509.load_pem_x509_certificates(trimmed.encode())) == 1
    assert_served_cert_trusted(new, trimmed)
    assert (await secret(kube, "rotor-webhook-tls"))["ca.crt"] == trimmed


async def test_bundle_wiped_by_an_upgrade_is_restored_and_names_follow_the_service(kube):
    await install_config(kube)
    await sync_certs(kube, SETTINGS, NOW)
    before = await secret(kube, "rotor-webhook-tls")
    # helm upgrade re-applies the configuration without caBundle, pointing at a renamed service
    await kube.apatch(
        path(ADMISSION, WEBHOOK_CONFIGS, None, "rotor-webhook"),
        {"webhooks": webhook_config(svc="rotor2-webhook")["webhooks"]},
    )
    done = await sync_certs(kube, SETTINGS, NOW + 60)
    assert (done.bundle_patched, done.new_leaf, done.new_ca) == (True, True, False)
    after = await secret(kube, "rotor-webhook-tls")
    names = tuple(n.replace("rotor-webhook", "rotor2-webhook") for n in NAMES)
    assert_served_cert_trusted(after, await bundle_of(kube), names)
    assert after["ca.crt"] == before["ca.crt"]


async def test_a_tls_client_trusting_the_bundle_completes_a_handshake(kube, tmp_path):
    await install_config(kube)
    await sync_certs(kube, SETTINGS, time.time())
    data = await secret(kube, "rotor-webhook-tls")
    (tmp_path / "tls.crt").write_text(data["tls.crt"])
    (tmp_path / "tls.key").write_text(data["tls.key"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        client_ctx = ssl.create_default_context(cadata=await bundle_of(kube))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="rotor-webhook.rotor-system.svc"
        )
        assert await reader.read() == b"ok"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


@with_settings(webhook_config_name="rotor-webhook")
async def test_the_running_leader_manages_the_certificate(kube_emulator, controller_settings):
    k = Kube(kube_emulator.api_client())
    try:
        await install_config(k)
        async for _h in running_controller(kube_emulator, controller_settings):
            data = await eventually(lambda: secret(k, "rotor-webhook-tls"), what="the Secret")
            assert_served_cert_trusted(data, await bundle_of(k))
    finally:
        k.close()


@with_settings(manage_certs=False)
async def test_not_managed_when_off(kube_emulator, controller_settings):
    k = Kube(kube_emulator.api_client())
    try:
        await install_config(k)
        async for h in running_controller(kube_emulator, controller_settings):
            await h.rsec("shop", "db")
            await eventually(lambda h=h: h.get("v1", "secrets", "shop", "db"), what="a source")
            assert await secret(k, "rotor-webhook-tls") == {}
    finally:
        k.close()
