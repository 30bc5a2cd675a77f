"""The controller's own writes do not come back as work: one rotation (the writer's two patches,
prepare then commit) is reconciled once per patch, although the controller writes two views and
the status meanwhile and the watch brings each of those writes back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from controller.kube import path
from rotor.layout import ANN_VERSION, SecretState
from rotor.names import Principal, SecretRef
from rotor.protocol import commit, prepare
from tests.controller.conftest import Harness, eventually
from tests.controller.test_controller import (
    DB,
    _pending,
    _view,
    create,
    deployment_body,
    writer_setup,
)

READERS = ("web", "shop2")
Started = list[tuple[float, SecretRef]]


async def _readers(h: Harness) -> None:
    for ns in READERS:
        body = deployment_body(ns, ns, ns, {"rotor.dev/ro": "shop/db"})
        await create(h, "apps/v1", "deployments", body)
        await eventually(lambda ns=ns: _pending(h, DB, Principal(ns, ns), "ro"), what="request")
        await h.backend.approve(DB, Principal(ns, ns), "ro")


def _count_reconciles(h: Harness) -> Started:
    """Every reconcile the controller starts, with its time (wrapping the reconciler)."""
    started: Started = []
    inner = h.ctl.reconciler.reconcile

    async def counted(ref: SecretRef) -> Any:
        started.append((time.monotonic(), ref))
        return await inner(ref)

    h.ctl.reconciler.reconcile = counted  # type: ignore[method-assign]
    return started


async def _quiet(h: Harness, started: Started, calm: float = 1.0) -> None:
    """Until no reconcile started for ``calm`` seconds and none is running."""

    def calm_now() -> bool:
        last = started[-1][0] if started else 0.0
        return time.monotonic() - last >= calm and not h.ctl.queue.inflight

    await eventually(calm_now, what="no reconcile for a while")


async def _patch_source(h: Harness, state: SecretState) -> None:
    """What the writer agent does, one patch (resourceVersion precondition)."""
    obj = await h.get("v1", "secrets", DB.namespace, DB.name)
    meta = {
        "resourceVersion": obj["metadata"]["resourceVersion"],
        "annotations": state.annotations(),
    }
    await h.kube.apatch(
        path("v1", "secrets", DB.namespace, DB.name),
        {"metadata": meta, "data": state.secret_data()},
    )


async def _rotate(h: Harness, value: bytes, started: Started | None = None) -> SecretState:
    """The writer's two patches, prepare then commit (once the prepare is reconciled when
    ``started`` counts the reconciles)."""
    obj = await h.get("v1", "secrets", DB.namespace, DB.name)
    state = SecretState.from_secret(obj.get("data"), obj["metadata"].get("annotations"))
    pending = prepare(state, {"password": value}, time.time(), "api-0")
    await _patch_source(h, pending)
    if started is not None:
        await _quiet(h, started)
    committed = commit(pending, time.time(), overlap=3600)
    await _patch_source(h, committed)
    return committed


async def _views_at(h: Harness, version: int) -> bool:
    for ns in READERS:
        view = await _view(h, ns)
        if not view or view["metadata"]["annotations"].get(ANN_VERSION) != str(version):
            return False
    return True


async def test_one_rotation_is_reconciled_once_per_writer_patch(rotor, capsys):
    await writer_setup(rotor)
    await _readers(rotor)
    first = await _rotate(rotor, b"first-value-1")
    await eventually(lambda: _views_at(rotor, first.version), what="views at version 1")
    # no periodic resync from here on: only events mark the secret
    rotor.ctl.settings = replace(rotor.ctl.settings, acl_poll=3600.0)
    started = _count_reconciles(rotor)
    await asyncio.sleep(0.5)  # the ACL poll waiting now ends, the next waits an hour
    await _quiet(rotor, started)
    started.clear()
    written = rotor.metrics.views_written._value.get()

    second = await _rotate(rotor, b"second-value-2", started)
    await eventually(lambda: _views_at(rotor, second.version), what="views at version 2")
    await _quiet(rotor, started)

    reconciles = [ref for _, ref in started if ref == DB]
    views = rotor.metrics.views_written._value.get() - written
    with capsys.disabled():
        print(f"\none rotation: {len(reconciles)} reconciles of {DB}, {views:.0f} views written")
    assert views == len(READERS)
    assert len(reconciles) == 2  # the prepare and the commit; none for the writes' echoes
