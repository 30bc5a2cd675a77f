"""agent.vault against a real OpenBao: CAS, rights, outages, recovery, logins."""

from __future__ import annotations

import json
import uuid

import hvac
import pytest

from agent.vault import KubernetesLogin, TokenLogin, VaultStore, login_from_spec
from rotor.errors import ConflictError, InvalidSpec, NotFoundError, PermanentError, UnavailableError
from rotor.external import RotorMetadata
from rotor.layout import SecretState, checksum
from rotor.protocol import cas_version, commit, prepare, recovery
from rotor.settings.agent import AgentSettings
from rotor.spec import ExternalStoreSpec, RotatingSecretSpec
from tests.vault.conftest import fake_jwt

OLD = {"password": b"old-password-value"}
NEW = {"password": b"new-password-value"}
PEM = {
    "key": b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n",
    "key.pub": b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 rotor",
}
T0 = 1_700_000_000.0
SPEC = RotatingSecretSpec.from_dict(
    {"keys": [{"name": "password", "generator": {"type": "password"}}]}
)


def root(bao) -> hvac.Client:
    return hvac.Client(url=bao.url, token=bao.token)


def token_with(bao, policy: str, name: str = "agent") -> str:
    pol = f"p-{uuid.uuid4().hex[:8]}"
    root(bao).sys.create_or_update_policy(pol, policy)
    return root(bao).auth.token.create(policies=[pol], display_name=name)["auth"]["client_token"]


def store(bao, token: str | None = None, timeout: float = 10.0) -> VaultStore:
    return VaultStore(bao.url, "secret", TokenLogin(token or bao.token), timeout=timeout)


def meta(version: int = 2) -> RotorMetadata:
    return RotorMetadata(version, "", "shop/api-0", T0, "shop/db")


def path() -> str:
    return f"shop/{uuid.uuid4().hex[:10]}"


def person_writes(bao, p: str, values: dict[str, str]) -> int:
    resp = root(bao).secrets.kv.v2.create_or_update_secret(p, secret=values, mount_point="secret")
    return int(resp["data"]["version"])


async def test_write_read_back_with_metadata_and_no_value_in_it(bao):
    s, p = store(bao), path()
    assert await s.read_version(p) is None
    v = await s.write_pending(p, PEM, None, meta(3))
    assert v == 1
    rec = await s.read_version(p)
    assert rec is not None
    assert (rec.store_version, rec.rotor_version, rec.checksum) == (1, 3, checksum(PEM))
    assert rec.rotor is not None
    assert rec.rotor.writer == "shop/api-0"
    assert rec.rotor.secret == "shop/db"
    assert (await s.read_values(p)).values == PEM
    # metadata is what a person sees in `bao kv metadata get`: names and versions, no value
    custom = root(bao).secrets.kv.v2.read_secret_metadata(p)["data"]["custom_metadata"]
    assert custom["rotor-version"] == "3"
    assert custom["rotor-store-version"] == "1"
    text = json.dumps(custom)
    assert all(value.decode() not in text for value in PEM.values())


async def test_metadata_of_other_owners_is_kept(bao):
    s, p = store(bao), path()
    await s.write_pending(p, OLD, None, meta(1))
    root(bao).secrets.kv.v2.update_metadata(p, custom_metadata={"owner": "team-db"})
    await s.write_pending(p, NEW, 1, meta(2))
    custom = root(bao).secrets.kv.v2.read_secret_metadata(p)["data"]["custom_metadata"]
    assert custom["owner"] == "team-db"
    assert custom["rotor-version"] == "2"


async def test_cas_conflict_never_overwrites_a_persons_write(bao):
    s, p = store(bao), path()
    v1 = await s.write_pending(p, OLD, None, meta(1))
    person_writes(bao, p, {"password": "typed-by-a-person"})
    with pytest.raises(ConflictError, match="check-and-set"):
        await s.write_pending(p, NEW, v1, meta(2))
    assert (await s.read_values(p)).values == {"password": b"typed-by-a-person"}
    # and the next rotation's CAS choice refuses too, until the controller propagated it
    state = commit(prepare(SecretState(), OLD, T0, "w"), T0, 0)
    with pytest.raises(ConflictError, match="outside Rotor"):
        cas_version(state, await s.read_version(p), p)


async def test_create_only_when_the_path_is_expected_empty(bao):
    s, p = store(bao), path()
    person_writes(bao, p, {"password": "already-there"})
    with pytest.raises(ConflictError):
        await s.write_pending(p, NEW, None, meta(1))


async def test_retry_after_a_lost_answer_is_not_a_conflict(bao):
    s, p = store(bao), path()
    v = await s.write_pending(p, NEW, None, meta(1))
    assert await s.write_pending(p, NEW, None, meta(1)) == v
    rec = await s.read_version(p)
    assert rec is not None
    assert rec.store_version == v


async def test_too_few_rights_names_the_path_and_capability(bao):
    p = path()
    tok = token_with(bao, f'path "secret/data/{p}" {{ capabilities = ["read"] }}')
    with pytest.raises(PermanentError) as exc:
        await store(bao, tok).write_pending(p, NEW, None, meta(1))
    text = str(exc.value)
    assert f'"secret/data/{p}"' in text
    assert '["create", "update"]' in text
    assert NEW["password"].decode() not in text


async def test_missing_metadata_right_still_writes_the_value(bao, caplog):
    p = path()
    rights = '["create", "update", "read"]'
    tok = token_with(bao, f'path "secret/data/{p}" {{ capabilities = {rights} }}')
    s = store(bao, tok)
    v = await s.write_pending(p, NEW, None, meta(1))
    rec = await s.read_version(p)
    assert rec is not None
    assert (rec.store_version, rec.checksum, rec.written_by_rotor) == (v, checksum(NEW), False)
    assert f"secret/metadata/{p}" in caplog.text
    assert '["patch"]' in caplog.text


async def test_relogin_after_the_token_was_replaced(bao, tmp_path):
    p = path()
    policy = (
        f'path "secret/data/{p}" {{ capabilities = ["create", "update", "read"] }}\n'
        f'path "secret/metadata/{p}" {{ capabilities = ["patch"] }}'
    )
    first, second = token_with(bao, policy), token_with(bao, policy)
    token_file = tmp_path / "token"
    token_file.write_text(first)
    s = VaultStore(bao.url, "secret", TokenLogin(token_file=str(token_file)))
    v1 = await s.write_pending(p, OLD, None, meta(1))
    root(bao).auth.token.revoke(first)
    token_file.write_text(second + "\n")
    assert await s.write_pending(p, NEW, v1, meta(2)) == v1 + 1


async def test_server_stopped_during_a_write_is_unavailable(own_bao):
    s, p = store(own_bao), path()
    await s.write_pending(p, OLD, None, meta(1))
    own_bao.stop()
    with pytest.raises(UnavailableError, match="did not answer"):
        await s.write_pending(p, NEW, 1, meta(2))


async def test_server_hung_during_a_write_loses_nothing(own_bao):
    s, p = store(own_bao, timeout=1.0), path()
    v1 = await s.write_pending(p, OLD, None, meta(1))
    state = prepare(commit(prepare(SecretState(), OLD, T0, "w"), T0, 0), NEW, T0 + 1, "w")
    own_bao.pause()
    try:
        with pytest.raises(UnavailableError):
            await s.write_pending(p, NEW, v1, meta(2))
    finally:
        own_bao.resume()
    # the pending values are still in the source Secret (state); the retry lands them exactly
    # once, whether or not the hung request was applied after all
    v2 = await s.write_pending(p, state.pending, v1, meta(2))
    assert v2 == v1 + 1
    assert (await s.read_values(p)).values == NEW
    assert recovery(state, SPEC, False, {"vault": await s.read_version(p)}) == "commit"


async def test_read_of_a_missing_version(bao):
    s, p = store(bao), path()
    with pytest.raises(NotFoundError):
        await s.read_values(p)
    await s.write_pending(p, OLD, None, meta(1))
    with pytest.raises(NotFoundError):
        await s.read_values(p, 5)


async def test_deleted_current_version_can_be_replaced(bao):
    s, p = store(bao), path()
    await s.write_pending(p, OLD, None, meta(1))
    root(bao).secrets.kv.v2.delete_latest_version_of_secret(p)
    rec = await s.read_version(p)
    assert rec is not None
    assert rec.deleted
    state = commit(prepare(SecretState(), OLD, T0, "w"), T0, 0)
    assert await s.write_pending(p, NEW, cas_version(state, rec, p), meta(2)) == 2


# -- recovery: a writer restarts and finds phase=pending ------------------------------------------
@pytest.mark.parametrize(
    ("step", "decision"),
    [
        ("prepared", "abort"),  # crashed before writing any store
        ("one-of-two", "abort"),  # wrote the first store only
        ("both", "commit"),  # wrote every store, crashed before commit
        ("person-after", "abort"),  # a person wrote after us: ours is not current any more
    ],
)
async def test_recovery_decision_at_each_step(bao, step, decision):
    a, b = path(), path()
    writer = store(bao)
    committed = commit(prepare(SecretState(), OLD, T0, "w"), T0, 0)
    expected = {}
    for p in (a, b):
        expected[p] = await writer.write_pending(p, OLD, None, meta(1))
    pending = prepare(committed, NEW, T0 + 5, "w")
    if step in ("one-of-two", "both", "person-after"):
        await writer.write_pending(a, pending.pending, expected[a], meta(2))
    if step in ("both", "person-after"):
        await writer.write_pending(b, pending.pending, expected[b], meta(2))
    if step == "person-after":
        person_writes(bao, b, {"password": "typed-by-a-person"})
    restarted = store(bao)  # a new process: nothing in memory but the source Secret
    records = {p: await restarted.read_version(p) for p in (a, b)}
    assert recovery(pending, SPEC, False, records) == decision


# -- logins -------------------------------------------------------------------------------------
async def test_kubernetes_login_with_the_pods_token(bao, kube_auth, tmp_path):
    p = path()
    kube_auth.sys.create_or_update_policy(
        "rotor-shop",
        f'path "secret/data/{p}" {{ capabilities = ["create", "update", "read"] }}\n'
        f'path "secret/metadata/{p}" {{ capabilities = ["patch"] }}',
    )
    kube_auth.auth.kubernetes.create_role(
        "rotor-shop",
        bound_service_account_names=["api"],
        bound_service_account_namespaces=["shop"],
        policies=["rotor-shop"],
    )
    jwt = tmp_path / "token"
    jwt.write_text(fake_jwt("shop", "api"))
    s = VaultStore(bao.url, "secret", KubernetesLogin("rotor-shop", jwt_file=str(jwt)))
    assert await s.write_pending(p, NEW, None, meta(1)) == 1
    # another service account is not bound to the role: a clear, permanent refusal
    jwt.write_text(fake_jwt("shop", "intruder"))
    other = VaultStore(bao.url, "secret", KubernetesLogin("rotor-shop", jwt_file=str(jwt)))
    with pytest.raises(PermanentError, match="role 'rotor-shop' was refused"):
        await other.read_version(p)


def test_login_from_spec():
    kube = ExternalStoreSpec.from_dict(
        {"vault": {"server": "https://v:8200", "auth": {"kubernetes": {"role": "r"}}}}
    ).vault
    assert login_from_spec(kube, AgentSettings.from_env({})) == KubernetesLogin("r")
    tok = ExternalStoreSpec.from_dict(
        {"vault": {"server": "https://v:8200", "auth": {"token": {"secretRef": {"name": "t"}}}}}
    ).vault
    got = login_from_spec(tok, AgentSettings.from_env({"ROTOR_VAULT_TOKEN_FILE": "/run/t"}))
    assert got == TokenLogin(token_file="/run/t")
    with pytest.raises(InvalidSpec, match="ROTOR_VAULT_TOKEN_FILE"):
        login_from_spec(tok, AgentSettings.from_env({})).read()  # type: ignore[union-attr]
