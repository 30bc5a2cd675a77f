"""Tables over the controller's pure decisions (controller.decide, controller.model)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller import decide
from controller.leader import LeaseRecord, lease_decision
from controller.model import (
    OwnerRef,
    PodInfo,
    SourceObs,
    ViewObs,
    Want,
    object_name,
    read_rotating_secret,
    requests_from_workload,
    source_label,
)
from rotor.acl import AccessRequest, AclSnapshot, Grant
from rotor.errors import AnnotationError
from rotor.layout import SecretState, view_name
from rotor.names import Principal, SecretRef
from rotor.settings.controller import ControllerSettings

DB = SecretRef("shop", "db")
API = Principal("shop", "api")
OTHER = Principal("shop", "other")
WEB = Principal("web", "web")
RW = Grant(DB, API, "rw")


def pod(
    name, *, sa="api", ns="shop", ready=True, created=0.0, rw=(DB,), deleting=False, owner=None
):
    return PodInfo(
        ns, name, f"uid-{name}", sa, created, ready, deleting, tuple(rw), (), True, True, owner
    )


# -- writer choice ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pods", "grants", "current", "expected"),
    [
        ([pod("a", created=2), pod("b", created=1)], {RW}, None, "b"),  # oldest first
        ([pod("a", created=1), pod("b", created=1)], {RW}, None, "a"),  # then by name
        ([pod("a", created=2), pod("b", created=1)], {RW}, "a", "a"),  # the current one stays
        ([pod("a", created=1, ready=False), pod("b", created=2)], {RW}, None, "b"),
        ([pod("a", created=1, deleting=True), pod("b", created=2)], {RW}, "a", "b"),
        ([pod("a", sa="other")], {RW}, None, None),  # principal not granted
        ([pod("a")], set(), None, None),  # no grant
        ([pod("a", rw=())], {RW}, None, None),  # does not ask to write
        ([pod("a", ns="web")], {RW}, None, None),  # another namespace
        (
            [pod("a", sa="other", created=1), pod("b", created=2)],
            {RW, Grant(DB, OTHER, "ro")},
            None,
            "b",
        ),
    ],
)
def test_choose_writer(pods, grants, current, expected):
    chosen = decide.choose_writer(DB, pods, frozenset(grants), current)
    assert (chosen.name if chosen else None) == expected


# -- RBAC -------------------------------------------------------------------------------------
def _kinds(objs):
    return sorted((o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs)


@pytest.mark.parametrize(
    ("grants", "expected"),
    [
        (set(), []),
        ({RW}, [("Role", "shop", "rotor-rw.db"), ("RoleBinding", "shop", "rotor-rw.db")]),
        ({Grant(DB, WEB, "ro")}, []),  # RO without a writer: nothing
        (
            {RW, Grant(DB, WEB, "ro")},
            [
                ("Role", "shop", "rotor-rw.db"),
                ("Role", "web", "rotor-ro.shop.db"),
                ("RoleBinding", "shop", "rotor-rw.db"),
                ("RoleBinding", "web", "rotor-ro.shop.db"),
            ],
        ),
        ({Grant(SecretRef("shop", "x"), API, "rw")}, []),  # another secret's grant
    ],
)
def test_desired_rbac_objects(grants, expected):
    assert _kinds(decide.desired_rbac(DB, grants)) == expected


def test_rbac_rules_are_scoped_by_resource_names_and_subjects_merge():
    objs = decide.desired_rbac(
        DB, {RW, Grant(DB, WEB, "ro"), Grant(DB, Principal("web", "worker"), "ro")}
    )
    ro_role = next(o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] == "web")
    assert ro_role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [view_name("shop", "db")],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = next(
        o for o in objs if o["kind"] == "RoleBinding" and o["metadata"]["namespace"] == "web"
    )
    assert [s["name"] for s in binding["subjects"]] == ["web", "worker"]
    for o in objs:
        for rule in o.get("rules", []):
            assert rule["resourceNames"]
            assert "create" not in rule["verbs"]
            assert "delete" not in rule["verbs"]


@pytest.mark.parametrize(
    ("stores", "expected"),
    [
        ((), None),  # no external store: no ExternalStore rule
        (("vault", "backup", "vault"), ["backup", "vault"]),
    ],
)
def test_rw_role_reads_exactly_its_external_stores_and_its_rotating_secret(stores, expected):
    objs = decide.desired_rbac(DB, {RW, Grant(DB, WEB, "ro")}, stores)
    rw_role = next(o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] == "shop")
    by_resource = {r["resources"][0]: r for r in rw_role["rules"]}
    assert by_resource["rotatingsecrets"]["resourceNames"] == ["db"]
    assert "get" in by_resource["rotatingsecrets"]["verbs"]  # spec and status.writer
    if expected is None:
        assert "externalstores" not in by_resource
    else:
        assert by_resource["externalstores"] == {
            "apiGroups": ["rotor.dev"],
            "resources": ["externalstores"],
            "resourceNames": expected,
            "verbs": ["get"],
        }
    ro_role = next(o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] == "web")
    assert [r["resources"] for r in ro_role["rules"]] == [["secrets"]]  # RO: the view only


# -- fan-out ----------------------------------------------------------------------------------
def _source(state, checksum=None):
    return SourceObs(DB, state, state.checksum if checksum is None else checksum, "", True, True)


V2 = SecretState(version=2, current={"password": b"v2"})
PENDING = SecretState(
    version=2, phase="pending", current={"password": b"v2"}, pending={"password": b"v3"}
)


def _view(ns, version, checksum=V2.checksum):
    return ViewObs(ns, view_name("shop", "db"), source_label(DB), version, checksum)


@pytest.mark.parametrize(
    ("source", "granted", "views", "upsert", "delete", "hold"),
    [
        (_source(V2), {"web"}, {}, ("web",), (), ""),
        (_source(V2), {"web"}, {"web": _view("web", 2)}, (), (), ""),  # up to date
        (_source(V2), {"web"}, {"web": _view("web", 1)}, ("web",), (), ""),
        (_source(V2), {"web"}, {"web": _view("web", 2, "x")}, ("web",), (), ""),
        (_source(V2), set(), {"web": _view("web", 2)}, (), ("web",), ""),  # revoked
        (_source(PENDING), {"web"}, {}, (), (), "NotCommitted"),
        (_source(V2, "bad"), {"web"}, {}, (), (), "ChecksumMismatch"),
        (_source(SecretState()), {"web"}, {}, (), (), "NoValue"),
        (None, {"web"}, {}, (), (), "NoValue"),
        (_source(PENDING), set(), {"web": _view("web", 1)}, (), ("web",), "NotCommitted"),
    ],
)
def test_plan_fanout(source, granted, views, upsert, delete, hold):
    plan = decide.plan_fanout(source, frozenset(granted), views)
    assert (plan.upsert, plan.delete, plan.hold) == (upsert, delete, hold)


def test_an_expired_previous_value_is_taken_out_of_the_views():
    with_prev = SecretState(
        version=2,
        current={"password": b"v2"},
        previous={"password": b"v1"},
        previous_expires=1000.0,
    )
    expires = "1970-01-01T00:16:40Z"
    view = ViewObs("web", view_name("shop", "db"), source_label(DB), 2, V2.checksum, expires)
    # during the overlap the view is up to date, and a reconcile is due at the expiry
    shown = decide.for_views(_source(with_prev), now=990.0)
    assert shown is not None
    assert shown.state is not None
    assert shown.state.previous
    assert decide.plan_fanout(shown, frozenset({"web"}), {"web": view}).upsert == ()
    assert decide.previous_expiry_in(shown, 990.0) == 10.0
    # past it, the same source (no writer dropped it) gives a view without the previous value
    shown = decide.for_views(_source(with_prev), now=1000.0)
    assert shown is not None
    assert shown.state is not None
    assert not shown.state.previous
    assert decide.plan_fanout(shown, frozenset({"web"}), {"web": view}).upsert == ("web",)
    assert "password.previous" not in decide.view_body(DB, shown.state, "web")["data"]
    assert decide.previous_expiry_in(shown, 1000.0) is None


def test_view_never_holds_pending_values():
    state = SecretState(
        version=3,
        current={"password": b"cur"},
        previous={"password": b"prev"},
        pending={"password": b"next"},
    )
    body = decide.view_body(DB, state, "web")
    assert sorted(body["data"]) == ["password", "password.previous"]
    assert body["metadata"]["name"] == "rotor.shop.db"
    patch = decide.view_patch(DB, state, "web", ["password", "old-key"])
    assert patch["data"]["old-key"] is None


# -- staleness --------------------------------------------------------------------------------
KEEP = ControllerSettings(max_staleness=60.0, on_stale="keep")
REVOKE = ControllerSettings(max_staleness=60.0, on_stale="revoke")


@pytest.mark.parametrize(
    ("now", "last_ok", "failing", "settings", "expected"),
    [
        (100.0, 90.0, False, REVOKE, decide.Staleness(False, 0.0, False)),
        (100.0, 90.0, True, REVOKE, decide.Staleness(True, 10.0, False)),
        (100.0, 30.0, True, KEEP, decide.Staleness(True, 70.0, False)),
        (100.0, 30.0, True, REVOKE, decide.Staleness(True, 70.0, True)),
        (100.0, None, True, KEEP, decide.Staleness(True, float("inf"), False)),
    ],
)
def test_staleness(now, last_ok, failing, settings, expected):
    assert decide.staleness(now, last_ok, failing, settings) == expected


def test_effective_grants_revoked_when_stale_too_long():
    acl = AclSnapshot(1, frozenset({RW}))
    assert decide.effective_grants(acl, decide.Staleness(True, 10, False)) == {RW}
    assert decide.effective_grants(acl, decide.Staleness(True, 999, True)) == frozenset()
    assert decide.effective_grants(None, decide.Staleness(True, 0, False)) == frozenset()


# -- requests from workloads -------------------------------------------------------------------
def _workload(kind, annotations, sa=None):
    pod_spec = {"serviceAccountName": sa} if sa else {}
    if kind == "Pod":
        return {
            "kind": "Pod",
            "metadata": {"namespace": "web", "annotations": annotations},
            "spec": pod_spec,
        }
    return {
        "kind": kind,
        "metadata": {"namespace": "web", "name": "w"},
        "spec": {"template": {"metadata": {"annotations": annotations}, "spec": pod_spec}},
    }


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "Pod"])
@pytest.mark.parametrize(
    ("annotations", "sa", "expected"),
    [
        ({}, None, ()),
        ({"rotor.dev/ro": "shop/db"}, "web", (Want(DB, WEB, "ro"),)),
        ({"rotor.dev/ro": "shop/db"}, None, (Want(DB, Principal("web", "default"), "ro"),)),
        (
            {"rotor.dev/rw": "a", "rotor.dev/ro": "shop/db"},
            "web",
            (Want(DB, WEB, "ro"), Want(SecretRef("web", "a"), WEB, "rw")),
        ),
        ({"rotor.dev/ro": "shop/db", "rotor.dev/inject": "false"}, "web", ()),
    ],
)
def test_requests_from_workload(kind, annotations, sa, expected):
    assert requests_from_workload(_workload(kind, annotations, sa)) == expected


def test_malformed_workload_annotations_name_the_annotation():
    with pytest.raises(AnnotationError) as exc:
        requests_from_workload(_workload("Deployment", {"rotor.dev/rw": "other/db"}))
    assert exc.value.field == "rotor.dev/rw"


# -- consumers and status ----------------------------------------------------------------------
def _obs(spec=None):
    body = {"metadata": {"namespace": "shop", "name": "db", "uid": "u", "generation": 1}}
    body["spec"] = spec or {"keys": [{"name": "password", "generator": {"type": "password"}}]}
    return read_rotating_secret(body)


@pytest.mark.parametrize(
    ("grants", "requests", "expected"),
    [
        (
            set(),
            (),
            [
                ("shop/api", "rw", "pending", "AwaitingApproval"),
                ("web/web", "ro", "pending", "AwaitingApproval"),
            ],
        ),
        (
            {RW},
            (),
            [("shop/api", "rw", "granted", ""), ("web/web", "ro", "pending", "AwaitingApproval")],
        ),
        (
            {Grant(DB, WEB, "ro")},
            (),
            [
                ("shop/api", "rw", "pending", "AwaitingApproval"),
                ("web/web", "ro", "pending", "NoWriter"),
            ],
        ),
        (
            {RW, Grant(DB, WEB, "ro")},
            (),
            [("shop/api", "rw", "granted", ""), ("web/web", "ro", "granted", "")],
        ),
        (
            {RW},
            (AccessRequest(DB, WEB, "ro", "denied"),),
            [("shop/api", "rw", "granted", ""), ("web/web", "ro", "denied", "Denied")],
        ),
    ],
)
def test_consumer_statuses(grants, requests, expected):
    wants = {Want(DB, API, "rw"), Want(DB, WEB, "ro")}
    acl = AclSnapshot(1, frozenset(grants), tuple(requests))
    out = decide.consumer_statuses(
        DB, wants, frozenset(grants), acl, _source(V2), {"web": _view("web", 2)}
    )
    assert [(c.principal, c.access, c.state, c.reason) for c in out] == expected


def _ready(status):
    return next(c for c in status.conditions if c.type == "Ready")


def test_status_of_an_invalid_spec_names_the_field():
    obs = _obs({"keys": [{"name": "a", "generator": {"type": "md5"}}]})
    s = decide.secret_status(obs, None, None, (), None, decide.Staleness(False, 0, False), True)
    assert s.phase == "Failed"
    assert _ready(s).reason == "InvalidSpec"
    assert "spec.keys[0].generator.type" in _ready(s).message


@pytest.mark.parametrize(
    ("spec_extra", "writer", "source", "reason", "phase"),
    [
        ({}, None, _source(V2), "NoWriter", "Active"),
        ({"suspend": True}, pod("a"), _source(V2), "Suspended", "Active"),
        ({}, pod("a"), _source(SecretState()), "WaitingForValue", "Pending"),
        ({}, pod("a"), _source(PENDING), "Ready", "Rotating"),
        ({}, pod("a"), _source(V2), "Ready", "Active"),
    ],
)
def test_ready_reason_and_phase(spec_extra, writer, source, reason, phase):
    spec = {"keys": [{"name": "password", "generator": {"type": "password"}}], **spec_extra}
    s = decide.secret_status(
        _obs(spec), source, writer, (), None, decide.Staleness(False, 0, False), True
    )
    assert (_ready(s).reason, s.phase) == (reason, phase)


def test_new_failures_report_each_reason_once():
    obs = _obs({"keys": []})
    s = decide.secret_status(obs, None, None, (), None, decide.Staleness(False, 0, False), True)
    assert [c.reason for c in decide.new_failures([], s.conditions)] == ["InvalidSpec"]
    written = [c.to_dict() for c in s.conditions]
    assert decide.new_failures(written, s.conditions) == []


# -- restarts ---------------------------------------------------------------------------------
RS = OwnerRef("apps/v1", "ReplicaSet", "api-7d9f")
DEP = OwnerRef("apps/v1", "Deployment", "api")


@pytest.mark.parametrize(
    ("owner", "rs_owner", "kind", "target"),
    [
        (RS, DEP, "patch-template", ("deployments", "shop", "api")),
        (
            OwnerRef("apps/v1", "StatefulSet", "db"),
            None,
            "patch-template",
            ("statefulsets", "shop", "db"),
        ),
        (
            OwnerRef("apps/v1", "DaemonSet", "ds"),
            None,
            "patch-template",
            ("daemonsets", "shop", "ds"),
        ),
        (RS, None, "delete-pod", ("pods", "shop", "p")),  # a ReplicaSet of its own
        (OwnerRef("batch/v1", "Job", "j"), None, "delete-pod", ("pods", "shop", "p")),
        (None, None, "none", ("", "", "")),  # bare pod: never deleted
    ],
)
def test_restart_action(owner, rs_owner, kind, target):
    action = decide.restart_action(pod("p", owner=owner), rs_owner)
    assert (action.kind, action.key) == (kind, target)


@pytest.mark.parametrize(
    ("last", "now", "expected"), [(None, 5.0, True), (0.0, 5.0, False), (0.0, 10.0, True)]
)
def test_may_restart_rate_limit(last, now, expected):
    assert decide.may_restart(last, now, 10.0) is expected


def test_needs_injection():
    p = pod("p")
    assert not decide.needs_injection(p, "rotor-system")  # injected already
    uninjected = PodInfo("shop", "p", "u", "api", 0, True, False, (DB,), (), True, False, None)
    assert decide.needs_injection(uninjected, "rotor-system")
    assert not decide.needs_injection(uninjected, "shop")  # the controller's own namespace


# -- names and leases ------------------------------------------------------------------------
def test_long_names_are_hashed_and_bounded():
    ref = SecretRef("n" * 63, "x" * 253)
    assert len(source_label(ref)) <= 63
    assert len(object_name("rotor-ro", ref.namespace, ref.name)) <= 253
    assert source_label(SecretRef("shop", "db")) == "shop.db"


@pytest.mark.parametrize(
    ("record", "now", "since", "expected"),
    [
        (None, 0, None, "create"),
        (LeaseRecord("me", "t", 15, 0, "1"), 0, 0, "renew"),
        (LeaseRecord("", "t", 15, 0, "1"), 0, 0, "take"),
        (LeaseRecord("other", "t", 15, 0, "1"), 10, 0, "wait"),
        (LeaseRecord("other", "t", 15, 0, "1"), 15, 0, "take"),
    ],
)
def test_lease_decision(record, now, since, expected):
    assert lease_decision(record, "me", now, since) == expected


# -- PostgreSQL target: the admin Secret, aborts ------------------------------------------------
PG_SPEC = {
    "keys": [{"name": "password", "generator": {"type": "password"}}],
    "target": {
        "postgres": {"host": "pg.shop.svc", "role": "app", "admin": {"secretRef": {"name": "pg"}}}
    },
}


def test_rw_role_may_get_the_admin_secret_of_a_postgres_target_only():
    admins = decide.admin_secrets(_obs(PG_SPEC).spec)
    assert admins == {"pg"}
    objs = decide.desired_rbac(DB, {RW}, (), admins)
    rw_role = next(o for o in objs if o["kind"] == "Role")
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["pg"],
        "verbs": ["get"],
    } in rw_role["rules"]
    plain = decide.desired_rbac(
        DB, {RW}, (), decide.admin_secrets(_obs({"keys": PG_SPEC["keys"]}).spec)
    )
    assert [r["resourceNames"] for r in plain[0]["rules"] if r["resources"] == ["secrets"]] == [
        ["db"]
    ]


def test_an_abort_the_writer_recorded_is_a_rotated_condition_and_one_event():
    aborted = replace(
        V2,
        last_abort="DatabaseUnreachable: cannot connect to PostgreSQL pg.shop.svc:5432/postgres",
        last_abort_at=1_700_000_000.0,
    )
    s = decide.secret_status(
        _obs(PG_SPEC), _source(aborted), pod("a"), (), None, decide.Staleness(False, 0, False), True
    )
    rotated = next(c for c in s.conditions if c.type == "Rotated")
    assert (rotated.status, rotated.reason) == ("False", "DatabaseUnreachable")
    assert "cannot connect to PostgreSQL pg.shop.svc:5432" in rotated.message
    assert "consumers keep version 2" in rotated.message
    assert _ready(s).status == "True"  # consumers still hold a working pair
    events = decide.new_failures([], s.conditions)
    assert [(c.type, c.reason) for c in events] == [("Rotated", "DatabaseUnreachable")]
    assert decide.new_failures([c.to_dict() for c in s.conditions], s.conditions) == []
    ok = decide.secret_status(
        _obs(PG_SPEC), _source(V2), pod("a"), (), None, decide.Staleness(False, 0, False), True
    )
    rotated = next(c for c in ok.conditions if c.type == "Rotated")
    assert (rotated.status, rotated.reason) == ("True", "Committed")


def test_a_failed_overlap_end_the_writer_recorded_is_a_rotated_condition():
    failed = replace(
        V2,
        last_retire_failure="PermissionDenied: overlap end of version 1: PostgreSQL h:5432/db: "
        "role 'app_a' is locked but its sessions were not ended (...); GRANT "
        "pg_signal_backend TO rotor_admin (docs/database.md)",
    )
    s = decide.secret_status(
        _obs(PG_SPEC), _source(failed), pod("a"), (), None, decide.Staleness(False, 0, False), True
    )
    rotated = next(c for c in s.conditions if c.type == "Rotated")
    assert (rotated.status, rotated.reason) == ("False", "PermissionDenied")
    assert rotated.message.startswith("version 2 committed, but the overlap end of version 1")
    assert "GRANT pg_signal_backend TO rotor_admin" in rotated.message
    assert _ready(s).status == "True"
    assert [(c.type, c.reason) for c in decide.new_failures([], s.conditions)] == [
        ("Rotated", "PermissionDenied")
    ]
