"""The controller's ACL sync (controller.aclsync.AclSync.sync_acl) over the canister backend:
a bad answer from the canister is reported and the last good ACL stays in force."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from controller.kube import Kube
from controller.metrics import Metrics
from controller.operator import Controller
from rotor.acl import Grant
from rotor.names import Principal, SecretRef
from rotor.settings.controller import ControllerSettings
from tests.canister.conftest import backend_for
from tests.canister.ic_server import IcServer

DB = SecretRef("shop", "db")
WEB = Principal("shop", "web")


def triple_args_raw(secret: str, principal: str, mode: str) -> bytes:
    from ic.candid import Types

    from controller.acl.canister.candid import MODE, candid_args

    return candid_args((Types.Text, secret), (Types.Text, principal), (MODE, {mode: None}))


@pytest.fixture
def kube() -> Iterator[Kube]:
    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # never called: the index is empty, only the ACL is synced
    k = Kube(client.ApiClient(cfg))
    yield k
    k.close()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("wrong-type", "not the expected Candid"),
        ("missing-field", "the field grants is missing"),
        ("stale", "3600s old"),
        ("mismatch", "certified hash does not match"),
        ("bad-signature", "BLS signature"),
        ("hang", "no answer within"),
        ("reject", "rejected"),
    ],
)
async def test_bad_answer_keeps_the_last_good_acl(
    ic_server: IcServer,
    controller_identity: Any,
    admin_identity: Any,
    kube: Kube,
    fault: str,
    message: str,
) -> None:
    backend = backend_for(ic_server, controller_identity, timeout=0.5, attempts=1)
    await backend.register_secret(DB)
    await backend_for(ic_server, admin_identity).approve(DB, WEB, "ro")
    now = [1000.0]
    ctl = Controller(
        ControllerSettings(acl_backend="canister"),
        kube,
        backend,
        Metrics(CollectorRegistry()),
        clock=lambda: now[0],
    )
    await ctl.sync_acl()
    good = ctl.acl
    assert good is not None
    assert Grant(DB, WEB, "ro") in good.grants

    ic_server.fault = fault
    now[0] += 60
    await ctl.sync_acl()
    assert ctl.acl is good  # the last good ACL stays
    assert ctl.acl_failing
    assert message in ctl.acl_error
    staleness = ctl.staleness()
    assert staleness.stale
    assert staleness.age == 60

    ic_server.fault = None
    await ctl.sync_acl()
    assert not ctl.acl_failing
    assert ctl.acl == good


async def test_an_unusable_entry_is_left_out_and_reported(
    model_server: IcServer, controller_identity: Any, admin_identity: Any
) -> None:
    """A grant an older canister accepted with a principal that is not a Kubernetes name is
    left out; the rest of the ACL applies (it used to fail every decode and leave the controller
    on a stale ACL for good), and the entry is named in a metric, an Event and the condition."""
    from controller.kube import path
    from rotor import API
    from rotor import status as st
    from tests.kubeemu import EmulatorThread

    backend = backend_for(model_server, controller_identity, timeout=2.0, attempts=1)
    await backend.register_secret(DB)
    await backend_for(model_server, admin_identity).approve(DB, WEB, "ro")
    model_server.model.grants["shop/db shop/Web..x ro"] = {  # stored under the old, looser rule
        "secret": "shop/db",
        "principal": "shop/Web..x",
        "mode": {"ro": None},
    }
    with EmulatorThread() as emu:
        kube = Kube(emu.api_client())
        try:
            metrics = Metrics(CollectorRegistry())
            ctl = Controller(ControllerSettings(acl_backend="canister"), kube, backend, metrics)
            body = {
                "apiVersion": API,
                "kind": "RotatingSecret",
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
            }
            ctl.on_rotating_secret(
                "ADDED", await kube.acreate(path(API, "rotatingsecrets", "shop"), body)
            )
            await ctl.sync_acl()
            assert not ctl.acl_failing, ctl.acl_error
            assert ctl.acl is not None
            assert ctl.acl.grants == frozenset({Grant(DB, WEB, "ro")})  # the rest applies
            (entry,) = ctl.acl.skipped
            assert "'shop/Web..x'" in entry.problem
            labels = {"entry": entry.where, "secret": "shop/db"}
            value = metrics.registry.get_sample_value(
                "rotor_controller_acl_skipped_entries", labels
            )
            assert value == 1
            events = (await kube.aget(path("v1", "events", "shop"))) or {}
            reasons = [(e["reason"], e["message"]) for e in events.get("items", [])]
            assert (st.R_ACL_ENTRY_SKIPPED, str(entry)) in reasons

            await ctl.reconcile(DB)
            obj = await kube.aget(path(API, "rotatingsecrets", "shop", "db"))
            access = next(c for c in obj["status"]["conditions"] if c["type"] == st.ACCESS_GRANTED)
            assert access["reason"] == st.R_ACL_ENTRY_SKIPPED
            assert "shop/Web..x" in access["message"]

            await ctl.sync_acl()  # reported once, not on every poll
            events = (await kube.aget(path("v1", "events", "shop"))) or {}
            skipped_events = [
                e for e in events.get("items", []) if e["reason"] == st.R_ACL_ENTRY_SKIPPED
            ]
            assert len(skipped_events) == 1

            # an admin revokes it (names are not checked on revoke: whatever is stored goes)
            admin = backend_for(model_server, admin_identity)
            await admin._update("revoke", triple_args_raw("shop/db", "shop/Web..x", "ro"))
            assert model_server.model.grants.keys() == {"shop/db shop/web ro"}
            await ctl.sync_acl()
            assert (
                metrics.registry.get_sample_value("rotor_controller_acl_skipped_entries", labels)
                is None
            )
        finally:
            kube.close()
