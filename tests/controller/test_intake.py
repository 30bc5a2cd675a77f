"""What the controller keeps of workloads (pure readers), and the finder's event-driven path."""

from __future__ import annotations

from typing import Any

from controller.kube import path
from controller.model import RESTARTED_AT, read_workload
from rotor.names import Principal, SecretRef
from tests.controller.conftest import eventually, with_settings
from tests.controller.test_controller import create, deployment_body, pod_body


def test_an_unannotated_workload_keeps_nothing_an_annotated_one_a_small_record() -> None:
    assert read_workload(deployment_body("shop", "plain", "api", {"team": "x"})) is None
    assert (
        read_workload(deployment_body("shop", "out", "api", {"rotor.dev/inject": "false"})) is None
    )
    obs = read_workload(deployment_body("shop", "api", "api", {"rotor.dev/rw": "db"}))
    assert obs is not None
    assert (obs.kind, obs.namespace, obs.name, obs.selector) == (
        "Deployment",
        "shop",
        "api",
        "app=api",
    )
    assert obs.wants_rotor
    assert [(w.secret, w.principal, w.mode) for w in obs.wants] == [
        (SecretRef("shop", "db"), Principal("shop", "api"), "rw")
    ]
    bad = read_workload(deployment_body("shop", "bad", "api", {"rotor.dev/rw": "Not_A_Name"}))
    assert bad is not None
    assert bad.wants == ()
    assert bad.wants_rotor  # its pods, admitted without the webhook, are still restarted
    assert bad.error is not None
    assert "rotor.dev/rw" in str(bad.error)


@with_settings(uninjected_sweep=600.0, restart_min_interval=60.0)
async def test_an_uninjected_pod_is_found_at_its_workloads_next_event(rotor):
    """Between the full sweeps (here 10 minutes) each event of an annotated workload - created,
    changed, its status moving as its pods are created and become ready - brings a listing of
    its uninjected pods about a second later."""
    sts = deployment_body("shop", "db", "db", {"rotor.dev/rw": "db"})
    sts["kind"] = "StatefulSet"
    sts["spec"]["selector"] = {
        "matchLabels": {"app": "db"},
        "matchExpressions": [{"key": "rotor.dev/other", "operator": "Exists"}],
    }
    created = await create(rotor, "apps/v1", "statefulsets", sts)
    # the pod names its StatefulSet by UID, as the StatefulSet controller writes it (the
    # controller checks the owner chain before any restart)
    sts_owner = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "db",
        "uid": created["metadata"]["uid"],
    }
    body = pod_body(
        "shop",
        "db-0",
        "db",
        {"rotor.dev/rw": "db"},
        owner=sts_owner,
        injected=False,
        labels={"app": "db", "rotor.dev/other": "x"},
    )
    await create(rotor, "v1", "pods", body)
    # the StatefulSet's status moves as its pod appears: an event of the workload
    await rotor.kube.apatch(
        path("apps/v1", "statefulsets", "shop", "db"), {"status": {"replicas": 1}}
    )

    async def restarted() -> Any:
        obj = await rotor.kube.aget(path("apps/v1", "statefulsets", "shop", "db"))
        return obj["spec"]["template"]["metadata"]["annotations"].get(RESTARTED_AT)

    await eventually(restarted, timeout=10, what="restartedAt after the StatefulSet's event")


def test_a_pod_that_loses_the_injected_label_leaves_the_index() -> None:
    """A watch with a label selector reports a pod that stops matching with its new state (as
    DELETED); the pod is no writer candidate from then on, whatever the event's type."""
    from controller.intake import Intake

    class Ctl:  # what Intake reads of the controller
        def __init__(self) -> None:
            from controller.index import Index
            from rotor.settings.controller import ControllerSettings

            self.index = Index()
            self.settings = ControllerSettings()
            self.marked: set[SecretRef] = set()
            self.wants: dict[Any, Any] = {}

        def set_wants(self, key: Any, wants: Any) -> None:
            self.wants[key] = wants

        def mark(self, refs: Any) -> None:
            self.marked |= set(refs)

    ctl = Ctl()
    intake = Intake(ctl)  # type: ignore[arg-type]
    pod = pod_body("shop", "api-0", "api", {"rotor.dev/rw": "db"})
    intake.on_pod("ADDED", pod)
    assert set(ctl.index.pods) == {("shop", "api-0")}
    assert ctl.wants[("Pod", "shop", "api-0")]
    del pod["metadata"]["labels"]["rotor.dev/injected"]
    intake.on_pod("MODIFIED", pod)
    assert ctl.index.pods == {}
    assert ctl.wants[("Pod", "shop", "api-0")] == ()
    assert SecretRef("shop", "db") in ctl.marked
