"""controller.vault against a real OpenBao: the ExternalStore Ready check and the fan-out hold."""

from __future__ import annotations

import uuid

import hvac
import pytest
import trustme

from agent.vault import TokenLogin, VaultStore
from controller.vault import AuthFailed, KubernetesAuth, TokenAuth, VaultReader
from rotor.errors import PermanentError
from rotor.external import RotorMetadata
from rotor.layout import checksum
from rotor.settings.agent import AgentSettings
from rotor.spec import ExternalStoreSpec
from tests.conftest import free_port
from tests.vault.conftest import fake_jwt, start_bao

NEW = {"password": b"new-password-value"}


def root(bao) -> hvac.Client:
    return hvac.Client(url=bao.url, token=bao.token)


def reader(bao, token: str | None = None, mount: str = "secret") -> VaultReader:
    return VaultReader(bao.url, mount, TokenAuth(token or bao.token))


async def test_ready_with_a_good_token(bao):
    check = await reader(bao).check()
    assert (check.ready, check.reason) == (True, "Ready")


async def test_ready_with_a_least_privilege_token(bao):
    pol = 'path "secret/data/shop/*" { capabilities = ["read"] }'
    root(bao).sys.create_or_update_policy("ctl-read", pol)
    tok = root(bao).auth.token.create(policies=["ctl-read"])["auth"]["client_token"]
    check = await reader(bao, tok).check()
    assert (check.ready, check.reason) == (True, "Ready")


async def test_bad_token_is_auth_failed(bao):
    check = await reader(bao, "s.not-a-token").check()
    assert (check.ready, check.reason) == (False, "AuthFailed")
    assert "s.not-a-token" not in check.message


async def test_missing_mount(bao):
    check = await reader(bao, mount="nowhere").check()
    assert (check.ready, check.reason) == (False, "MountNotFound")
    assert "'nowhere'" in check.message


async def test_kv_v1_mount_is_not_kv2(bao):
    mounts = root(bao).sys.list_mounted_secrets_engines()["data"]
    if "kv1/" not in mounts:
        root(bao).sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    check = await reader(bao, mount="kv1").check()
    assert (check.ready, check.reason) == (False, "NotKV2")
    assert "KV v1" in check.message


async def test_unreachable_server():
    check = await VaultReader(
        f"http://127.0.0.1:{free_port()}", "secret", TokenAuth("t"), timeout=2
    ).check()
    assert (check.ready, check.reason) == (False, "Unreachable")


async def test_kubernetes_role_that_does_not_bind_us_is_auth_failed(bao, kube_auth, tmp_path):
    kube_auth.auth.kubernetes.create_role(
        "rotor-controller",
        bound_service_account_names=["rotor-controller"],
        bound_service_account_namespaces=["rotor-system"],
        policies=["default"],
    )
    jwt = tmp_path / "token"
    jwt.write_text(fake_jwt("rotor-system", "rotor-controller"))
    good = VaultReader(bao.url, "secret", KubernetesAuth("rotor-controller", jwt_file=str(jwt)))
    check = await good.check()
    # the default policy grants nothing under secret/: logged in, but the mount is not ours
    assert check.reason == "MountNotFound"
    who = await good.whoami()
    assert who.role == "rotor-controller"
    assert who.display_name == "kubernetes-rotor-system-rotor-controller"
    bad = VaultReader(bao.url, "secret", KubernetesAuth("no-such-role", jwt_file=str(jwt)))
    check = await bad.check()
    assert (check.ready, check.reason) == (False, "AuthFailed")
    assert "no-such-role" in check.message


async def test_store_holds_what_the_agent_wrote_and_not_a_persons_change(bao):
    p = f"shop/{uuid.uuid4().hex[:10]}"
    agent = VaultStore(bao.url, "secret", TokenLogin(bao.token))
    ctl = reader(bao)
    assert not await ctl.store_holds(p, 1, checksum(NEW))
    await agent.write_pending(p, NEW, None, RotorMetadata(1, "", "shop/api-0", 0.0, "shop/db"))
    assert await ctl.store_holds(p, 1, checksum(NEW))
    root(bao).secrets.kv.v2.create_or_update_secret(p, secret={"password": "typed"})
    assert not await ctl.store_holds(p, 1, checksum(NEW))
    got = await ctl.read_values(p)
    assert got.values == {"password": b"typed"}
    assert got.record is not None
    assert not got.record.written_by_rotor


async def test_read_without_rights_names_the_capability(bao):
    tok = root(bao).auth.token.create(policies=["default"])["auth"]["client_token"]
    with pytest.raises(PermanentError, match=r'\["read"\] on path "secret/data/shop/x"'):
        await reader(bao, tok).read_version("shop/x")


def test_from_spec_needs_the_token_for_token_auth():
    spec = ExternalStoreSpec.from_dict(
        {
            "vault": {
                "server": "https://vault:8200",
                "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
            }
        }
    ).vault
    with pytest.raises(AuthFailed, match="vault-token/token"):
        VaultReader.from_spec(spec)
    assert "secret-token" not in repr(VaultReader.from_spec(spec, token="secret-token"))


@pytest.fixture
def tls_bao(tmp_path):
    server = start_bao(tmp_path, tls=True)
    try:
        yield server
    finally:
        server.stop()


def tls_spec(bao, ca: str) -> ExternalStoreSpec:
    return ExternalStoreSpec.from_dict(
        {
            "vault": {
                "server": bao.url,
                "caBundle": ca,
                "auth": {"token": {"secretRef": {"name": "vault-token"}}},
            }
        }
    )


async def test_ca_bundle_is_trusted_and_nothing_else(tls_bao):
    good = tls_spec(tls_bao, tls_bao.ca_pem).vault
    check = await VaultReader.from_spec(good, token=tls_bao.token).check()
    assert (check.ready, check.reason) == (True, "Ready")
    agent = VaultStore.from_spec(good, AgentSettings.from_env({"ROTOR_VAULT_TOKEN": tls_bao.token}))
    assert await agent.write_pending("shop/tls", NEW, None, RotorMetadata(1, "", "a", 0.0)) == 1
    other = tls_spec(tls_bao, trustme.CA().cert_pem.bytes().decode()).vault
    check = await VaultReader.from_spec(other, token=tls_bao.token).check()
    assert (check.ready, check.reason) == (False, "Unreachable")
    assert "caBundle" in check.message
    untrusting = VaultStore.from_spec(
        other, AgentSettings.from_env({"ROTOR_VAULT_TOKEN": tls_bao.token})
    )
    with pytest.raises(PermanentError, match="caBundle"):
        await untrusting.read_version("shop/tls")
