"""The controller running against the strict emulator: lifecycle, ACL, writer, fan-out."""

from __future__ import annotations

import base64
import time
from typing import Any

from kmock import action as k8s_action

from controller.decide import rbac_name
from controller.kube import Kube, path
from controller.model import FINALIZER, RESTARTED_AT
from rotor import API
from rotor.errors import UnavailableError
from rotor.layout import ANN_ROTATE_REQUESTED, ANN_VERSION, LABEL_SECRET, SecretState, view_name
from rotor.names import Principal, SecretRef
from rotor.protocol import commit, prepare
from tests.controller.conftest import Harness, eventually, running_controller, with_settings

DB = SecretRef("shop", "db")
API_SA = Principal("shop", "api")
WEB = Principal("web", "web")
RBAC = "rbac.authorization.k8s.io/v1"


def pod_body(
    ns: str,
    name: str,
    sa: str,
    annotations: dict[str, str],
    *,
    ready: bool = True,
    created: str = "2026-01-01T00:00:00Z",
    owner: dict[str, Any] | None = None,
    injected: bool = True,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod as the API server stores it; ``injected``: as the webhook patched it (the status
    annotation and the ``rotor.dev/injected`` label)."""
    ann = dict(annotations)
    lab = dict(labels or {})
    if injected:
        ann["rotor.dev/status"] = "injected"
        lab["rotor.dev/injected"] = "true"
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "labels": lab,
        "annotations": ann,
        "creationTimestamp": created,
    }
    if owner:
        meta["ownerReferences"] = [{**owner, "controller": True}]
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def deployment_body(ns: str, name: str, sa: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"serviceAccountName": sa, "containers": [{"name": "a", "image": "a"}]},
            },
        },
    }


async def create(h: Harness, api: str, plural: str, body: dict[str, Any]) -> Any:
    return await h.kube.acreate(path(api, plural, body["metadata"]["namespace"]), body)


async def commit_value(
    h: Harness, ref: SecretRef, value: bytes, overlap: float = 3600
) -> SecretState:
    """Do what the writer agent does: prepare, then commit, on the source Secret."""
    obj = await h.get("v1", "secrets", ref.namespace, ref.name)
    state = SecretState.from_secret(obj.get("data"), obj["metadata"].get("annotations"))
    now = time.time()
    new = commit(prepare(state, {"password": value}, now, "api-0"), now, overlap=overlap)
    await h.kube.apatch(
        path("v1", "secrets", ref.namespace, ref.name),
        {
            "metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": new.annotations(),
            },
            "data": new.secret_data(),
        },
    )
    return new


async def writer_setup(h: Harness) -> None:
    """shop/db with a granted writer pod api-0 (service account shop/api)."""
    await h.rsec("shop", "db")
    await create(
        h, "apps/v1", "deployments", deployment_body("shop", "api", "api", {"rotor.dev/rw": "db"})
    )
    await create(h, "v1", "pods", pod_body("shop", "api-0", "api", {"rotor.dev/rw": "db"}))
    await eventually(
        lambda: _pending(h, DB, API_SA, "rw"), what="RW request recorded in the ConfigMap"
    )
    await h.backend.approve(DB, API_SA, "rw")
    await eventually(lambda: _writer_is(h, "api-0"), what="status.writer = api-0")


async def _pending(h: Harness, secret: SecretRef, principal: Principal, mode: str) -> bool:
    snap = await h.backend.snapshot()
    return any(
        (r.secret, r.principal, r.mode, r.state) == (secret, principal, mode, "pending")
        for r in snap.requests
    )


async def _writer(h: Harness, ns: str, name: str) -> str | None:
    return ((await h.status(ns, name)).get("writer") or {}).get("pod")


async def _writer_is(h: Harness, pod: str) -> bool:
    return await _writer(h, "shop", "db") == pod


async def _view(h: Harness, ns: str) -> dict[str, Any] | None:
    return await h.get("v1", "secrets", ns, view_name("shop", "db"))


def _decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


# -- tests -----------------------------------------------------------------------------------
async def test_rotating_secret_gets_an_owned_source_secret(rotor):
    created = await rotor.rsec("shop", "db")
    src = await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"))
    assert src["metadata"]["labels"][LABEL_SECRET] == "db"
    (owner,) = src["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"]
    assert owner["controller"] is True
    ready = await eventually(lambda: rotor.condition("shop", "db", "Ready"))
    assert (ready["status"], ready["reason"]) == ("False", "NoWriter")
    obj = await rotor.get(API, "rotatingsecrets", "shop", "db")
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert (await rotor.status("shop", "db"))["phase"] == "Pending"


async def test_rw_request_approved_chooses_a_writer_and_binds_it(rotor):
    await writer_setup(rotor)
    role = await rotor.get(RBAC, "roles", "shop", rbac_name("rw", DB))
    assert role["rules"][0]["resourceNames"] == ["db"]
    assert set(role["rules"][0]["verbs"]) == {"get", "list", "watch", "patch", "update"}
    binding = await rotor.get(RBAC, "rolebindings", "shop", rbac_name("rw", DB))
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "api", "namespace": "shop"}]
    access = await rotor.condition("shop", "db", "AccessGranted")
    assert (access["status"], access["reason"]) == ("True", "Granted")


async def test_ro_consumer_gets_committed_values_then_rotations_then_loses_them(rotor):
    await writer_setup(rotor)
    await create(
        rotor,
        "apps/v1",
        "deployments",
        deployment_body("web", "web", "web", {"rotor.dev/ro": "shop/db"}),
    )
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"), what="RO request recorded")
    await rotor.backend.approve(DB, WEB, "ro")

    v1 = await commit_value(rotor, DB, b"first-value-1")
    view = await eventually(lambda: _view(rotor, "web"), what="view in web")
    assert _decoded(view) == {"password": b"first-value-1"}
    assert view["metadata"]["annotations"][ANN_VERSION] == str(v1.version)
    role = await rotor.get(RBAC, "roles", "web", rbac_name("ro", DB))
    assert role["rules"][0]["resourceNames"] == [view_name("shop", "db")]

    await commit_value(rotor, DB, b"second-value-2")

    async def rotated() -> bool:
        v = await _view(rotor, "web")
        return bool(v) and _decoded(v).get("password") == b"second-value-2"

    await eventually(rotated, what="view holds the rotated value")
    assert _decoded(await _view(rotor, "web")) == {
        "password": b"second-value-2",
        "password.previous": b"first-value-1",
    }

    async def consumer_version() -> Any:
        for c in (await rotor.status("shop", "db")).get("consumers", []):
            if c["principal"] == "web/web":
                return c.get("version") == 2 and c
        return None

    await eventually(consumer_version, what="status records the consumer at version 2")

    # revoke: view and RoleBinding are gone within one ACL poll
    await rotor.backend.revoke(DB, WEB, "ro")

    async def gone() -> bool:
        binding = await rotor.get(RBAC, "rolebindings", "web", rbac_name("ro", DB))
        return await _view(rotor, "web") is None and binding is None

    await eventually(gone, timeout=5 * rotor.ctl.settings.acl_poll + 3, what="view revoked")


async def test_pending_phase_and_bad_checksum_are_not_published(rotor):
    await writer_setup(rotor)
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"))
    await rotor.backend.approve(DB, WEB, "ro")
    pending = prepare(SecretState(), {"password": b"not-yet-value"}, time.time(), "api-0")
    tampered = SecretState(version=3, current={"password": b"tampered-value"})
    for state, ann in (
        (pending, pending.annotations()),
        (tampered, {**tampered.annotations(), "rotor.dev/checksum": "0" * 64}),
    ):
        await rotor.kube.apatch(
            path("v1", "secrets", "shop", "db"),
            {"metadata": {"annotations": ann}, "data": state.secret_data()},
        )
        published = await eventually(
            lambda: _published_reason(rotor), what="Published reports the hold"
        )
        assert published in ("NotCommitted", "ChecksumMismatch")
        assert await _view(rotor, "web") is None


async def _published_reason(h: Harness) -> str | None:
    c = await h.condition("shop", "db", "Published")
    return c.get("reason") if c.get("reason") in ("NotCommitted", "ChecksumMismatch") else None


async def test_ro_without_a_writer_stays_pending_no_writer(rotor):
    await rotor.rsec("shop", "db")
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"))
    await rotor.backend.approve(DB, WEB, "ro")

    async def no_writer() -> Any:
        for c in (await rotor.status("shop", "db")).get("consumers", []):
            if c["principal"] == "web/web" and c.get("reason") == "NoWriter":
                return c
        return None

    consumer = await eventually(no_writer, what="consumer pending with NoWriter")
    assert consumer["state"] == "pending"
    assert await rotor.get(RBAC, "rolebindings", "web", rbac_name("ro", DB)) is None


async def test_writer_pod_deleted_a_new_writer_is_chosen(rotor):
    await create(
        rotor,
        "v1",
        "pods",
        pod_body("shop", "api-1", "api", {"rotor.dev/rw": "db"}, created="2026-02-01T00:00:00Z"),
    )
    await writer_setup(rotor)  # api-0 is older: it is chosen
    await rotor.kube.adelete(path("v1", "pods", "shop", "api-0"))
    await eventually(lambda: _writer_is(rotor, "api-1"), what="api-1 takes over")


async def test_unreachable_acl_keeps_the_last_good_acl(rotor):
    await writer_setup(rotor)
    await commit_value(rotor, DB, b"kept-value-1")

    class Down:
        name = "down"

        async def snapshot(self):
            raise UnavailableError("connection refused")

    good = rotor.ctl.backend
    rotor.ctl.backend = Down()
    access = await eventually(
        lambda: _reason(rotor, "AccessGranted", "AclStale"), what="AccessGranted=AclStale"
    )
    assert access["status"] == "Unknown"
    assert rotor.ctl.acl is not None
    assert _sample(rotor, "rotor_controller_acl_stale") == 1
    assert await rotor.get(RBAC, "rolebindings", "shop", rbac_name("rw", DB)) is not None
    assert await _writer(rotor, "shop", "db") == "api-0"
    rotor.ctl.backend = good
    await eventually(lambda: _reason(rotor, "AccessGranted", "Granted"), what="fresh again")
    assert _sample(rotor, "rotor_controller_acl_stale") == 0


@with_settings(on_stale="revoke", max_staleness=0.5)
async def test_stale_acl_with_on_stale_revoke_removes_access(rotor):
    await writer_setup(rotor)
    binding = rbac_name("rw", DB)
    await eventually(  # there is something to remove: the writer is bound first
        lambda: rotor.get(RBAC, "rolebindings", "shop", binding), what="the writer bound"
    )

    class Down:
        name = "down"

        async def snapshot(self):
            raise UnavailableError("timed out")

    rotor.ctl.backend = Down()
    await eventually(lambda: _reason(rotor, "AccessGranted", "AclRevokedStale"))

    async def unbound() -> bool:
        return await rotor.get(RBAC, "rolebindings", "shop", rbac_name("rw", DB)) is None

    await eventually(unbound, what="bindings removed after maxStaleness")


async def _reason(h: Harness, ctype: str, reason: str) -> dict[str, Any] | None:
    c = await h.condition("shop", "db", ctype)
    return c if c.get("reason") == reason else None


def _sample(h: Harness, name: str, labels: dict[str, str] | None = None) -> float | None:
    return h.metrics.registry.get_sample_value(name, labels or {})


async def test_malformed_rotating_secret_is_reported_and_disturbs_nothing(rotor):
    await rotor.rsec("shop", "good")
    await rotor.rsec(
        "shop",
        "bad",
        {
            "keys": [{"name": "password", "generator": {"type": "password"}}],
            "rotation": {"interval": "1h", "overlap": "2h"},
        },
    )
    ready = await eventually(lambda: _bad_ready(rotor))
    assert ready["reason"] == "InvalidSpec"
    assert "spec.rotation.overlap" in ready["message"]
    assert "make overlap shorter than 57m" in ready["message"]
    assert (await rotor.status("shop", "bad"))["phase"] == "Failed"

    async def event() -> Any:
        events = await rotor.kube.aitems(path("v1", "events", "shop"))
        return [
            e
            for e in events
            if e["involvedObject"]["name"] == "bad" and e["reason"] == "InvalidSpec"
        ]

    (ev,) = await eventually(event, what="an InvalidSpec Event")
    assert ev["type"] == "Warning"
    assert await rotor.get("v1", "secrets", "shop", "bad") is None  # nothing made for it
    assert await rotor.get("v1", "secrets", "shop", "good") is not None
    good = await eventually(lambda: rotor.condition("shop", "good", "Ready"))
    assert good["reason"] == "NoWriter"


async def _bad_ready(h: Harness) -> dict[str, Any] | None:
    c = await h.condition("shop", "bad", "Ready")
    return c if c.get("reason") == "InvalidSpec" else None


async def test_rotate_now_is_passed_to_the_writer_and_suspend_is_reported(rotor):
    await rotor.rsec("shop", "db")
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"))
    url = path(API, "rotatingsecrets", "shop", "db")
    await rotor.kube.apatch(url, {"metadata": {"annotations": {"rotor.dev/rotate-now": "t1"}}})

    async def requested() -> bool:
        src = await rotor.get("v1", "secrets", "shop", "db")
        return src["metadata"]["annotations"].get(ANN_ROTATE_REQUESTED) == "t1"

    await eventually(requested, what="rotate-requested on the source Secret")
    await rotor.kube.apatch(url, {"spec": {"suspend": True}})
    await eventually(lambda: _reason(rotor, "Ready", "Suspended"))


async def test_deletion_removes_views_and_bindings(rotor):
    await writer_setup(rotor)
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"))
    await rotor.backend.approve(DB, WEB, "ro")
    await commit_value(rotor, DB, b"value-to-delete")
    await eventually(lambda: _view(rotor, "web"))
    # everything the cleanup must remove exists first
    for ns, kind, name in (
        ("shop", "rolebindings", rbac_name("rw", DB)),
        ("shop", "roles", rbac_name("rw", DB)),
        ("web", "rolebindings", rbac_name("ro", DB)),
        ("web", "roles", rbac_name("ro", DB)),
    ):
        assert await rotor.get(RBAC, kind, ns, name) is not None, f"{kind} {ns} before deletion"
    await rotor.kube.adelete(path(API, "rotatingsecrets", "shop", "db"))

    async def all_gone() -> bool:
        return (
            await rotor.get(API, "rotatingsecrets", "shop", "db") is None
            and await _view(rotor, "web") is None
            and await rotor.get(RBAC, "rolebindings", "shop", rbac_name("rw", DB)) is None
            and await rotor.get(RBAC, "roles", "shop", rbac_name("rw", DB)) is None
            and await rotor.get(RBAC, "rolebindings", "web", rbac_name("ro", DB)) is None
            and await rotor.get(RBAC, "roles", "web", rbac_name("ro", DB)) is None
        )

    await eventually(all_gone, what="finalizer cleanup")


async def test_pods_admitted_without_injection_are_restarted_through_their_owner(rotor):
    """Pods the webhook never saw carry no ``rotor.dev/injected`` label (the controller does not
    watch them); they are found through the annotated workloads' own selectors."""
    annotations = {"rotor.dev/rw": "db"}
    dep = await create(
        rotor, "apps/v1", "deployments", deployment_body("shop", "api", "api", annotations)
    )
    dep_ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "api-7d9f",
            "namespace": "shop",
            "ownerReferences": [{**dep_ref, "uid": dep["metadata"]["uid"], "controller": True}],
        },
        "spec": {"selector": {"matchLabels": {"app": "api"}}},
    }
    rs = await create(rotor, "apps/v1", "replicasets", rs)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"job-name": "migrate"}},
            "template": {
                "metadata": {"labels": {"job-name": "migrate"}, "annotations": annotations},
                "spec": {"serviceAccountName": "api", "containers": [{"name": "m", "image": "m"}]},
            },
        },
    }
    job = await create(rotor, "batch/v1", "jobs", job)
    rs_owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "api-7d9f",
        "uid": rs["metadata"]["uid"],
    }
    job_owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "migrate",
        "uid": job["metadata"]["uid"],
    }
    app, job_pod = {"app": "api"}, {"job-name": "migrate"}
    for body in (
        pod_body("shop", "api-x", "api", annotations, owner=rs_owner, injected=False, labels=app),
        pod_body("shop", "api-0", "api", annotations, owner=rs_owner, labels=app),  # injected
        pod_body(
            "shop", "job-x", "api", annotations, owner=job_owner, injected=False, labels=job_pod
        ),
        pod_body("shop", "bare", "api", annotations, injected=False, labels=app),
    ):
        await create(rotor, "v1", "pods", body)

    async def restarted() -> Any:
        dep = await rotor.get("apps/v1", "deployments", "shop", "api")
        return dep["spec"]["template"]["metadata"]["annotations"].get(RESTARTED_AT)

    await eventually(restarted, what="Deployment template restartedAt")
    await eventually(lambda: _gone(rotor, "job-x"), what="pod of another controller deleted")
    assert await rotor.get("v1", "pods", "shop", "bare") is not None
    assert await rotor.get("v1", "pods", "shop", "api-x") is not None  # the Deployment rolls it
    assert await rotor.get("v1", "pods", "shop", "api-0") is not None
    restarts = "rotor_controller_restarts_total"
    assert _sample(rotor, restarts, {"action": "patch-template"}) == 1
    assert _sample(rotor, restarts, {"action": "delete-pod"}) == 1


async def test_the_controller_asks_the_api_server_only_for_rotors_pods(
    kube_emulator, controller_settings
):
    """Pods that have nothing to do with Rotor are never sent to the controller: every list and
    watch of pods it makes selects ``rotor.dev/injected`` on the server (a client-side filter
    would still have every pod sent and parsed). Secrets likewise select Rotor's own."""
    assert kube_emulator.k8s is not None
    kube_emulator.k8s.keep_requests = True
    kube = Kube(kube_emulator.api_client())
    for i in range(20):
        body = pod_body("other", f"unrelated-{i}", "default", {}, injected=False)
        kube.create(path("v1", "pods", "other"), body)
    kube.create(path("v1", "secrets", "other"), {"metadata": {"name": "unrelated"}})
    kube.close()
    async for h in running_controller(kube_emulator, controller_settings):
        await writer_setup(h)  # an injected writer is still seen and chosen
        assert set(h.ctl.index.pods) == {("shop", "api-0")}
        requests = [
            r
            for r in list(kube_emulator.k8s._requests)
            if r.resource is not None
            and r.resource.plural in ("pods", "secrets")
            and r.action in (k8s_action.LIST, k8s_action.WATCH)
            and r.name is None
        ]
        selectors = {(r.resource.plural, r.params.get("labelSelector", "")) for r in requests}
        assert {p for p, _ in selectors} == {"pods", "secrets"}
        assert all(
            "rotor.dev/injected" in sel if plural == "pods" else sel for plural, sel in selectors
        ), selectors


async def test_a_forged_owner_chain_restarts_nothing(rotor, caplog):
    """A pod anyone can create names a Deployment it does not belong to: nothing is rolled."""
    victim = await create(
        rotor,
        "apps/v1",
        "deployments",
        deployment_body("shop", "payments", "payments", {"app": "x"}),
    )
    dep_ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments"}
    uid = victim["metadata"]["uid"]
    # a ReplicaSet of the attacker's, claiming the victim with its real UID (it is readable)
    await create(
        rotor,
        "apps/v1",
        "replicasets",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "evil-rs",
                "namespace": "shop",
                "ownerReferences": [{**dep_ref, "uid": uid, "controller": True}],
            },
            "spec": {"selector": {"matchLabels": {"app": "evil"}}},
        },
    )
    evil_rs = await rotor.get("apps/v1", "replicasets", "shop", "evil-rs")
    annotations = {"rotor.dev/rw": "db"}
    forged = {
        # the issue's attack: labelled so that the webhook skips it, owned "by" the victim
        "opted-out": dict(owner={**dep_ref, "uid": uid}, labels={"rotor.dev/inject": "false"}),
        "direct": dict(owner={**dep_ref, "uid": uid}, labels={"app": "payments"}),
        "wrong-uid": dict(
            owner={"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "evil-rs", "uid": "x"},
            labels={"app": "evil"},
        ),
        # right UIDs all the way, but the victim's selector does not take this pod
        "selector": dict(
            owner={
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "evil-rs",
                "uid": evil_rs["metadata"]["uid"],
            },
            labels={"app": "evil"},
        ),
    }
    for name, kw in forged.items():
        # labelled as injected but not marked so: the controller's pod watch sends it, and it
        # looks like a pod admitted without the agent (an annotated workload's sweep finds such
        # pods the same way)
        kw["labels"] = {**kw["labels"], "rotor.dev/injected": "true"}
        await create(
            rotor, "v1", "pods", pod_body("shop", name, "evil", annotations, injected=False, **kw)
        )
    restarts = "rotor_controller_restarts_total"

    def refused() -> set[str]:
        return {
            name
            for name in forged
            for r in caplog.records
            if r.getMessage().startswith(f"not restarting anything for pod shop/{name} ")
        }

    await eventually(lambda: refused() == set(forged), what="every forged chain refused")
    dep = await rotor.get("apps/v1", "deployments", "shop", "payments")
    assert RESTARTED_AT not in (dep["spec"]["template"]["metadata"].get("annotations") or {})
    assert _sample(rotor, restarts, {"action": "patch-template"}) is None
    for name in forged:
        assert await rotor.get("v1", "pods", "shop", name) is not None


async def _gone(h: Harness, pod: str) -> bool:
    return await h.get("v1", "pods", "shop", pod) is None


async def test_nothing_is_published_until_every_external_store_holds_the_version(rotor):
    holds: set[str] = set()

    class FakeReader:  # the Vault reader's protocol, answering from ``holds``
        async def store_holds(self, path, version, checksum):
            return checksum in holds

    await create(
        rotor,
        API,
        "externalstores",
        {
            "apiVersion": API,
            "kind": "ExternalStore",
            "metadata": {"name": "vault", "namespace": "shop"},
            "spec": {"vault": {"server": "https://v:8200", "auth": {"kubernetes": {"role": "r"}}}},
        },
    )
    await eventually(lambda: ("shop", "vault") in rotor.ctl.index.stores)
    rotor.ctl.stores.readers[("shop", "vault")] = FakeReader()
    spec = {
        "keys": [{"name": "password", "generator": {"type": "password"}}],
        "externalStores": [{"storeRef": {"name": "vault"}, "path": "shop/db"}],
    }
    await rotor.rsec("shop", "db", spec)
    await create(rotor, "v1", "pods", pod_body("shop", "api-0", "api", {"rotor.dev/rw": "db"}))
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: _pending(rotor, DB, API_SA, "rw"))
    await rotor.backend.approve(DB, API_SA, "rw")
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"))
    await rotor.backend.approve(DB, WEB, "ro")

    state = await commit_value(rotor, DB, b"stored-value-1")
    synced = await eventually(lambda: _reason(rotor, "ExternalStoreSynced", "StoreNotSynced"))
    assert synced["status"] == "False"
    assert "vault:shop/db" in synced["message"]
    assert await _view(rotor, "web") is None

    holds.add(state.checksum)  # the writer's step 3 reached the store
    view = await eventually(lambda: _view(rotor, "web"), what="published once the store holds it")
    assert _decoded(view) == {"password": b"stored-value-1"}
    synced = await eventually(lambda: _reason(rotor, "ExternalStoreSynced", "InSync"))
    assert synced["status"] == "True"


async def test_an_expired_previous_value_leaves_the_views(rotor):
    await writer_setup(rotor)
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"))
    await rotor.backend.approve(DB, WEB, "ro")
    await commit_value(rotor, DB, b"first-value-1")
    await commit_value(rotor, DB, b"second-value-2", overlap=2.0)

    async def with_previous() -> Any:
        v = await _view(rotor, "web")
        return v and "password.previous" in _decoded(v) and v

    view = await eventually(with_previous, what="the view holds the previous value")
    assert view["metadata"]["annotations"]["rotor.dev/previous-expires"]

    async def without_previous() -> Any:
        v = await _view(rotor, "web")
        return v and _decoded(v) == {"password": b"second-value-2"} and v

    view = await eventually(without_previous, what="the expired previous value dropped")
    assert view["metadata"]["annotations"]["rotor.dev/previous-expires"] == ""
    source = await rotor.get("v1", "secrets", "shop", "db")
    assert "password.previous" in source["data"]  # nobody changed the source meanwhile


@with_settings(restart_method="evict")
async def test_the_least_privilege_mode_evicts_the_pod_and_patches_no_workload(rotor):
    # kmock has no pods/eviction subresource: answer it here as the API server does when no
    # PodDisruptionBudget stands in the way (it deletes the pod), after checking the body.
    evictions: list[dict[str, Any]] = []
    real_create = rotor.ctl.kube.acreate

    async def acreate(url: str, body: dict[str, Any]) -> Any:
        if url.endswith("/eviction"):
            assert (body["apiVersion"], body["kind"]) == ("policy/v1", "Eviction")
            evictions.append(body)
            pod_url = url.removesuffix("/eviction")
            await rotor.ctl.kube.adelete(pod_url)
            return {"kind": "Status", "status": "Success"}
        return await real_create(url, body)

    rotor.ctl.kube.acreate = acreate  # type: ignore[method-assign]
    dep = await create(
        rotor,
        "apps/v1",
        "deployments",
        deployment_body("shop", "api", "api", {"rotor.dev/rw": "db"}),
    )
    rs = await create(
        rotor,
        "apps/v1",
        "replicasets",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "api-7d9f",
                "namespace": "shop",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "api",
                        "uid": dep["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"selector": {"matchLabels": {"app": "api"}}},
        },
    )
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f"}
    owner["uid"] = rs["metadata"]["uid"]
    await create(
        rotor,
        "v1",
        "pods",
        pod_body(
            "shop",
            "api-x",
            "api",
            {"rotor.dev/rw": "db"},
            owner=owner,
            injected=False,
            labels={"app": "api"},
        ),
    )
    await eventually(lambda: _gone(rotor, "api-x"), what="the uninjected pod evicted")
    dep = await rotor.get("apps/v1", "deployments", "shop", "api")
    assert RESTARTED_AT not in (dep["spec"]["template"]["metadata"].get("annotations") or {})
    assert _sample(rotor, "rotor_controller_restarts_total", {"action": "evict-pod"}) == 1
    assert [e["metadata"] for e in evictions] == [{"name": "api-x", "namespace": "shop"}]
