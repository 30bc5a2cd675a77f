"""The controller's index never goes back to an older version of a source Secret.

Found by the soak (bench/soak.py): the controller patches the source Secret (it passes a
rotate-now on) and applies the answer to its index; when that answer reached it after the watch
had delivered the writer's prepare and commit (newer resourceVersions), the index went back to
the previous version, the views were "in sync" with it, and the rotation stayed unpublished until
the next change of the secret (20 s in a run of bench/propagation.py, 5 s in the soak)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kubernetes import client
from prometheus_client import CollectorRegistry

from controller import decide
from controller.kube import Kube
from controller.metrics import Metrics
from controller.model import ViewObs
from controller.operator import Controller
from rotor.layout import LABEL_MANAGED_BY, LABEL_SECRET, MANAGED_BY, SecretState
from rotor.names import SecretRef
from rotor.settings.controller import ControllerSettings

DB = SecretRef("shop", "db")


def source(version: int, rv: int, uid: str = "u1") -> dict[str, Any]:
    state = SecretState(version=version, current={"password": b"value-%d" % version})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": DB.name,
            "namespace": DB.namespace,
            "uid": uid,
            "resourceVersion": str(rv),
            "labels": {LABEL_SECRET: DB.name, LABEL_MANAGED_BY: MANAGED_BY},
            "annotations": state.annotations(),
        },
        "data": state.secret_data(),
    }


def controller() -> Controller:
    kube = Kube(client.ApiClient())  # never called here
    return Controller(ControllerSettings(), kube, None, Metrics(CollectorRegistry()))  # type: ignore[arg-type]


def test_a_late_answer_to_the_controllers_own_patch_does_not_roll_the_source_back() -> None:
    ctl = controller()
    ctl.on_secret("MODIFIED", source(12, 256))  # the watch: the controller's own patch
    ctl.on_secret("MODIFIED", source(13, 259))  # the watch: the writer's commit of version 13
    ctl.on_secret("MODIFIED", source(12, 256))  # the answer to the controller's patch, late
    src = ctl.index.sources[DB]
    assert src.state is not None
    assert src.state.version == 13
    # and so the fan-out plan publishes version 13 to a view still at 12
    old = SecretState(version=12, current={"password": b"value-12"})
    view = ViewObs("web", "rotor.shop.db", "shop.db", 12, old.checksum)
    plan = decide.plan_fanout(src, frozenset({"web"}), {"web": view})
    assert plan.upsert == ("web",)


def test_a_recreated_source_is_taken_whatever_its_resource_version() -> None:
    ctl = controller()
    ctl.on_secret("MODIFIED", source(5, 900, uid="old"))
    ctl.on_secret("ADDED", source(1, 10, uid="new"))  # deleted and created again
    src = ctl.index.sources[DB]
    assert src.state is not None
    assert src.state.version == 1


def rotating_secret(rv: int, length: int = 32, status: dict[str, Any] | None = None) -> Any:
    spec = {"keys": [{"name": "password", "generator": {"type": "password", "length": length}}]}
    return {
        "apiVersion": "rotor.dev/v1alpha1",
        "kind": "RotatingSecret",
        "metadata": {
            "name": DB.name,
            "namespace": DB.namespace,
            "uid": "r1",
            "resourceVersion": str(rv),
            "generation": length,
            "finalizers": ["rotor.dev/cleanup"],
        },
        "spec": spec,
        "status": status or {},
    }


def test_the_echo_of_the_controllers_own_write_marks_nothing() -> None:
    ctl = controller()
    ctl.objects.own_secret(source(12, 256))  # the answer to the controller's write
    assert ctl.index.sources[DB].state.version == 12  # type: ignore[union-attr]
    assert ctl.queue.dirty == set()
    ctl.on_secret("MODIFIED", source(12, 256))  # its watch event: the same resourceVersion
    assert ctl.queue.dirty == set()
    ctl.on_secret("MODIFIED", source(13, 259))  # the writer's commit is work
    assert ctl.queue.dirty == {DB}


def test_a_rotating_secrets_echo_marks_nothing_but_a_change_at_that_version_does() -> None:
    ctl = controller()
    ctl.on_rotating_secret("ADDED", rotating_secret(10))
    ctl.queue.dirty.clear()
    ctl.objects.own_rotating_secret(rotating_secret(11))  # e.g. the finalizer's patch
    ctl.on_rotating_secret("MODIFIED", rotating_secret(11))  # its echo
    assert ctl.queue.dirty == set()
    # the status writer records only the status and resourceVersion its write got: when a
    # spec change came in between, the watch event at that version differs and is work
    ctl.on_rotating_secret("MODIFIED", rotating_secret(12))
    ctl.queue.dirty.clear()
    stale = ctl.index.rsecs[DB]
    ctl.index.rsecs[DB] = replace(stale, resource_version="14")  # as statuswriter.write does
    ctl.on_rotating_secret("MODIFIED", rotating_secret(14, length=40))
    assert ctl.queue.dirty == {DB}
    assert ctl.index.rsecs[DB].spec.keys[0].generator.length == 40  # type: ignore[union-attr]


def test_an_echo_that_comes_before_the_answer_is_taken_back() -> None:
    """Under load the watch can deliver the controller's write before the API's answer to it
    reaches the reconcile that wrote it: the mark it made is taken back when the answer shows
    the same resourceVersion, unless something else marked the secret meanwhile."""
    ctl = controller()
    ctl.on_secret("MODIFIED", source(12, 256))  # the writer's commit: work
    ctl.queue.dirty.clear()  # picked up: the reconcile runs and writes (rv 257)
    ctl.on_secret("MODIFIED", source(12, 257))  # its echo, first
    assert ctl.queue.dirty == {DB}
    ctl.objects.own_secret(source(12, 257))  # then the answer
    assert ctl.queue.dirty == set()

    ctl.on_secret("MODIFIED", source(12, 258))  # another echo first ...
    ctl.mark([DB])  # ... and something else (an ACL poll) marks the secret too
    ctl.objects.own_secret(source(12, 258))
    assert ctl.queue.dirty == {DB}


def test_a_change_of_the_status_alone_is_not_work() -> None:
    """Only the controller writes a RotatingSecret's status: its echo marks nothing even before
    the status writer recorded the resourceVersion its write got."""
    ctl = controller()
    ctl.on_rotating_secret("ADDED", rotating_secret(10))
    ctl.queue.dirty.clear()
    ctl.on_rotating_secret("MODIFIED", rotating_secret(11, status={"phase": "Pending"}))
    assert ctl.queue.dirty == set()
    assert ctl.index.rsecs[DB].status.phase == "Pending"
    ctl.on_rotating_secret("MODIFIED", rotating_secret(12, length=40, status={"phase": "Pending"}))
    assert ctl.queue.dirty == {DB}
