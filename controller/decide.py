"""The controller's decisions, as pure functions: no I/O and no clock (``now`` is passed in).

* :func:`staleness` - is the ACL stale, and do we revoke because of it?
* :func:`effective_grants` - the grants to apply, given staleness
* :func:`choose_writer` - the one RW pod that rotates a secret
* :func:`desired_rbac` - the Roles and RoleBindings the grants of a secret need
* :func:`plan_fanout` - which RO views to write and which to delete
* :func:`consumer_statuses`, :func:`secret_status` - what the status says: one function per
  condition (:func:`ready_condition`, :func:`access_condition`, :func:`published_condition`,
  :func:`store_condition`, :func:`rotated_condition`), :func:`failed_status` when nothing else
  can be said (an invalid spec, a source Secret that is not Rotor's)
* :func:`restart_action` - how to restart a pod admitted without injection
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from controller.model import (
    LABEL_SOURCE,
    RESTARTED_AT,
    OwnerRef,
    PodInfo,
    RotatingSecretObs,
    SourceObs,
    ViewObs,
    Want,
    object_name,
    source_label,
)
from rotor import API_GROUP
from rotor import status as st
from rotor.acl import AclSnapshot, Grant, SkippedEntry
from rotor.layout import (
    ANN_CHECKSUM,
    ANN_NEXT_ROTATION,
    ANN_POSTGRES_ADMIN_FOR,
    ANN_PREVIOUS_EXPIRES,
    ANN_ROTATED_AT,
    ANN_VERSION,
    LABEL_MANAGED_BY,
    LABEL_SECRET,
    LABEL_VIEW_OF,
    MANAGED_BY,
    SecretState,
    format_time,
    view_name,
)
from rotor.names import SecretRef
from rotor.protocol import expire_previous, merge_data
from rotor.settings.controller import ControllerSettings
from rotor.spec import RotatingSecretSpec

Obj = dict[str, Any]


# -- ACL staleness -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Staleness:
    stale: bool
    """The last sync failed: the ACL in use is the last good one."""
    age: float
    """Seconds since the last good sync (0 when fresh; inf when there never was one)."""
    revoke: bool
    """Stale for longer than maxStaleness with onStale=revoke: apply no grants at all."""


def staleness(
    now: float, last_ok: float | None, failing: bool, settings: ControllerSettings
) -> Staleness:
    if last_ok is None:
        return Staleness(stale=True, age=float("inf"), revoke=settings.on_stale == "revoke")
    age = max(0.0, now - last_ok)
    if not failing:
        return Staleness(stale=False, age=0.0, revoke=False)
    return Staleness(
        stale=True,
        age=age,
        revoke=settings.on_stale == "revoke" and age > settings.max_staleness,
    )


def effective_grants(acl: AclSnapshot | None, stale: Staleness) -> frozenset[Grant]:
    if acl is None or stale.revoke:
        return frozenset()
    return acl.grants


# -- writer ----------------------------------------------------------------------------------------
def choose_writer(
    secret: SecretRef, pods: Iterable[PodInfo], grants: frozenset[Grant], current: str | None
) -> PodInfo | None:
    """The writer: a Ready, not terminating pod in the secret's namespace that asks to write it
    and whose principal holds the RW grant. The current writer keeps the role while it
    qualifies; otherwise the oldest (then the first by name) is chosen, so every replica of the
    controller picks the same one."""
    candidates = [
        p
        for p in pods
        if p.namespace == secret.namespace
        and secret in p.rw
        and p.ready
        and not p.deleting
        and Grant(secret, p.principal, "rw") in grants
    ]
    for p in candidates:
        if p.name == current:
            return p
    return min(candidates, key=lambda p: (p.created, p.name), default=None)


def has_writer_grant(secret: SecretRef, grants: Iterable[Grant]) -> bool:
    return any(g.secret == secret and g.mode == "rw" for g in grants)


# -- RBAC ------------------------------------------------------------------------------------------
def rbac_name(mode: str, secret: SecretRef) -> str:
    if mode == "rw":
        return object_name("rotor-rw", secret.name)
    return object_name("rotor-ro", secret.namespace, secret.name)


def admin_secrets(spec: RotatingSecretSpec) -> frozenset[str]:
    """The Secrets the writer reads besides the source: a PostgreSQL target's admin credential."""
    pg = spec.target.postgres if spec.target is not None else None
    return (
        frozenset([pg.admin.secret_ref]) if pg is not None and pg.admin.secret_ref else frozenset()
    )


def admin_secret_problem(secret: SecretRef, name: str, obj: Mapping[str, Any] | None) -> str:
    """Why the writer of ``secret`` may not read the admin Secret ``name`` (``obj``, None when
    absent), or ``""``. A spec edit must not grant: the Secret itself opts in by naming the
    RotatingSecret in ``rotor.dev/postgres-admin-for``, and no Secret Rotor manages (a source, a
    view) is ever one."""
    where = f"spec.target.postgres.admin.secretRef: Secret {secret.namespace}/{name}"
    if obj is None:
        return f"{where} does not exist (or the controller may not read it)"
    m = obj.get("metadata") or {}
    labels = m.get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) == MANAGED_BY or LABEL_SECRET in labels:
        return f"{where} is a Secret Rotor manages; give the admin credential its own Secret"
    named = str((m.get("annotations") or {}).get(ANN_POSTGRES_ADMIN_FOR, ""))
    if secret.name not in {n.strip() for n in named.split(",")}:
        return (
            f"{where} does not name {secret.name!r} in its annotation {ANN_POSTGRES_ADMIN_FOR}; "
            f"whoever owns it adds: kubectl annotate secret -n {secret.namespace} {name} "
            f"{ANN_POSTGRES_ADMIN_FOR}={secret.name}"
        )
    return ""


def _labels(secret: SecretRef) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SOURCE: source_label(secret)}


def desired_rbac(
    secret: SecretRef,
    grants: Iterable[Grant],
    external_stores: Iterable[str] = (),
    admin_secrets: Iterable[str] = (),
) -> list[Obj]:
    """Roles and RoleBindings, every rule scoped by ``resourceNames``.

    RW principals (the secret's namespace): get/list/watch/patch/update of the source Secret,
    get/list/watch of the RotatingSecret (the agent follows its spec and ``status.writer`` with a
    list+watch by name), and get of each ExternalStore the secret references (the writer reads
    the store's spec to write it; ``external_stores``: their names), and get of the admin
    credential Secret of a PostgreSQL target (``admin_secrets``). RO principals:
    get/list/watch of the view ``rotor.<ns>.<name>`` in their own namespace - only when some
    principal holds the RW grant (an RO consumer depends on a writer). ``list``/``watch``
    scoped by ``resourceNames`` are authorized only for requests with
    ``fieldSelector=metadata.name=<name>``, which is how the agent watches one object.
    """
    mine = sorted(g for g in grants if g.secret == secret)
    by_role: dict[tuple[str, str], list[str]] = {}
    writer = has_writer_grant(secret, mine)
    for g in mine:
        if g.mode == "rw":
            by_role.setdefault(("rw", secret.namespace), []).append(g.principal.service_account)
        elif writer:
            by_role.setdefault(("ro", g.principal.namespace), []).append(
                g.principal.service_account
            )
    out: list[Obj] = []
    for (mode, namespace), accounts in sorted(by_role.items()):
        if mode == "rw":
            rules = _rw_rules(secret, external_stores, admin_secrets)
        else:
            rules = [_rule("", "secrets", [view_name(secret.namespace, secret.name)], READ)]
        out.extend(_role_and_binding(secret, rbac_name(mode, secret), namespace, rules, accounts))
    return out


READ = ("get", "list", "watch")


def _rule(group: str, resource: str, names: list[str], verbs: Iterable[str]) -> Obj:
    return {
        "apiGroups": [group],
        "resources": [resource],
        "resourceNames": names,
        "verbs": list(verbs),
    }


def _rw_rules(
    secret: SecretRef, external_stores: Iterable[str], admin_secrets: Iterable[str]
) -> list[Obj]:
    """The writer's rules: its source Secret, its RotatingSecret, a PostgreSQL target's admin
    credential and the ExternalStores it writes."""
    rules = [
        _rule("", "secrets", [secret.name], (*READ, "patch", "update")),
        _rule(API_GROUP, "rotatingsecrets", [secret.name], READ),
    ]
    admins = sorted(set(admin_secrets) - {secret.name})
    if admins:
        rules.append(_rule("", "secrets", admins, ["get"]))
    stores = sorted(set(external_stores))
    if stores:
        rules.append(_rule(API_GROUP, "externalstores", stores, ["get"]))
    return rules


def _role_and_binding(
    secret: SecretRef, name: str, namespace: str, rules: list[Obj], accounts: Iterable[str]
) -> list[Obj]:
    metadata = {"name": name, "namespace": namespace, "labels": _labels(secret)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata,
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": dict(metadata),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": sa, "namespace": namespace}
            for sa in sorted(set(accounts))
        ],
    }
    return [role, binding]


# -- fan-out ---------------------------------------------------------------------------------------
HoldReason = Literal["", "NotCommitted", "ChecksumMismatch", "NoValue", "StoreNotSynced"]
StoreState = Literal["none", "synced", "behind", "unavailable", "unverified"]
"""External stores of a committed version: none configured, every store holds it, one does not,
one did not answer, or not checked (nothing to publish yet, or a store is missing/misconfigured)."""


@dataclass(frozen=True)
class StoreSync:
    state: StoreState = "none"
    message: str = ""


@dataclass(frozen=True)
class FanoutPlan:
    upsert: tuple[str, ...] = ()
    """Consumer namespaces whose view gets the current version."""
    delete: tuple[str, ...] = ()
    """Consumer namespaces whose view goes (grant revoked, or no writer)."""
    hold: HoldReason = ""
    """Why nothing is published now (the views keep what they have)."""


def granted_ro_namespaces(secret: SecretRef, grants: Iterable[Grant]) -> frozenset[str]:
    mine = [g for g in grants if g.secret == secret]
    if not has_writer_grant(secret, mine):
        return frozenset()
    return frozenset(g.principal.namespace for g in mine if g.mode == "ro")


def plan_fanout(
    source: SourceObs | None,
    granted: frozenset[str],
    views: Mapping[str, ViewObs],
    stores: StoreState = "none",
) -> FanoutPlan:
    """Publish only a committed value whose checksum annotation matches its data and that every
    external store holds; delete views of namespaces that lost their grant (even while
    holding)."""
    delete = tuple(sorted(ns for ns in views if ns not in granted))
    state = source.state if source else None
    if source is None or state is None or not state.has_value:
        return FanoutPlan(delete=delete, hold="NoValue")
    if state.phase != "committed":
        return FanoutPlan(delete=delete, hold="NotCommitted")
    if source.checksum_annotation != state.checksum:
        return FanoutPlan(delete=delete, hold="ChecksumMismatch")
    if stores not in ("none", "synced"):
        return FanoutPlan(delete=delete, hold="StoreNotSynced")
    expires = format_time(state.previous_expires) if state.previous_expires is not None else ""
    upsert = tuple(
        sorted(
            ns
            for ns in granted
            if ns not in views
            or views[ns].version != state.version
            or views[ns].checksum != state.checksum
            or views[ns].previous_expires != expires  # e.g. the previous value has expired
        )
    )
    return FanoutPlan(upsert=upsert, delete=delete)


def for_views(source: SourceObs | None, now: float) -> SourceObs | None:
    """The source as the views must show it at ``now``: without a previous value whose overlap
    has ended, even while the source still holds it (its writer drops it in its own time, and a
    source with no writer never does)."""
    if source is None or source.state is None:
        return source
    expired = expire_previous(source.state, now)
    return source if expired is source.state else replace(source, state=expired)


def previous_expiry_in(source: SourceObs | None, now: float) -> float | None:
    """Seconds until the views' previous value expires (to reconcile then), if it will."""
    state = source.state if source else None
    if state is None or not state.previous or state.previous_expires is None:
        return None
    return max(0.0, state.previous_expires - now)


def view_body(secret: SecretRef, state: SecretState, namespace: str) -> Obj:
    """The RO view: current and previous values only, never pending."""
    annotations = {ANN_VERSION: str(state.version), ANN_CHECKSUM: state.checksum}
    if state.rotated_at is not None:
        annotations[ANN_ROTATED_AT] = format_time(state.rotated_at)
    annotations[ANN_PREVIOUS_EXPIRES] = (
        format_time(state.previous_expires) if state.previous_expires is not None else ""
    )
    annotations[ANN_NEXT_ROTATION] = (
        format_time(state.next_rotation) if state.next_rotation is not None else ""
    )  # readers put it in their .rotor.json
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": view_name(secret.namespace, secret.name),
            "namespace": namespace,
            "labels": {**_labels(secret), LABEL_VIEW_OF: source_label(secret)},
            "annotations": annotations,
        },
        "data": state.view_data(),
    }


def view_patch(
    secret: SecretRef, state: SecretState, namespace: str, old_keys: Iterable[str]
) -> Obj:
    """A merge patch turning an existing view into :func:`view_body` (stale keys set to null)."""
    body = view_body(secret, state, namespace)
    body["data"] = merge_data(body["data"], old_keys)
    return body


# -- status ----------------------------------------------------------------------------------------
def consumer_statuses(
    secret: SecretRef,
    wants: Iterable[Want],
    grants: frozenset[Grant],
    acl: AclSnapshot | None,
    source: SourceObs | None,
    views: Mapping[str, ViewObs],
) -> tuple[st.ConsumerStatus, ...]:
    """One entry per principal and mode that asks for, or holds a grant of, this secret."""
    denied = {
        (r.principal, r.mode)
        for r in (acl.requests if acl else ())
        if r.secret == secret and r.state == "denied"
    }
    writer = has_writer_grant(secret, grants)
    version = source.state.version if source and source.state else 0
    keys = {(w.principal, w.mode) for w in wants if w.secret == secret}
    keys |= {(g.principal, g.mode) for g in grants if g.secret == secret}
    out = []
    for principal, mode in sorted(keys):
        granted = Grant(secret, principal, mode) in grants
        if granted and mode == "rw":
            out.append(st.ConsumerStatus(str(principal), "rw", "granted", version=version))
        elif granted and not writer:
            out.append(st.ConsumerStatus(str(principal), "ro", "pending", st.R_NO_WRITER))
        elif granted:
            view = views.get(principal.namespace)
            out.append(
                st.ConsumerStatus(
                    str(principal), "ro", "granted", version=view.version if view else 0
                )
            )
        elif (principal, mode) in denied:
            out.append(st.ConsumerStatus(str(principal), mode, "denied", st.R_DENIED))
        else:
            out.append(st.ConsumerStatus(str(principal), mode, "pending", st.R_AWAITING_APPROVAL))
    return tuple(out)


def _cond(type_: str, ok: bool | None, reason: str, message: str) -> st.Condition:
    status: st.ConditionStatus = "Unknown" if ok is None else "True" if ok else "False"
    return st.Condition(type_, status, reason, message)


def failed_status(
    obs: RotatingSecretObs,
    version: int,
    consumers: Sequence[st.ConsumerStatus],
    reason: str,
    message: str,
    why: str,
) -> st.RotatingSecretStatus:
    """``phase: Failed``: ``Ready=False`` with ``reason`` and ``message``; the other conditions
    are Unknown with the same reason (``why`` says so)."""
    return st.RotatingSecretStatus(
        phase="Failed",
        version=version,
        consumers=tuple(consumers),
        observed_generation=obs.generation,
        conditions=(
            _cond(st.READY, False, reason, message),
            _cond(st.ACCESS_GRANTED, None, reason, why),
            _cond(st.PUBLISHED, None, reason, why),
            _cond(st.EXTERNAL_STORE_SYNCED, None, reason, why),
        ),
    )


def source_not_owned_status(obs: RotatingSecretObs, message: str) -> st.RotatingSecretStatus:
    """A Secret of the source's name that another owner controls: nothing is published."""
    return failed_status(
        obs, 0, (), st.R_SOURCE_NOT_OWNED, message, "the source Secret is not Rotor's"
    )


def secret_status(
    obs: RotatingSecretObs,
    source: SourceObs | None,
    writer: PodInfo | None,
    consumers: Sequence[st.ConsumerStatus],
    plan: FanoutPlan | None,
    stale: Staleness,
    acl_known: bool,
    stores: StoreSync | None = None,
    skipped: Sequence[SkippedEntry] = (),
) -> st.RotatingSecretStatus:
    """Phase, version, writer, rotation times, consumers and the five conditions."""
    state = source.state if source else None
    version = state.version if state else 0
    if obs.error is not None or obs.spec is None:
        message = str(obs.error) if obs.error else "spec is missing"
        return failed_status(
            obs, version, consumers, st.R_INVALID_SPEC, message, "the spec is invalid"
        )
    spec = obs.spec
    access = access_condition(consumers, stale, skipped, obs.ref)
    published = published_condition(consumers, version, plan, stores)
    ready = ready_condition(obs, spec, writer, state, consumers, access, published, acl_known)
    conds = (
        ready,
        access,
        published,
        store_condition(spec, stores),
        rotated_condition(state),
    )
    last = state.rotated_at if state else None
    return st.RotatingSecretStatus(
        phase=phase_of(state),
        version=version,
        writer=st.WriterRef(writer.name, writer.service_account) if writer else None,
        last_rotation=last,
        next_rotation=(last + spec.rotation.interval) if last and not spec.suspend else None,
        consumers=tuple(consumers),
        conditions=conds,
        observed_generation=obs.generation,
        rotate_requested=obs.rotate_now,
    )


def phase_of(state: SecretState | None) -> st.Phase:
    if state is None or not state.has_value:
        return "Pending"
    return "Rotating" if state.phase == "pending" else "Active"


def _stale_access(stale: Staleness) -> st.Condition:
    reason = st.R_ACL_REVOKED_STALE if stale.revoke else st.R_ACL_STALE
    age = "never read" if stale.age == float("inf") else f"unreachable for {stale.age:.0f}s"
    what = "applying no grants (onStale=revoke)" if stale.revoke else "keeping the last good ACL"
    return _cond(st.ACCESS_GRANTED, None, reason, f"ACL backend {age}; {what}")


def approve_commands(secret: SecretRef | None, pending: Sequence[st.ConsumerStatus]) -> str:
    """The exact commands that approve ``pending`` requests (the first three)."""
    if secret is None or not pending:
        return ""
    lines = [f"rotor acl approve {secret} {c.principal} {c.access}" for c in pending[:3]]
    return "; approve with: " + "; ".join(lines) + (" ..." if len(pending) > 3 else "")


def _rw_access(
    consumers: Sequence[st.ConsumerStatus], secret: SecretRef | None = None
) -> st.Condition:
    """AccessGranted from the RW consumers: granted, awaiting approval, denied, or none; the
    pending requests are named with the command that approves them."""
    rw_wanted = [c for c in consumers if c.access == "rw"]
    rw_granted = [c for c in rw_wanted if c.state == "granted"]
    pending = [c for c in consumers if c.reason == st.R_AWAITING_APPROVAL]
    if rw_granted:
        writers = ", ".join(c.principal for c in rw_granted)
        waiting = ", ".join(f"{c.principal} {c.access}" for c in pending)
        text = f"; awaiting approval: {waiting}" if waiting else ""
        return _cond(
            st.ACCESS_GRANTED,
            True,
            st.R_GRANTED,
            f"writers: {writers}{text}{approve_commands(secret, pending)}",
        )
    denied = [c for c in rw_wanted if c.state == "denied"]
    if rw_wanted and len(denied) == len(rw_wanted):
        who = ", ".join(c.principal for c in denied)
        return _cond(
            st.ACCESS_GRANTED,
            False,
            st.R_DENIED,
            f"RW access of {who} was denied in the ACL; nothing is written until an admin "
            f"reverses that (rotor acl approve {secret or '<secret>'} {denied[0].principal} rw)",
        )
    if rw_wanted:
        who = ", ".join(c.principal for c in rw_wanted if c.state != "denied")
        return _cond(
            st.ACCESS_GRANTED,
            False,
            st.R_AWAITING_APPROVAL,
            f"RW access requested by {who} awaits an admin's approval; the writer's pods wait "
            f"for it{approve_commands(secret, pending)}",
        )
    return _cond(
        st.ACCESS_GRANTED,
        False,
        st.R_NO_REQUESTS,
        "no workload asks to write this secret (annotate one with rotor.dev/rw)",
    )


def access_condition(
    consumers: Sequence[st.ConsumerStatus],
    stale: Staleness,
    skipped: Sequence[SkippedEntry] = (),
    secret: SecretRef | None = None,
) -> st.Condition:
    """``AccessGranted``: the ACL's staleness first, then the RW grants; unusable ACL entries
    for the secret are named (and are the reason unless a writer is granted)."""
    if stale.stale:
        return _stale_access(stale)
    access = _rw_access(consumers, secret)
    if not skipped:
        return access
    what = "; ".join(str(e) for e in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
    text = f"{len(skipped)} unusable ACL entries for this secret left out: {what}"
    if access.status == "True":
        return replace(access, message=f"{access.message}; {text}")
    return _cond(st.ACCESS_GRANTED, False, st.R_ACL_ENTRY_SKIPPED, f"{text}; {access.message}")


_HOLD_REASONS = {
    "NoValue": st.R_NOT_COMMITTED,
    "NotCommitted": st.R_NOT_COMMITTED,
    "ChecksumMismatch": st.R_CHECKSUM_MISMATCH,
    "StoreNotSynced": st.R_STORE_NOT_SYNCED,
}
_HOLD_TEXT = {
    "NoValue": "no committed value yet",
    "NotCommitted": "a rotation is pending; views keep the last committed version",
    "ChecksumMismatch": "the source Secret's checksum does not match its data; "
    "nothing is published until the writer repairs it",
    "StoreNotSynced": "an external store does not hold the committed version: ",
}


def published_condition(
    consumers: Sequence[st.ConsumerStatus],
    version: int,
    plan: FanoutPlan | None,
    stores: StoreSync | None = None,
) -> st.Condition:
    """``Published``: held (and why), no consumer, consumers behind, or all up to date."""
    granted_ro = [c for c in consumers if c.access == "ro" and c.state == "granted"]
    behind = [c for c in granted_ro if (c.version or 0) != version]
    if plan is not None and plan.hold and granted_ro:
        text = _HOLD_TEXT[plan.hold]
        if plan.hold == "StoreNotSynced":
            text += stores.message if stores else ""
        return _cond(st.PUBLISHED, plan.hold == "NotCommitted", _HOLD_REASONS[plan.hold], text)
    orphaned = [c for c in consumers if c.access == "ro" and c.reason == st.R_NO_WRITER]
    if not granted_ro and orphaned:
        return _cond(
            st.PUBLISHED,
            False,
            st.R_NO_WRITER,
            f"{len(orphaned)} RO consumers hold their grant, but no principal holds the RW "
            "grant, so nothing is published to them (their views go until a writer is granted)",
        )
    if not granted_ro:
        return _cond(st.PUBLISHED, True, st.R_NO_CONSUMERS, "no granted RO consumer")
    if behind:
        return _cond(
            st.PUBLISHED,
            False,
            st.R_PUBLISHING,
            f"{len(behind)} of {len(granted_ro)} consumers behind version {version}",
        )
    return _cond(
        st.PUBLISHED, True, st.R_UP_TO_DATE, f"{len(granted_ro)} consumers hold version {version}"
    )


def store_condition(spec: RotatingSecretSpec, stores: StoreSync | None) -> st.Condition:
    """``ExternalStoreSynced``: none configured, in sync, behind, unavailable or not verified."""
    sync = stores or StoreSync()
    if not spec.external_stores:
        return _cond(st.EXTERNAL_STORE_SYNCED, True, st.R_NO_EXTERNAL_STORES, "none configured")
    if sync.state == "synced":
        return _cond(st.EXTERNAL_STORE_SYNCED, True, st.R_IN_SYNC, sync.message)
    if sync.state == "behind":
        return _cond(st.EXTERNAL_STORE_SYNCED, False, st.R_STORE_NOT_SYNCED, sync.message)
    if sync.state == "unavailable":
        return _cond(st.EXTERNAL_STORE_SYNCED, None, st.R_STORE_UNAVAILABLE, sync.message)
    return _cond(
        st.EXTERNAL_STORE_SYNCED,
        None,
        st.R_NOT_VERIFIED,
        sync.message or "checked when a committed version is to be published",
    )


def ready_condition(
    obs: RotatingSecretObs,
    spec: RotatingSecretSpec,
    writer: PodInfo | None,
    state: SecretState | None,
    consumers: Sequence[st.ConsumerStatus],
    access: st.Condition,
    published: st.Condition,
    acl_known: bool,
) -> st.Condition:
    """``Ready``: the first of deleting, suspended, no writer, no value, a stale ACL, not
    published; else Ready."""
    if obs.deleting:
        return _cond(st.READY, False, st.R_DELETING, "removing views and bindings")
    if spec.suspend:
        return _cond(st.READY, False, st.R_SUSPENDED, "rotation is suspended (spec.suspend)")
    if writer is None:
        rw_granted = any(c.access == "rw" and c.state == "granted" for c in consumers)
        why = (
            "no Ready pod of a granted writer"
            if rw_granted
            else "no workload holds the RW grant for this secret"
        )
        return _cond(st.READY, False, st.R_NO_WRITER, why)
    if state is None or not state.has_value:
        return _cond(st.READY, False, st.R_WAITING_FOR_VALUE, f"waiting for {writer.name}")
    if access.status == "Unknown" and acl_known:
        return _cond(st.READY, True, access.reason, access.message)
    if published.status != "True":
        return _cond(st.READY, False, published.reason, published.message)
    return _cond(st.READY, True, st.R_READY, f"version {state.version} published")


def rotated_condition(state: SecretState | None) -> st.Condition:
    """``Rotated``: False with the writer's recorded reason while its last rotation aborted
    (unreachable database, refused admin login, ...); consumers keep the committed version."""
    if state is not None and state.last_abort:
        reason, _, message = state.last_abort.partition(":")
        reason = reason.strip()
        if not reason.isalnum() or not reason[:1].isupper():
            reason, message = st.R_ROTATION_ABORTED, state.last_abort
        at = f" at {format_time(state.last_abort_at)}" if state.last_abort_at else ""
        keep = (
            f"; consumers keep version {state.version}"
            if state.has_value
            else "; no value is committed yet"
        )
        return _cond(st.ROTATED, False, reason, f"rotation aborted{at}: {message.strip()}{keep}")
    if state is None or not state.has_value:
        return _cond(st.ROTATED, None, st.R_WAITING_FOR_VALUE, "no rotation has committed yet")
    if state.last_retire_failure:  # e.g. the retired role's sessions live on (no grant)
        reason, _, message = state.last_retire_failure.partition(":")
        if not reason.isalnum() or not reason[:1].isupper():
            reason, message = st.R_ROTATION_ABORTED, state.last_retire_failure
        text = f"version {state.version} committed, but the {message.strip()}"
        return _cond(st.ROTATED, False, reason, text)
    return _cond(st.ROTATED, True, st.R_COMMITTED, f"version {state.version} committed")


FAILURE_REASONS = frozenset(
    {
        st.R_INVALID_SPEC,
        st.R_SOURCE_NOT_OWNED,
        st.R_NO_WRITER,
        st.R_AWAITING_APPROVAL,
        st.R_DENIED,
        st.R_ACL_STALE,
        st.R_ACL_REVOKED_STALE,
        st.R_CHECKSUM_MISMATCH,
        st.R_STORE_NOT_SYNCED,
        st.R_STORE_UNAVAILABLE,
    }
)


def new_failures(
    observed: Sequence[Mapping[str, Any]], desired: Iterable[st.Condition]
) -> list[st.Condition]:
    """Conditions that just turned into a failure reason: each reason deserves one Warning
    Event (the first condition that carries it, which has the most specific message)."""
    old = {(c.get("type"), c.get("reason")) for c in observed if isinstance(c, Mapping)}
    out: list[st.Condition] = []
    seen: set[str] = set()
    for c in desired:
        failing = c.reason in FAILURE_REASONS or (c.type == st.ROTATED and c.status == "False")
        if c.status == "True" or not failing or c.reason in seen:
            continue
        seen.add(c.reason)
        if (c.type, c.reason) not in old:
            out.append(c)
    return out


# -- restarts of pods admitted without injection ---------------------------------------------------
@dataclass(frozen=True)
class RestartAction:
    kind: Literal["patch-template", "delete-pod", "evict-pod", "none"]
    api_version: str = ""
    plural: str = ""
    namespace: str = ""
    name: str = ""
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.plural, self.namespace, self.name)


_TEMPLATE_OWNERS = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}


def needs_injection(pod: PodInfo, own_namespace: str) -> bool:
    return (
        pod.wants_rotor and not pod.injected and not pod.deleting and pod.namespace != own_namespace
    )


def restart_action(
    pod: PodInfo, replica_set_owner: OwnerRef | None, method: str = "template"
) -> RestartAction:
    """Restart through the owner: patch the pod template of the Deployment (through its
    ReplicaSet), StatefulSet or DaemonSet; delete a pod owned by another controller (it makes a
    new one); leave a bare pod alone. With ``method="evict"`` every controller-owned pod is
    evicted instead (its owner makes a new one; a PodDisruptionBudget is respected)."""
    owner = pod.owner
    if owner is None:
        return RestartAction("none", reason="a bare pod (no controller owns it): not deleted")
    if method == "evict":
        return RestartAction("evict-pod", "v1", "pods", pod.namespace, pod.name)
    if owner.kind == "ReplicaSet" and replica_set_owner is not None:
        owner = replica_set_owner
    if owner.kind in _TEMPLATE_OWNERS:
        return RestartAction(
            "patch-template", "apps/v1", _TEMPLATE_OWNERS[owner.kind], pod.namespace, owner.name
        )
    return RestartAction("delete-pod", "v1", "pods", pod.namespace, pod.name)


def may_restart(last_restart: float | None, now: float, min_interval: float) -> bool:
    """At most one restart per owner per ``min_interval`` (a webhook that stays down must not
    turn the controller into a restart loop)."""
    return last_restart is None or now - last_restart >= min_interval


def restart_patch(now: float) -> Obj:
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: format_time(now)}}}}}


def eviction(namespace: str, name: str) -> Obj:
    """The body of ``POST pods/<name>/eviction`` (``policy/v1``)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    }
