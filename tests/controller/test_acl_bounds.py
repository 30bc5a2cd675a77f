"""The ACL under a flood of requests: requests are bounded and batched, and a revocation takes
effect within one poll however slow the request writes are."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import aclrequests
from controller.acl.configmap import (
    DATA_KEY,
    MAX_DOCUMENT_BYTES,
    ConfigMapAclBackend,
    _fast_load,
    parse_document,
    render_document,
    snapshot_document,
)
from controller.decide import rbac_name
from controller.model import Want
from rotor.acl import AccessRequest, AclSnapshot, Grant
from rotor.names import Principal, SecretRef
from tests.controller.conftest import Harness, eventually
from tests.controller.test_controller import (
    API_SA,
    DB,
    RBAC,
    create,
    deployment_body,
    writer_setup,
)


def want(secret: str, principal: str, mode: str = "ro") -> Want:
    return Want(SecretRef.parse(secret, None, "s"), Principal.parse(principal), mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("grant_mode", "asked", "recorded"),
    [
        (None, "ro", True),
        (None, "rw", True),
        ("ro", "ro", False),
        ("ro", "rw", True),
        ("rw", "rw", False),
        ("rw", "ro", False),  # a writer reads what it writes (AclSnapshot.allows)
    ],
)
def test_only_requests_the_acl_does_not_allow_are_recorded(grant_mode, asked, recorded):
    db, api = SecretRef("shop", "db"), Principal.parse("shop/api")
    grants = frozenset({Grant(db, api, grant_mode)} if grant_mode else set())
    snap = AclSnapshot(version=1, grants=grants, secrets=frozenset({db}))
    chosen = aclrequests.to_record(snap, [want("shop/db", "shop/api", asked)], {db})
    assert bool(chosen.record) == recorded


def test_pending_requests_are_capped_per_principal_namespace_and_sync():
    secrets = {SecretRef("shop", f"s{i}") for i in range(100)}
    snap = AclSnapshot(version=1, secrets=frozenset(secrets))
    wants = [want(f"shop/s{i}", "evil/sa") for i in range(100)]
    chosen = aclrequests.to_record(snap, wants, secrets, per_principal=10)
    assert len(chosen.record) == 10
    assert chosen.held_back == 90
    assert chosen.principals_held == ("evil/sa",)

    many = [want(f"shop/s{i}", f"evil/sa{j}") for i in range(10) for j in range(10)]
    chosen = aclrequests.to_record(snap, many, secrets, per_namespace=25)
    assert len(chosen.record) == 25
    assert {w.principal.namespace for w in chosen.record} == {"evil"}

    chosen = aclrequests.to_record(snap, many, secrets, per_sync=7)
    assert len(chosen.record) == 7

    # pending ones already in the ACL count against the caps; denied and granted ones do not
    pending = tuple(
        AccessRequest(SecretRef("shop", f"s{i}"), Principal("evil", "sa"), "ro") for i in range(10)
    )
    full = AclSnapshot(1, requests=pending, secrets=frozenset(secrets))
    assert aclrequests.to_record(full, wants, secrets, per_principal=10).record == ()
    denied = tuple(AccessRequest(r.secret, r.principal, "ro", "denied") for r in pending)
    freed = AclSnapshot(1, requests=denied, secrets=frozenset(secrets))
    assert len(aclrequests.to_record(freed, wants, secrets, per_principal=10).record) == 10


def test_an_ordinary_workload_is_not_held_back():
    secrets = {SecretRef("shop", "db"), SecretRef("shop", "cache")}
    snap = AclSnapshot(
        1,
        grants=frozenset({Grant(SecretRef("shop", "db"), Principal("shop", "api"), "rw")}),
        secrets=frozenset(secrets),
    )
    wants = [
        want("shop/db", "shop/api", "rw"),
        want("shop/db", "shop/api"),
        want("shop/cache", "web/web"),
    ]
    chosen = aclrequests.to_record(snap, wants, secrets)
    assert chosen.record == (want("shop/cache", "web/web"),)  # granted and writer-reads skipped
    assert chosen.held_back == 0


async def test_many_requests_are_recorded_in_one_write(kube_emulator):
    from kubernetes import client

    backend = ConfigMapAclBackend(
        client.CoreV1Api(kube_emulator.api_client()), "rotor-system", "rotor-acl"
    )
    secrets = [SecretRef("shop", f"s{i}") for i in range(50)]
    for s in secrets:
        await backend.register_secret(s)
    before = (await backend.snapshot()).version
    asks = [(s, Principal(f"ns{j}", "sa"), "ro") for s in secrets for j in range(10)]
    asks.append((SecretRef("shop", "unknown"), Principal("x", "y"), "ro"))  # skipped
    assert await backend.request_many(asks) == 500  # type: ignore[arg-type]
    snap = await backend.snapshot()
    assert snap.version == before + 1  # one change, not 500
    assert len(snap.requests) == 500


async def test_the_configmap_stays_under_the_api_server_limit(kube_emulator):
    from kubernetes import client

    core = client.CoreV1Api(kube_emulator.api_client())
    backend = ConfigMapAclBackend(core, "rotor-system", "rotor-acl")
    secret = SecretRef("shop", "db")
    await backend.register_secret(secret)
    asks = [
        (secret, Principal(f"namespace-{i:05d}", f"serviceaccount-{i:05d}"), "ro")
        for i in range(12_000)
    ]
    recorded = await backend.request_many(asks)  # type: ignore[arg-type]
    assert 0 < recorded < 12_000
    cm = await asyncio.to_thread(
        core.read_namespaced_config_map, "rotor-acl-requests", "rotor-system"
    )
    text = cm.data[DATA_KEY]
    assert len(text.encode()) <= MAX_DOCUMENT_BYTES
    assert len(yaml.safe_load(text)["requests"]) == recorded
    # grants and revocations still go through at the limit
    await backend.approve(secret, Principal("shop", "api"), "rw")
    assert Grant(secret, Principal("shop", "api"), "rw") in (await backend.snapshot()).grants


class SlowRequests:
    """The harness's ConfigMap backend, whose request writes wait until released."""

    name = "configmap"

    def __init__(self, inner: ConfigMapAclBackend) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.waiting = threading.Event()

    async def snapshot(self) -> AclSnapshot:
        return await self.inner.snapshot()

    async def register_secret(self, secret: SecretRef) -> None:
        await self.inner.register_secret(secret)

    async def _slow(self) -> None:
        self.waiting.set()
        await asyncio.to_thread(self.release.wait, 60)

    async def request_access(self, *args: Any) -> None:
        await self._slow()
        await self.inner.request_access(*args)

    async def request_many(self, asks: Any) -> int:
        await self._slow()
        return await self.inner.request_many(asks)


async def test_a_revocation_takes_effect_while_requests_are_being_written(rotor: Harness):
    await writer_setup(rotor)
    binding = rbac_name("rw", DB)
    assert await rotor.get(RBAC, "rolebindings", "shop", binding) is not None
    slow = SlowRequests(rotor.backend)
    rotor.ctl.backend = slow  # type: ignore[assignment]
    try:
        # a flood of new asks: their writes hang
        for i in range(5):
            await create(
                rotor,
                "apps/v1",
                "deployments",
                deployment_body("evil", f"flood-{i}", f"sa-{i}", {"rotor.dev/ro": "shop/db"}),
            )
        await eventually(slow.waiting.is_set, what="the request write started")
        await rotor.backend.revoke(DB, API_SA, "rw")

        async def unbound() -> bool:
            return await rotor.get(RBAC, "rolebindings", "shop", binding) is None

        await eventually(
            unbound, timeout=3 * rotor.ctl.settings.acl_poll + 3, what="the writer unbound"
        )
        assert not slow.release.is_set()  # while the request write still hangs
    finally:
        slow.release.set()


names = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True).filter(
    lambda n: ".." not in n and ".-" not in n and "-." not in n
)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
refs = st.builds(SecretRef, labels, names)
principals = st.builds(Principal, labels, names)


@st.composite
def snapshots(draw: Any) -> AclSnapshot:
    grants = draw(st.frozensets(st.builds(Grant, refs, principals, st.just("ro")), max_size=6))
    requests = draw(
        st.lists(
            st.builds(
                AccessRequest,
                refs,
                principals,
                st.sampled_from(["ro"]),
                st.sampled_from(["pending", "denied"]),
            ),
            max_size=8,
            unique_by=lambda r: (r.secret, r.principal, r.mode),
        )
    )
    requests = [r for r in requests if Grant(r.secret, r.principal, r.mode) not in grants]
    secrets = draw(st.frozensets(refs, max_size=4)) | {g.secret for g in grants}
    return AclSnapshot(draw(st.integers(0, 10**6)), grants, tuple(sorted(requests)), secrets)


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_the_written_document_reads_the_same_with_and_without_yaml(snap: AclSnapshot):
    """render_document is written by hand and read back without YAML: PyYAML must read the
    same document, and both readings must give the snapshot back."""
    text = render_document(snap)
    assert yaml.safe_load(text) == snapshot_document(snap)
    assert _fast_load(text) == snapshot_document(snap)
    assert parse_document(text, "acl") == snap


@pytest.mark.parametrize(
    "text",
    [
        "version: 3\nsecrets:\n  - shop/db\ngrants:\n  - secret: shop/db\n    principal: shop/api\n"
        "    mode: rw\nrequests: []\n",
        "# edited by an admin\nversion: 3\nsecrets: [shop/db]\ngrants:\n"
        "- {secret: shop/db, principal: shop/api, mode: rw}\nrequests: []\n",
        "version: 3\nsecrets: [shop/db]\n"
        "grants: [{secret: shop/db, principal: shop/api, mode: rw}]\nrequests: []\n",
    ],
)
def test_an_admins_own_yaml_style_is_read_too(text: str):
    assert _fast_load(text) is None  # not the written form: PyYAML reads it
    snap = parse_document(text, "acl")
    assert snap.grants == {Grant(SecretRef("shop", "db"), Principal("shop", "api"), "rw")}
    assert snap.version == 3
