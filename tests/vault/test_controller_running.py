"""The controller running (kopf and its loops) against the strict Kubernetes emulator and a real
OpenBao: the ExternalStore Ready condition, and the fan-out held until the store holds the
committed version."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from agent.vault import TokenLogin, VaultStore
from controller.kube import path
from rotor import API
from rotor.external import RotorMetadata
from rotor.layout import view_name
from rotor.names import Principal, SecretRef
from rotor.settings.controller import ControllerSettings
from tests.controller.conftest import Harness, eventually, running_controller
from tests.controller.test_controller import _pending as pending
from tests.controller.test_controller import commit_value, create, pod_body
from tests.kubeemu import kube_emulator

__all__ = ["kube_emulator"]

SETTINGS = ControllerSettings(acl_poll=0.3, store_check_interval=1.0, manage_certs=False)
API_SA = Principal("shop", "api")
WEB = Principal("web", "web")


@pytest.fixture
async def rotor(kube_emulator):
    async for h in running_controller(kube_emulator, SETTINGS):
        yield h


async def token_secret(h: Harness, name: str, token: str) -> None:
    await create(
        h,
        "v1",
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "shop"},
            "data": {"token": base64.b64encode(token.encode()).decode()},
        },
    )


async def external_store(h: Harness, name: str, server: str, token_secret_name: str) -> None:
    await create(
        h,
        API,
        "externalstores",
        {
            "apiVersion": API,
            "kind": "ExternalStore",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "vault": {
                    "server": server,
                    "mount": "secret",
                    "auth": {"token": {"secretRef": {"name": token_secret_name}}},
                }
            },
        },
    )


async def store_ready(h: Harness, name: str) -> dict[str, Any]:
    obj = await h.get(API, "externalstores", "shop", name) or {}
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), {})


async def events_for(h: Harness, name: str) -> list[dict[str, Any]]:
    items = await h.kube.aitems(path("v1", "events", "shop"))
    return [e for e in items if e["involvedObject"]["name"] == name]


async def test_external_store_ready_with_a_good_token_auth_failed_with_a_bad_one(rotor, bao):
    await token_secret(rotor, "good-token", bao.token)
    await token_secret(rotor, "bad-token", "s.not-a-token")
    await external_store(rotor, "vault", bao.url, "good-token")
    await external_store(rotor, "wrong", bao.url, "bad-token")
    ready = await eventually(lambda: store_ready(rotor, "vault"), what="vault Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Ready")
    bad = await eventually(lambda: store_ready(rotor, "wrong"), what="wrong Ready")
    assert (bad["status"], bad["reason"]) == ("False", "AuthFailed")
    assert "s.not-a-token" not in bad["message"]
    (event,) = await eventually(lambda: events_for(rotor, "wrong"), what="an Event")
    assert (event["reason"], event["type"]) == ("AuthFailed", "Warning")
    assert event["involvedObject"]["kind"] == "ExternalStore"
    gauge = "rotor_controller_external_store_ready"
    registry = rotor.metrics.registry
    assert registry.get_sample_value(gauge, {"namespace": "shop", "name": "vault"}) == 1
    assert registry.get_sample_value(gauge, {"namespace": "shop", "name": "wrong"}) == 0

    # the token is fixed in its Secret: the periodic re-check sees it
    await rotor.kube.apatch(
        path("v1", "secrets", "shop", "bad-token"),
        {"data": {"token": base64.b64encode(bao.token.encode()).decode()}},
    )

    async def recovered() -> bool:
        return (await store_ready(rotor, "wrong")).get("status") == "True"

    await eventually(recovered, what="Ready after the token was fixed")


async def test_fanout_held_until_the_store_holds_the_version(rotor, bao):
    kv_path = f"shop/{uuid.uuid4().hex[:8]}"
    db = SecretRef("shop", "db")
    await token_secret(rotor, "good-token", bao.token)
    await external_store(rotor, "vault", bao.url, "good-token")
    spec = {
        "keys": [{"name": "password", "generator": {"type": "password"}}],
        "externalStores": [{"storeRef": {"name": "vault"}, "path": kv_path}],
    }
    await rotor.rsec("shop", "db", spec)
    await create(rotor, "v1", "pods", pod_body("shop", "api-0", "api", {"rotor.dev/rw": "db"}))
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: pending(rotor, db, API_SA, "rw"), what="the RW request")
    await rotor.backend.approve(db, API_SA, "rw")
    await eventually(lambda: pending(rotor, db, WEB, "ro"), what="the RO request")
    await rotor.backend.approve(db, WEB, "ro")
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"), what="the source")

    state = await commit_value(rotor, db, b"value-in-kubernetes-only")

    async def synced(reason: str) -> dict[str, Any] | None:
        c = await rotor.condition("shop", "db", "ExternalStoreSynced")
        return c if c.get("reason") == reason else None

    held = await eventually(lambda: synced("StoreNotSynced"), what="held")
    assert held["status"] == "False"
    assert kv_path in held["message"]
    assert await rotor.get("v1", "secrets", "web", view_name("shop", "db")) is None

    # the writer's step 3: the store gets the committed values (as the agent writes them)
    agent = VaultStore(bao.url, "secret", TokenLogin(bao.token))
    meta = RotorMetadata(state.version, state.checksum, "shop/api-0", 0.0, "shop/db")
    await agent.write_pending(kv_path, {"password": b"value-in-kubernetes-only"}, None, meta)
    view = await eventually(
        lambda: rotor.get("v1", "secrets", "web", view_name("shop", "db")),
        what="released once the store holds the version (retried with backoff)",
    )
    assert base64.b64decode(view["data"]["password"]) == b"value-in-kubernetes-only"
    assert (await eventually(lambda: synced("InSync")))["status"] == "True"
