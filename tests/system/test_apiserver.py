"""The emulator's API-server duties beyond storage: garbage collection through ownerReferences,
label and field selectors on list and watch, and a RotatingSecret's deletion in the whole
system (its source Secret and views go)."""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from kubeemu.emulator import EmulatorThread
from rotorctl.harness import System, wait_for
from tests.system.test_flows import NAME, NS, RO_NS, approve, holds, pair, until

NSX = "gc"


@pytest.fixture
def emu() -> Iterator[EmulatorThread]:
    with EmulatorThread(secure=True) as e:
        yield e


def call(emu: EmulatorThread, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
    req = urllib.request.Request(
        emu.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {emu.admin_token}",
            "Content-Type": kind,
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=emu.ssl_context()) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def create(emu: EmulatorThread, api: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    status, out = call(emu, "POST", f"{base}/namespaces/{NSX}/{plural}", obj)
    assert status == 201, out
    return dict(out)


def owner(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": m["name"],
        "uid": m["uid"],
    }


def cm(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NSX, "labels": labels or {}, **meta},
    }


def names(emu: EmulatorThread, plural: str, query: str = "") -> set[str]:
    status, out = call(emu, "GET", f"/api/v1/namespaces/{NSX}/{plural}{query}")
    assert status == 200, out
    return {i["metadata"]["name"] for i in out["items"]}


def test_deleting_an_owner_deletes_its_dependents_in_cascade(emu: EmulatorThread) -> None:
    dep = create(emu, "apps/v1", "deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NSX}, "spec": {},
    })  # fmt: skip
    rs = create(emu, "apps/v1", "replicasets", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": NSX, "ownerReferences": [owner(dep)]},
        "spec": {},
    })  # fmt: skip
    create(emu, "v1", "configmaps", cm("of-rs", ownerReferences=[owner(rs)]))
    other = create(emu, "v1", "configmaps", cm("other-owner"))
    create(emu, "v1", "configmaps", cm("two-owners", ownerReferences=[owner(rs), owner(other)]))
    create(emu, "v1", "configmaps", cm("held", ownerReferences=[owner(rs)], finalizers=["x/y"]))
    create(emu, "v1", "configmaps", cm("unrelated"))

    assert call(emu, "DELETE", f"/apis/apps/v1/namespaces/{NSX}/deployments/web")[0] == 200
    assert call(emu, "GET", f"/apis/apps/v1/namespaces/{NSX}/replicasets/web-1")[0] == 404
    assert names(emu, "configmaps") == {"other-owner", "two-owners", "held", "unrelated"}
    _, two = call(emu, "GET", f"/api/v1/namespaces/{NSX}/configmaps/two-owners")
    assert [r["name"] for r in two["metadata"]["ownerReferences"]] == ["other-owner"]
    _, held = call(emu, "GET", f"/api/v1/namespaces/{NSX}/configmaps/held")
    assert held["metadata"].get("deletionTimestamp"), "a dependent with finalizers is marked"
    # its finalizer removed: gone
    call(
        emu, "PATCH", f"/api/v1/namespaces/{NSX}/configmaps/held", {"metadata": {"finalizers": []}}
    )
    assert "held" not in names(emu, "configmaps")


def test_label_and_field_selectors_filter_list(emu: EmulatorThread) -> None:
    create(emu, "v1", "configmaps", cm("a", {"app": "web", "tier": "front"}))
    create(emu, "v1", "configmaps", cm("b", {"app": "web", "tier": "back"}))
    create(emu, "v1", "configmaps", cm("c", {"app": "db"}))
    cases = {
        "labelSelector=app%3Dweb": {"a", "b"},
        "labelSelector=app%3D%3Dweb,tier!%3Dback": {"a"},
        "labelSelector=tier": {"a", "b"},
        "labelSelector=!tier": {"c"},
        "labelSelector=app%20in%20(db,cache)": {"c"},
        "labelSelector=tier%20notin%20(front)": {"b", "c"},
        "fieldSelector=metadata.name%3Db": {"b"},
        "fieldSelector=metadata.name!%3Db": {"a", "c"},
        "labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dc": set(),
    }
    for query, want in cases.items():
        assert names(emu, "configmaps", "?" + query) == want, query
    status, body = call(emu, "GET", f"/api/v1/namespaces/{NSX}/configmaps?labelSelector=a%20in%20b")
    assert status == 400
    assert "unable to parse requirement" in body["message"]


def test_a_watch_with_a_label_selector_sees_objects_enter_and_leave(emu: EmulatorThread) -> None:
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    req = urllib.request.Request(
        f"{emu.url}/api/v1/namespaces/{NSX}/configmaps?watch=true&labelSelector=app%3Dweb",
        headers={"Authorization": f"Bearer {emu.admin_token}"},
    )
    stop = threading.Event()

    def watch() -> None:
        try:
            with urllib.request.urlopen(req, timeout=20, context=emu.ssl_context()) as r:
                for line in r:
                    if stop.is_set():
                        return
                    e = json.loads(line)
                    events.put((e["type"], e["object"]["metadata"]["name"]))
        except (OSError, ValueError):  # the emulator stopped under the stream
            return

    create(emu, "v1", "configmaps", cm("z", {"app": "web"}))
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    assert events.get(timeout=10) == ("ADDED", "z")  # the watch is established
    create(emu, "v1", "configmaps", cm("x", {"app": "db"}))
    create(emu, "v1", "configmaps", cm("y", {"app": "web"}))
    path = f"/api/v1/namespaces/{NSX}/configmaps"
    call(emu, "PATCH", f"{path}/x", {"metadata": {"labels": {"app": "web"}}})
    call(emu, "PATCH", f"{path}/y", {"metadata": {"labels": {"app": "db"}}})
    got = [events.get(timeout=10) for _ in range(3)]
    stop.set()
    create(emu, "v1", "configmaps", cm("last", {"app": "web"}))  # wakes the reader: it ends
    t.join(10)
    assert not t.is_alive()
    assert got == [("ADDED", "y"), ("ADDED", "x"), ("DELETED", "y")]


def test_deleting_a_rotating_secret_removes_its_source_and_views(system: System) -> None:
    """The design's finalizer: the controller deletes the source Secret and every view, then
    releases the RotatingSecret; the reader's files go too."""
    api, web = pair(system)
    approve(system)
    w, r = system.add_pod(api), system.add_pod(web)
    until(lambda: holds(r, system.current(NS, NAME)), "the reader's first value")
    view = f"rotor.{NS}.{NAME}"
    assert system.api.get("v1", "secrets", RO_NS, view)
    system.api.delete("rotor.dev/v1alpha1", "rotatingsecrets", NS, NAME)
    until(lambda: system.source(NS, NAME) is None, "the source Secret deleted")
    until(lambda: system.api.get("v1", "secrets", RO_NS, view) is None, "the view deleted")
    wait_for(
        lambda: system.api.get("rotor.dev/v1alpha1", "rotatingsecrets", NS, NAME) is None,
        "the RotatingSecret gone (finalizer released)",
    )
    until(lambda: not r.files(NAME), "the reader's files gone")
    assert w.agent is not None
