"""The controller's ACL sync (controller.operator.Controller.sync_acl) over the canister backend:
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
        ("missing-field", "Cannot find field"),
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
