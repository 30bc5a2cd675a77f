"""The source Secret: created owned and labelled, or an existing one adopted only when nothing
else controls it, keeping its other ownerReferences, with a resourceVersion precondition.

A Controller (no kopf) reconciles against the strict emulator; the API's answers are the real
emulator's except where a test makes one call fail."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controller.kube import Kube, Obj, path
from controller.metrics import Metrics
from controller.operator import Controller
from rotor import API
from rotor.errors import UnavailableError
from rotor.layout import LABEL_MANAGED_BY, LABEL_SECRET, MANAGED_BY
from rotor.names import SecretRef
from rotor.settings.controller import ControllerSettings
from tests.kubeemu import EmulatorThread

DB = SecretRef("shop", "db")
SECRETS = path("v1", "secrets", DB.namespace)
SOURCE = path("v1", "secrets", DB.namespace, DB.name)
SPEC = {"keys": [{"name": "password", "generator": {"type": "password"}}]}
OTHER_OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "bundle", "uid": "cm-uid"}


class FlakyKube(Kube):
    """The emulator's API, except a create of a Secret that answers 503 (``fail_create``) and
    a hook run after the next read of the source Secret (``after_read``)."""

    fail_create = False
    after_read: Any = None

    async def acreate(self, url: str, body: Obj) -> Obj:
        if self.fail_create and url == SECRETS:
            raise UnavailableError(f"{url}: HTTP 503 Service Unavailable")
        return await super().acreate(url, body)

    async def aget(self, url: str) -> Obj | None:
        got = await super().aget(url)
        hook, self.after_read = (self.after_read, None) if url == SOURCE else (None, None)
        if hook is not None:
            await hook()
        return got


@pytest.fixture
async def ctl(kube_emulator: EmulatorThread) -> Any:
    kube = FlakyKube(kube_emulator.api_client())
    c = Controller(ControllerSettings(), kube, None, Metrics(CollectorRegistry()))  # type: ignore[arg-type]
    yield c
    await c.close()
    kube.close()


async def rotating_secret(ctl: Controller) -> Obj:
    body = {
        "apiVersion": API,
        "kind": "RotatingSecret",
        "metadata": {"name": DB.name, "namespace": DB.namespace},
        "spec": SPEC,
    }
    obj = await ctl.kube.acreate(path(API, "rotatingsecrets", DB.namespace), body)
    ctl.on_rotating_secret("ADDED", obj)
    return obj


async def existing_secret(ctl: Controller, owners: list[Obj]) -> Obj:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": DB.name, "namespace": DB.namespace, "ownerReferences": owners},
    }
    return await ctl.kube.acreate(SECRETS, body)


async def condition(ctl: Controller, ctype: str) -> dict[str, Any]:
    obj = await ctl.kube.aget(path(API, "rotatingsecrets", DB.namespace, DB.name)) or {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return {}


def ours(rsec: Obj) -> dict[str, Any]:
    m = rsec["metadata"]
    return {
        "apiVersion": API,
        "kind": "RotatingSecret",
        "name": m["name"],
        "uid": m["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def test_an_unavailable_api_server_is_not_taken_for_an_existing_secret(ctl) -> None:
    await rotating_secret(ctl)
    ctl.kube.fail_create = True
    with pytest.raises(UnavailableError):  # retried later, reported as what it is
        await ctl.reconcile(DB)
    assert await ctl.kube.aget(SOURCE) is None


async def test_an_existing_secret_is_adopted_keeping_its_other_owners(ctl) -> None:
    rsec = await rotating_secret(ctl)
    await existing_secret(ctl, [OTHER_OWNER])
    await ctl.reconcile(DB)
    got = await ctl.kube.aget(SOURCE) or {}
    assert got["metadata"]["ownerReferences"] == [OTHER_OWNER, ours(rsec)]
    labels = got["metadata"]["labels"]
    assert labels[LABEL_SECRET] == DB.name
    assert labels[LABEL_MANAGED_BY] == MANAGED_BY
    assert ctl.index.sources[DB].owned


async def test_a_secret_another_controller_owns_is_not_adopted_but_reported(ctl) -> None:
    await rotating_secret(ctl)
    theirs = {**OTHER_OWNER, "kind": "SealedSecret", "name": "db", "controller": True}
    before = await existing_secret(ctl, [theirs])
    await ctl.reconcile(DB)
    after = await ctl.kube.aget(SOURCE) or {}
    assert after["metadata"]["ownerReferences"] == [theirs]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    ready = await condition(ctl, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SourceNotOwned")
    assert "SealedSecret db" in ready["message"]
    assert "delete it" in ready["message"]
    events = await ctl.kube.aitems(path("v1", "events", DB.namespace))
    assert [e["reason"] for e in events] == ["SourceNotOwned"]
    assert DB not in ctl.index.sources


async def test_an_owner_added_while_adopting_is_kept(ctl) -> None:
    rsec = await rotating_secret(ctl)
    await existing_secret(ctl, [])
    late = {**OTHER_OWNER, "name": "late", "uid": "late-uid"}

    async def concurrent_change() -> None:  # between the controller's read and its patch
        await ctl.kube.apatch(SOURCE, {"metadata": {"ownerReferences": [late]}})

    ctl.kube.after_read = concurrent_change
    await ctl.reconcile(DB)
    got = await ctl.kube.aget(SOURCE) or {}
    assert got["metadata"]["ownerReferences"] == [late, ours(rsec)]
