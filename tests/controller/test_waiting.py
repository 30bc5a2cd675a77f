"""Why a pod waits, said where a user looks: an Event on the workload whose access request was
recorded, naming the request and the exact command that approves it."""

from __future__ import annotations

from typing import Any

from controller.kube import path
from tests.controller.conftest import Harness, eventually
from tests.controller.test_controller import DB, WEB, _pending, create, deployment_body


async def _waiting_events(h: Harness, ns: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in await h.kube.aitems(path("v1", "events", ns))
        if e.get("reason") == "AwaitingApproval"
        and e["involvedObject"]["kind"] == "Deployment"
        and e["involvedObject"]["name"] == name
    ]


async def test_a_workload_waiting_for_a_grant_gets_an_event_with_the_approve_command(rotor):
    await rotor.rsec("shop", "db")
    dep = await create(
        rotor,
        "apps/v1",
        "deployments",
        deployment_body("web", "web", "web", {"rotor.dev/ro": "shop/db"}),
    )
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"), what="the RO request recorded")
    (event,) = await eventually(
        lambda: _waiting_events(rotor, "web", "web"), what="an Event on the Deployment"
    )
    assert event["involvedObject"]["uid"] == dep["metadata"]["uid"]  # kubectl describe finds it
    assert event["involvedObject"]["apiVersion"] == "apps/v1"
    assert "rotor acl approve shop/db web/web ro" in event["message"]
    assert "the app does not start until it is granted" in event["message"]
