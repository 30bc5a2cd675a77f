"""What the controller observes, read from raw API objects into small frozen records.

Readers here are pure (dict in, record out) and keep only what decisions need, so the in-memory
index of thousands of objects stays small. Label and field selectors are applied on the client
side too (:func:`is_managed`), because the emulator the tests use ignores them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from controller.selector import LabelSelector
from rotor import annotations as ann
from rotor.errors import InvalidSpec
from rotor.layout import (
    ANN_CHECKSUM,
    ANN_PREVIOUS_EXPIRES,
    ANN_ROTATE_REQUESTED,
    ANN_VERSION,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SecretState,
)
from rotor.names import Principal, SecretRef, check_name
from rotor.protocol import publishable
from rotor.spec import RotatingSecretSpec

Mode = Literal["rw", "ro"]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}
LABEL_SOURCE = "rotor.dev/source"
"""On Roles, RoleBindings and RO views the controller makes: the source, as a label value."""
FINALIZER = "rotor.dev/cleanup"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def parse_timestamp(text: object) -> float:
    """RFC 3339 from the API server; 0.0 when absent or unreadable (sorts first, stays stable)."""
    if not isinstance(text, str) or not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def source_label(ref: SecretRef) -> str:
    """A label value naming ``ref`` (``ns.name``; hashed when longer than 63 characters)."""
    text = f"{ref.namespace}.{ref.name}"
    if len(text) <= 63:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[:52].rstrip('.-')}-{digest}"


def object_name(*parts: str) -> str:
    """A DNS-1123 subdomain made of ``parts`` joined by dots (hashed past 253 characters)."""
    text = ".".join(parts)
    if len(text) <= 253:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[:236].rstrip('.-')}-{digest}"


def is_managed(obj: Mapping[str, Any]) -> bool:
    return (meta(obj).get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY


# -- RotatingSecret ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusDigest:
    """What the controller keeps of a RotatingSecret's status: enough to decide, to merge
    conditions and to see "unchanged", not the whole document (thousands of them add up)."""

    digest: str = ""
    """sha256 of the status as a merge patch leaves it (no None values), canonical JSON."""
    writer: str | None = None
    phase: str = ""
    version: int = 0
    behind: int = 0
    """Granted RO consumers not at ``version``."""
    conditions: tuple[tuple[str, str, str, str], ...] = ()
    """(type, status, reason, lastTransitionTime)."""

    def condition_dicts(self) -> list[dict[str, str]]:
        return [
            {"type": t, "status": s, "reason": r, "lastTransitionTime": ltt}
            for t, s, r, ltt in self.conditions
        ]


def _prune(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def status_digest(status: Mapping[str, Any] | None) -> StatusDigest:
    status = _prune(status or {})
    raw_version = status.get("version")
    version = raw_version if isinstance(raw_version, int) else 0
    behind = sum(
        1
        for c in status.get("consumers") or []
        if isinstance(c, Mapping)
        and c.get("access") == "ro"
        and c.get("state") == "granted"
        and (c.get("version") or 0) != version
    )
    return StatusDigest(
        digest=hashlib.sha256(json.dumps(status, sort_keys=True).encode()).hexdigest(),
        writer=(status.get("writer") or {}).get("pod") or None,
        phase=str(status.get("phase") or ""),
        version=version,
        behind=behind,
        conditions=tuple(
            (
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason", "")),
                str(c.get("lastTransitionTime", "")),
            )
            for c in status.get("conditions") or []
            if isinstance(c, Mapping)
        ),
    )


@dataclass(frozen=True)
class RotatingSecretObs:
    ref: SecretRef
    uid: str
    generation: int | None
    spec: RotatingSecretSpec | None
    error: InvalidSpec | None
    deleting: bool
    finalizers: tuple[str, ...]
    rotate_now: str
    resource_version: str
    status: StatusDigest


def read_rotating_secret(obj: Mapping[str, Any]) -> RotatingSecretObs:
    m = meta(obj)
    spec: RotatingSecretSpec | None = None
    error: InvalidSpec | None = None
    try:
        spec = RotatingSecretSpec.from_dict(obj.get("spec"))
    except InvalidSpec as e:
        error = e
    status = obj.get("status")
    gen = m.get("generation")
    return RotatingSecretObs(
        ref=SecretRef(str(m.get("namespace", "")), str(m.get("name", ""))),
        uid=str(m.get("uid", "")),
        generation=gen if isinstance(gen, int) else None,
        spec=spec,
        error=error,
        deleting=bool(m.get("deletionTimestamp")),
        finalizers=tuple(m.get("finalizers") or ()),
        rotate_now=str((m.get("annotations") or {}).get(ann.ROTATE_NOW, "")),
        resource_version=str(m.get("resourceVersion", "")),
        status=status_digest(status if isinstance(status, Mapping) else None),
    )


# -- Secrets -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceObs:
    """A source Secret; ``state`` is None when its data or annotations do not decode."""

    ref: SecretRef
    state: SecretState | None
    checksum_annotation: str
    rotate_requested: str
    owned: bool
    labelled: bool

    @property
    def publishable(self) -> bool:
        """A committed value whose checksum annotation matches its data (before store checks;
        :func:`rotor.protocol.publishable`)."""
        return publishable(self.state, self.checksum_annotation)


def read_source(obj: Mapping[str, Any], owner_uid: str | None = None) -> SourceObs:
    m = meta(obj)
    annotations = dict(m.get("annotations") or {})
    try:
        state: SecretState | None = SecretState.from_secret(obj.get("data"), annotations)
    except InvalidSpec:
        state = None
    owners = m.get("ownerReferences") or []
    return SourceObs(
        ref=SecretRef(str(m.get("namespace", "")), str(m.get("name", ""))),
        state=state,
        checksum_annotation=annotations.get(ANN_CHECKSUM, ""),
        rotate_requested=annotations.get(ANN_ROTATE_REQUESTED, ""),
        owned=owner_uid is None or any(o.get("uid") == owner_uid for o in owners),
        labelled=bool(m.get("labels", {}).get("rotor.dev/secret")),
    )


@dataclass(frozen=True)
class ViewObs:
    """An RO view in a consumer namespace."""

    namespace: str
    name: str
    source_label: str
    version: int
    checksum: str
    previous_expires: str = ""
    """Its ``rotor.dev/previous-expires`` annotation ("" when it holds no previous value)."""


def read_view(obj: Mapping[str, Any]) -> ViewObs:
    m = meta(obj)
    a = m.get("annotations") or {}
    try:
        version = int(a.get(ANN_VERSION, "0"))
    except ValueError:
        version = -1
    return ViewObs(
        namespace=str(m.get("namespace", "")),
        name=str(m.get("name", "")),
        source_label=str((m.get("labels") or {}).get(LABEL_SOURCE, "")),
        version=version,
        checksum=str(a.get(ANN_CHECKSUM, "")),
        previous_expires=str(a.get(ANN_PREVIOUS_EXPIRES, "")),
    )


# -- Workloads and pods --------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Want:
    """One access a workload asks for."""

    secret: SecretRef
    principal: Principal
    mode: Mode


@dataclass(frozen=True)
class OwnerRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    service_account: str
    created: float
    ready: bool
    deleting: bool
    rw: tuple[SecretRef, ...]
    ro: tuple[SecretRef, ...]
    wants_rotor: bool
    injected: bool
    owner: OwnerRef | None

    @property
    def principal(self) -> Principal:
        return Principal(self.namespace, self.service_account)


def _service_account(pod_spec: Mapping[str, Any]) -> str:
    return str(pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default")


def _valid_service_account(name: str) -> bool:
    """A real API server refuses any other name; the emulator and a hostile object may not, and
    the name goes into the ACL document and RoleBindings (rotor/names.py rules)."""
    try:
        check_name(name, "spec.serviceAccountName")
    except InvalidSpec:
        return False
    return True


def _wants(
    annotations: Mapping[str, str], namespace: str, service_account: str
) -> tuple[Want, ...]:
    req = ann.parse_pod(annotations, namespace)
    if req is None:
        return ()
    check_name(service_account, "spec.serviceAccountName")  # a pod with it asks for nothing
    p = Principal(namespace, service_account)
    return tuple(sorted({Want(s, p, "rw") for s in req.rw} | {Want(s, p, "ro") for s in req.ro}))


def requests_from_workload(obj: Mapping[str, Any]) -> tuple[Want, ...]:
    """What a Deployment, StatefulSet, DaemonSet (its pod template) or Pod asks for.

    Raises :class:`~rotor.errors.AnnotationError` for malformed annotations."""
    m = meta(obj)
    namespace = str(m.get("namespace", ""))
    if obj.get("kind") == "Pod":
        pod_meta, pod_spec = m, obj.get("spec") or {}
    else:
        template = (obj.get("spec") or {}).get("template") or {}
        pod_meta, pod_spec = meta(template), template.get("spec") or {}
    return _wants(pod_meta.get("annotations") or {}, namespace, _service_account(pod_spec))


@dataclass(frozen=True)
class WorkloadObs:
    """What is kept of a Deployment, StatefulSet, DaemonSet or Job whose pod template asks for
    Rotor: its requests and how to list its pods; nothing of an unannotated one."""

    kind: str
    namespace: str
    name: str
    selector: str | None
    """Its ``spec.selector`` as a label selector string; None when empty or unreadable (then its
    pods are not listed: an empty selector would select the whole namespace)."""
    wants: tuple[Want, ...]
    wants_rotor: bool
    """The template asks for a secret (even in malformed annotations) and does not opt out."""
    error: InvalidSpec | None = None
    """Why its annotations ask for nothing (malformed)."""
    uid: str = ""
    env: tuple[SecretRef, ...] = ()
    """The RO secrets its pods read as env vars (``rotor.dev/delivery: env``): a new version
    reaches them only through a restart (:mod:`controller.envrestart`)."""


def _query(selector: LabelSelector | None) -> str | None:
    return selector.query() if selector is not None else None


def read_workload(obj: Mapping[str, Any]) -> WorkloadObs | None:
    """The record of a workload whose template asks for Rotor, else None (nothing is kept).
    Malformed annotations ask for nothing (``error`` says why)."""
    m = meta(obj)
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    annotations = meta(template).get("annotations") or {}
    if not any(a in annotations for a in ann.REQUEST_ANNOTATIONS):
        return None  # the common case, decided before any parsing
    error: InvalidSpec | None = None
    env: tuple[SecretRef, ...] = ()
    try:
        wants = requests_from_workload(obj)
        req = ann.parse_pod(annotations, str(m.get("namespace", "")))
        env = req.ro if req is not None and req.delivery == "env" else ()
    except InvalidSpec as e:
        wants, error = (), e
    wants_rotor = ann.wants_rotor(annotations)
    if not wants and not wants_rotor:
        return None
    return WorkloadObs(
        kind=str(obj.get("kind", "")),
        namespace=str(m.get("namespace", "")),
        name=str(m.get("name", "")),
        selector=_query(LabelSelector.parse(spec.get("selector"))),
        wants=wants,
        wants_rotor=wants_rotor,
        error=error,
        uid=str(m.get("uid", "")),
        env=env,
    )


def controller_owner(m: Mapping[str, Any]) -> OwnerRef | None:
    for o in m.get("ownerReferences") or []:
        if isinstance(o, Mapping) and o.get("controller"):
            return OwnerRef(str(o.get("apiVersion", "")), str(o.get("kind", "")), str(o["name"]))
    return None


def read_pod(obj: Mapping[str, Any]) -> PodInfo:
    m = meta(obj)
    annotations = m.get("annotations") or {}
    namespace = str(m.get("namespace", ""))
    spec = obj.get("spec") or {}
    try:
        req = ann.parse_pod(annotations, namespace)
    except InvalidSpec:
        req = None  # denied at admission; a pod that slipped through asks for nothing
    if not _valid_service_account(_service_account(spec)):
        req = None
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
        if isinstance(c, Mapping)
    )
    return PodInfo(
        namespace=namespace,
        name=str(m.get("name", "")),
        uid=str(m.get("uid", "")),
        service_account=_service_account(spec),
        created=parse_timestamp(m.get("creationTimestamp")),
        ready=ready and (obj.get("status") or {}).get("phase", "Running") == "Running",
        deleting=bool(m.get("deletionTimestamp")),
        rw=req.rw if req else (),
        ro=req.ro if req else (),
        wants_rotor=ann.wants_rotor(annotations),
        injected=ann.is_injected(annotations),
        owner=controller_owner(m),
    )
