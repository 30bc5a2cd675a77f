"""The ConfigMap ACL backend against the strict emulator, and its YAML format."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from kubernetes import client

from controller.acl.configmap import (
    DATA_KEY,
    ConfigMapAclBackend,
    parse_document,
    render_document,
)
from controller.model import read_pod, read_workload, requests_from_workload
from rotor.acl import AccessRequest, AclBackend, AclSnapshot, Grant
from rotor.errors import InvalidSpec, NotFoundError, UnavailableError
from rotor.names import Principal, SecretRef
from tests.conftest import free_port

DB = SecretRef("shop", "db")
API = Principal("shop", "api")
WEB = Principal("web", "web")


@pytest.fixture
def core(kube_emulator):
    return client.CoreV1Api(kube_emulator.api_client())


@pytest.fixture
def backend(core):
    return ConfigMapAclBackend(core, "rotor-system", "rotor-acl")


async def test_is_an_acl_backend(backend):
    assert isinstance(backend, AclBackend)
    assert (await backend.snapshot()).version == 0  # no ConfigMap yet: an empty ACL


async def test_request_approve_deny_revoke(backend, core):
    await backend.register_secret(DB)
    await backend.request_access(DB, API, "rw")
    await backend.request_access(DB, WEB, "ro")
    await backend.request_access(DB, WEB, "ro")  # idempotent
    snap = await backend.snapshot()
    assert snap.requests == (
        AccessRequest(DB, API, "rw", "pending"),
        AccessRequest(DB, WEB, "ro", "pending"),
    )
    assert not snap.grants

    await backend.approve(DB, API, "rw")
    await backend.deny(DB, WEB, "ro")
    await backend.request_access(DB, WEB, "ro")  # a denied request stays denied
    snap2 = await backend.snapshot()
    assert snap2.grants == {Grant(DB, API, "rw")}
    assert snap2.requests == (AccessRequest(DB, WEB, "ro", "denied"),)
    assert snap2.version > snap.version

    await backend.revoke(DB, API, "rw")
    assert not (await backend.snapshot()).grants

    # what an admin sees and edits: requests where the controller writes, grants apart
    cm = core.read_namespaced_config_map("rotor-acl-requests", "rotor-system")
    doc = yaml.safe_load(cm.data[DATA_KEY])
    assert doc["secrets"] == ["shop/db"]
    assert doc["requests"] == [
        {"secret": "shop/db", "principal": "web/web", "mode": "ro", "state": "denied"}
    ]
    assert doc["grants"] == []
    grants = yaml.safe_load(
        core.read_namespaced_config_map("rotor-acl", "rotor-system").data[DATA_KEY]
    )
    assert grants["grants"] == []
    assert grants["requests"] == []


async def test_request_for_unknown_secret_is_refused(backend):
    with pytest.raises(NotFoundError):
        await backend.request_access(DB, API, "rw")


async def test_admin_edit_is_read(backend, core):
    await backend.register_secret(DB)
    await backend.request_access(DB, WEB, "ro")
    cm = core.read_namespaced_config_map("rotor-acl-requests", "rotor-system")
    doc = yaml.safe_load(cm.data[DATA_KEY])
    grant = doc["requests"][0]
    del grant["state"]
    core.create_namespaced_config_map(  # approve: the entry into the grants ConfigMap
        "rotor-system",
        {
            "metadata": {"name": "rotor-acl"},
            "data": {DATA_KEY: yaml.safe_dump({"grants": [grant]})},
        },
    )
    snap = await backend.snapshot()
    assert snap.grants == {Grant(DB, WEB, "ro")}
    assert snap.requests == ()


async def test_a_grant_in_the_requests_configmap_grants_nothing(backend, core):
    """Issue 24: the controller writes requests, so whoever holds its token could write a grant
    there too; only the grants ConfigMap (ACL admins) grants."""
    await backend.register_secret(DB)
    await backend.request_access(DB, WEB, "ro")
    cm = core.read_namespaced_config_map("rotor-acl-requests", "rotor-system")
    doc = yaml.safe_load(cm.data[DATA_KEY])
    doc["grants"] = [{"secret": "shop/db", "principal": "web/evil", "mode": "ro"}]
    core.patch_namespaced_config_map(
        "rotor-acl-requests",
        "rotor-system",
        {"data": {DATA_KEY: yaml.safe_dump(doc)}},
        _content_type="application/merge-patch+json",
    )
    snap = await backend.snapshot()
    assert snap.grants == frozenset()
    assert snap.requests == (AccessRequest(DB, WEB, "ro", "pending"),)
    await backend.approve(DB, WEB, "ro")  # what `rotor acl approve` does
    snap = await backend.snapshot()
    assert snap.grants == {Grant(DB, WEB, "ro")}
    assert snap.requests == ()
    grants = yaml.safe_load(
        core.read_namespaced_config_map("rotor-acl", "rotor-system").data[DATA_KEY]
    )
    assert grants["grants"] == [{"secret": "shop/db", "principal": "web/web", "mode": "ro"}]


async def test_an_acl_from_before_the_split_is_still_read(backend, core):
    """One ConfigMap holding secrets, grants and requests (what earlier versions wrote)."""
    text = (
        "version: 4\nsecrets: [shop/db]\n"
        "grants:\n- {secret: shop/db, principal: shop/api, mode: rw}\n"
        "requests:\n- {secret: shop/db, principal: web/web, mode: ro, state: pending}\n"
    )
    core.create_namespaced_config_map(
        "rotor-system", {"metadata": {"name": "rotor-acl"}, "data": {DATA_KEY: text}}
    )
    snap = await backend.snapshot()
    assert snap.grants == {Grant(DB, API, "rw")}
    assert snap.requests == (AccessRequest(DB, WEB, "ro", "pending"),)
    assert snap.secrets == {DB}
    await backend.approve(DB, WEB, "ro")
    snap = await backend.snapshot()
    assert snap.grants == {Grant(DB, API, "rw"), Grant(DB, WEB, "ro")}
    assert snap.requests == ()


async def test_concurrent_writers_lose_nothing(core):
    a = ConfigMapAclBackend(core, "rotor-system", "rotor-acl")
    b = ConfigMapAclBackend(core, "rotor-system", "rotor-acl")
    secrets = [SecretRef("shop", f"s{i}") for i in range(12)]
    await asyncio.gather(*((a if i % 2 else b).register_secret(s) for i, s in enumerate(secrets)))
    snap = await a.snapshot()
    assert snap.secrets == set(secrets)
    assert snap.version == len(secrets)


async def test_unreachable_api_is_unavailable():
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{free_port()}"
    cfg.retries = 0
    backend = ConfigMapAclBackend(client.CoreV1Api(client.ApiClient(cfg)), "ns", "acl")
    with pytest.raises(UnavailableError):
        await backend.snapshot()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("grants: [{secret: shop/db, principal: shop/api, mode: admin}]", "x.grants[0].mode"),
        ("grants: [{secret: db, principal: shop/api, mode: ro}]", "x.grants[0].secret"),
        ("grants: [{secret: shop/db, principal: api, mode: ro}]", "x.grants[0].principal"),
        ("grants: [{secret: shop/db, principal: web/api, mode: rw}]", "x.grants[0].principal"),
        (
            "requests: [{secret: a/b, principal: a/c, mode: ro, state: approved}]",
            "x.requests[0].state",
        ),
        ("grant: []", "x.grant"),
        ("version: -1", "x.version"),
        ("grants: {a: 1}", "x.grants"),
        ("grants: [x]", "x.grants[0]"),
        ("grants: [", "x"),
    ],
)
def test_malformed_documents_name_the_entry(text, field):
    with pytest.raises(InvalidSpec) as exc:
        parse_document(text, "x")
    assert exc.value.field == field


def test_requests_already_granted_are_dropped():
    snap = parse_document(
        "grants: [{secret: a/b, principal: a/c, mode: ro}]\n"
        "requests: [{secret: a/b, principal: a/c, mode: ro}]",
        "x",
    )
    assert snap.requests == ()
    assert snap.secrets == {SecretRef("a", "b")}


def test_make_backend_defaults_to_the_configmap(core):
    from controller.acl import make_backend
    from rotor.settings.controller import ControllerSettings

    backend = make_backend(ControllerSettings(namespace="ops", acl_configmap="acl"), core)
    assert isinstance(backend, ConfigMapAclBackend)
    assert (backend.namespace, backend.configmap) == ("ops", "acl")


# A serviceAccountName that would add a second `grants:` key to acl.yaml (the emulator accepts
# such names; a real API server refuses them, but the ACL must not depend on that).
SMUGGLER = (
    "x, mode: ro, state: pending}\ngrants:\n- {secret: shop/db, principal: shop/evil, mode: ro}"
    "\nsecrets: [shop/db]\nrequests:\n- {secret: shop/db, principal: shop/y"
)


def test_a_crafted_service_account_asks_for_nothing():
    pod = {
        "kind": "Pod",
        "metadata": {"namespace": "shop", "name": "p", "annotations": {"rotor.dev/ro": "db"}},
        "spec": {"serviceAccountName": SMUGGLER},
    }
    with pytest.raises(InvalidSpec) as exc:
        requests_from_workload(pod)
    assert exc.value.field == "spec.serviceAccountName"
    assert read_pod(pod).ro == ()
    deployment = {
        "kind": "Deployment",
        "metadata": {"namespace": "shop", "name": "d"},
        "spec": {"template": {"metadata": pod["metadata"], "spec": pod["spec"]}},
    }
    obs = read_workload(deployment)
    assert obs is None or obs.wants == ()


def test_a_name_that_is_not_plain_is_never_written_into_the_document():
    snap = AclSnapshot(
        1,
        requests=(AccessRequest(DB, Principal("shop", SMUGGLER), "ro", "pending"),),
        secrets=frozenset({DB}),
    )
    with pytest.raises(InvalidSpec) as exc:
        render_document(snap)
    assert "is not a namespace/name" in exc.value.problem


def test_a_key_given_twice_is_refused_not_the_last_one_kept():
    text = (
        "version: 3\nsecrets: [shop/db]\ngrants: []\n"
        "requests:\n- {secret: shop/db, principal: shop/y, mode: ro, state: pending}\n"
        "grants:\n- {secret: shop/db, principal: shop/evil, mode: ro}\n"
    )
    with pytest.raises(InvalidSpec) as exc:
        parse_document(text, "x")
    assert exc.value.field == "x"
    assert "duplicate key 'grants' at line 6" in exc.value.problem
    assert "give each key once" in exc.value.fix
    with pytest.raises(InvalidSpec):
        parse_document("grants:\n- {secret: a/b, principal: a/c, mode: ro, mode: rw}\n", "x")
