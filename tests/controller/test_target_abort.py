"""The running controller and a PostgreSQL target: the writer's Role may get the admin Secret,
and an abort the writer records on the source Secret becomes ``Rotated=False`` with its reason
and one Warning Event (the API is the emulator; no database is needed here)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from controller.decide import rbac_name
from controller.kube import path
from rotor.layout import ANN_POSTGRES_ADMIN_FOR as ADMIN_FOR
from rotor.layout import SecretState
from rotor.names import Principal
from rotor.protocol import abort, commit, prepare
from tests.controller.conftest import Harness, eventually
from tests.controller.test_controller import DB, RBAC, create, deployment_body, pod_body

SPEC = {
    "keys": [{"name": "password", "generator": {"type": "password"}}],
    "target": {
        "postgres": {"host": "pg.shop.svc", "role": "app", "admin": {"secretRef": {"name": "pg"}}}
    },
}


async def _rotated(h: Harness, reason: str) -> dict[str, Any] | None:
    c = await h.condition("shop", "db", "Rotated")
    return c if c.get("reason") == reason else None


def admin_secret(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop", "annotations": annotations or {}},
        "data": {"password": "YWRtaW4tcGFzcw=="},
    }


async def test_admin_secret_grant_and_abort_reported_as_condition_and_event(rotor):
    await create(rotor, "v1", "secrets", admin_secret("pg", {ADMIN_FOR: "other, db"}))
    await rotor.rsec("shop", "db", SPEC)
    await create(
        rotor, "apps/v1", "deployments", deployment_body("shop", "pg", "pg", {"rotor.dev/rw": "db"})
    )
    await create(rotor, "v1", "pods", pod_body("shop", "pg-0", "pg", {"rotor.dev/rw": "db"}))
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"), what="the source Secret")

    async def pending() -> bool:
        snap = await rotor.backend.snapshot()
        return any(r.secret == DB and r.state == "pending" for r in snap.requests)

    await eventually(pending, what="the RW request")
    await rotor.backend.approve(DB, Principal("shop", "pg"), "rw")

    async def role() -> Any:
        r = await rotor.get(RBAC, "roles", "shop", rbac_name("rw", DB))
        return r if r and any(x["resourceNames"] == ["pg"] for x in r["rules"]) else None

    r = await eventually(role, what="the RW Role with get on the admin Secret")
    assert {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["pg"],
            "verbs": ["get"]} in r["rules"]  # fmt: skip

    # the writer committed version 1, then a rotation aborted: the database is unreachable
    now = time.time()
    v1 = commit(prepare(SecretState(), {"password": b"v1-value-abcdef"}, now, "pg-0"), now, 3600)
    failed = abort(
        prepare(v1, {"password": b"v2-value-abcdef"}, now, "pg-0"),
        "DatabaseUnreachable: cannot connect to PostgreSQL pg.shop.svc:5432/postgres",
        now,
    )
    await rotor.kube.apatch(
        path("v1", "secrets", "shop", "db"),
        {"metadata": {"annotations": failed.annotations()}, "data": failed.secret_data()},
    )
    cond = await eventually(lambda: _rotated(rotor, "DatabaseUnreachable"), what="Rotated=False")
    assert cond["status"] == "False"
    assert "cannot connect to PostgreSQL pg.shop.svc:5432" in cond["message"]
    assert "consumers keep version 1" in cond["message"]

    async def events() -> Any:
        items = await rotor.kube.aitems(path("v1", "events", "shop"))
        return [e for e in items if e["reason"] == "DatabaseUnreachable"]

    (ev,) = await eventually(events, what="a DatabaseUnreachable Event")
    assert ev["type"] == "Warning"
    assert ev["involvedObject"]["name"] == "db"
    assert "v1-value" not in ev["message"]
    assert "v2-value" not in ev["message"]


# Every cause the writer records (agent/engine.py; tests/agent/test_engine.py proves the counter
# and the record for each): its reason becomes Rotated=False and one Warning Event.
ABORTS = [
    "ApplyHookFailed: the apply hook did not answer 2xx",
    "ExternalStoreFailed: writing secret/data/shop/db: the store did not answer (503)",
    "DatabaseUnreachable: cannot connect to PostgreSQL pg.shop.svc:5432/postgres",
    "RecoveryAborted: the pending values were not confirmed (apply hook or external store)",
]


async def test_each_recorded_abort_is_a_rotated_condition_and_one_warning_event(rotor):
    spec = {"keys": [{"name": "password", "generator": {"type": "password"}}]}
    await rotor.rsec("shop", "db", spec)
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"), what="the source Secret")
    now = time.time()
    state = commit(prepare(SecretState(), {"password": b"v1-value-abcdef"}, now, "w"), now, 60)
    for why in ABORTS:
        reason, _, message = why.partition(": ")
        state = abort(prepare(state, {"password": b"v2-value-abcdef"}, now, "w"), why, now)
        await rotor.kube.apatch(
            path("v1", "secrets", "shop", "db"),
            {"metadata": {"annotations": state.annotations()}, "data": state.secret_data()},
        )
        cond = await eventually(lambda r=reason: _rotated(rotor, r), what=f"Rotated={reason}")
        assert cond["status"] == "False"
        assert message in cond["message"]

        async def events(r: str = reason) -> Any:
            items = await rotor.kube.aitems(path("v1", "events", "shop"))
            return [e for e in items if e["reason"] == r]

        (ev,) = await eventually(events, what=f"a {reason} Event")
        assert ev["type"] == "Warning"
        assert ev["involvedObject"]["name"] == "db"
        assert message in ev["message"]
        assert "v1-value" not in ev["message"]
        assert "v2-value" not in ev["message"]
    # the next commit clears the recorded abort: Rotated=True again
    state = commit(prepare(state, {"password": b"v3-value-abcdef"}, now, "w"), now, 60)
    await rotor.kube.apatch(
        path("v1", "secrets", "shop", "db"),
        {"metadata": {"annotations": state.annotations()}, "data": state.secret_data()},
    )
    cond = await eventually(lambda: _rotated(rotor, "Committed"), what="Rotated=True")
    assert cond["status"] == "True"


@pytest.mark.slow  # a running controller per case: 5-9 s each
@pytest.mark.parametrize("name", ["other", "plain", "for-another"])
async def test_a_spec_edit_alone_never_grants_a_secret(rotor, name):
    """Issue 24: admin.secretRef could name any Secret of the namespace (another RotatingSecret's
    source) and the writer's Role got ``get`` on it. The Secret must opt in; a Secret Rotor
    manages never does."""
    await rotor.rsec("shop", "other", {"keys": SPEC["keys"]})
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "other"), what="other's source")
    await create(rotor, "v1", "secrets", admin_secret("plain"))
    await create(rotor, "v1", "secrets", admin_secret("for-another", {ADMIN_FOR: "another"}))
    await create(
        rotor, "apps/v1", "deployments", deployment_body("shop", "pg", "pg", {"rotor.dev/rw": "db"})
    )
    await create(rotor, "v1", "pods", pod_body("shop", "pg-0", "pg", {"rotor.dev/rw": "db"}))
    pg = {**SPEC["target"]["postgres"], "admin": {"secretRef": {"name": name}}}
    await rotor.rsec("shop", "db", {**SPEC, "target": {"postgres": pg}})
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"), what="the source")
    await eventually(lambda: _pending(rotor), what="the RW request")
    await rotor.backend.approve(DB, Principal("shop", "pg"), "rw")

    async def role() -> Any:
        r = await rotor.get(RBAC, "roles", "shop", rbac_name("rw", DB))
        return r if r and any(x["resourceNames"] == ["db"] for x in r["rules"]) else None

    r = await eventually(role, what="the RW Role")
    granted = {n for x in r["rules"] for n in x.get("resourceNames", [])}
    assert granted == {"db"}


async def _pending(h: Harness) -> bool:
    snap = await h.backend.snapshot()
    return any(r.secret == DB and r.state == "pending" for r in snap.requests)
