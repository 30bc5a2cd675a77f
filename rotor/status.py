"""The status of a RotatingSecret: phase, writer, consumers and conditions (written by the
controller only, read by ``kubectl``, the agent and the ``rotor`` CLI).

Conditions (each ``True``/``False``/``Unknown`` with a reason and a message):

==================== =========================================================================
``Ready``            the spec is valid and a committed value is published to every granted
                     consumer (reasons: Ready, InvalidSpec, SourceNotOwned, Suspended, NoWriter,
                     WaitingForValue, the reason of AccessGranted or Published, Deleting)
``AccessGranted``    the ACL grants a writer (reasons: Granted, AwaitingApproval, Denied,
                     NoRequests, AclStale, AclRevokedStale, AclEntrySkipped)
``Published``        every granted RO consumer's view holds the current version (reasons:
                     UpToDate, Publishing, NoConsumers, NoWriter, NotCommitted,
                     ChecksumMismatch, StoreNotSynced)
``ExternalStoreSynced`` every external store holds the committed version (reasons:
                     NoExternalStores, InSync, StoreNotSynced, StoreUnavailable, NotVerified)
``Rotated``          the writer's last rotation committed (reasons: Committed, WaitingForValue,
                     or the reason of the abort the writer recorded on the source Secret:
                     DatabaseUnreachable, AdminLoginRefused, TemplateRoleMissing,
                     PermissionDenied, DatabaseError, AdminCredentialMissing, ApplyHookFailed,
                     ExternalStoreFailed, RecoveryAborted); False is also a Warning Event
==================== =========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rotor.layout import format_time

Phase = Literal["Pending", "Active", "Rotating", "Failed"]
PHASES: tuple[Phase, ...] = ("Pending", "Active", "Rotating", "Failed")
ConditionStatus = Literal["True", "False", "Unknown"]
ConsumerState = Literal["granted", "pending", "denied"]

READY = "Ready"
ACCESS_GRANTED = "AccessGranted"
PUBLISHED = "Published"
EXTERNAL_STORE_SYNCED = "ExternalStoreSynced"
ROTATED = "Rotated"
CONDITION_TYPES = (READY, ACCESS_GRANTED, PUBLISHED, EXTERNAL_STORE_SYNCED, ROTATED)

# Reasons (CamelCase, as Kubernetes conventions ask).
R_READY = "Ready"
R_INVALID_SPEC = "InvalidSpec"
R_SOURCE_NOT_OWNED = "SourceNotOwned"  # a Secret of the source's name has another controller
R_SUSPENDED = "Suspended"
R_NO_WRITER = "NoWriter"
R_WAITING_FOR_VALUE = "WaitingForValue"
R_DELETING = "Deleting"
R_GRANTED = "Granted"
R_AWAITING_APPROVAL = "AwaitingApproval"
R_DENIED = "Denied"
R_NO_REQUESTS = "NoRequests"
R_ACL_STALE = "AclStale"
R_ACL_REVOKED_STALE = "AclRevokedStale"
R_ACL_ENTRY_SKIPPED = "AclEntrySkipped"  # an ACL entry for this secret is unusable and left out
R_UP_TO_DATE = "UpToDate"
R_PUBLISHING = "Publishing"
R_NO_CONSUMERS = "NoConsumers"
R_NOT_COMMITTED = "NotCommitted"
R_CHECKSUM_MISMATCH = "ChecksumMismatch"
R_NO_EXTERNAL_STORES = "NoExternalStores"
R_NOT_VERIFIED = "NotVerified"
R_IN_SYNC = "InSync"
R_STORE_NOT_SYNCED = "StoreNotSynced"
R_STORE_UNAVAILABLE = "StoreUnavailable"
R_COMMITTED = "Committed"
R_ROTATION_ABORTED = "RotationAborted"
"""The ``Rotated`` reason when the recorded abort carries no CamelCase reason."""


@dataclass(frozen=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
        }
        if self.last_transition is not None:
            out["lastTransitionTime"] = format_time(self.last_transition)
        return out


def merge_conditions(
    observed: Sequence[Mapping[str, Any]], desired: Iterable[Condition], now: float
) -> list[dict[str, Any]]:
    """The conditions to write: ``lastTransitionTime`` moves only when ``status`` changes."""
    old = {c.get("type"): c for c in observed if isinstance(c, Mapping)}
    out = []
    for c in desired:
        d = c.to_dict()
        prev = old.get(c.type)
        if prev is not None and prev.get("status") == c.status and prev.get("lastTransitionTime"):
            d["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            d["lastTransitionTime"] = format_time(now)
        out.append(d)
    return out


@dataclass(frozen=True, order=True)
class ConsumerStatus:
    principal: str
    access: Literal["rw", "ro"]
    state: ConsumerState
    reason: str = ""
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "principal": self.principal,
            "access": self.access,
            "state": self.state,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.version is not None:
            out["version"] = self.version
        return out


@dataclass(frozen=True)
class WriterRef:
    pod: str
    service_account: str

    def to_dict(self) -> dict[str, Any]:
        return {"pod": self.pod, "serviceAccount": self.service_account}


@dataclass(frozen=True)
class RotatingSecretStatus:
    phase: Phase = "Pending"
    version: int = 0
    writer: WriterRef | None = None
    last_rotation: float | None = None
    next_rotation: float | None = None
    consumers: tuple[ConsumerStatus, ...] = ()
    conditions: tuple[Condition, ...] = field(default_factory=tuple)
    observed_generation: int | None = None
    rotate_requested: str = ""

    def to_dict(
        self, observed_conditions: Sequence[Mapping[str, Any]], now: float
    ) -> dict[str, Any]:
        """The ``status`` to merge-patch in (``None`` clears a field that no longer applies)."""
        return {
            "phase": self.phase,
            "version": self.version,
            "writer": self.writer.to_dict() if self.writer else None,
            "lastRotation": format_time(self.last_rotation) if self.last_rotation else None,
            "nextRotation": format_time(self.next_rotation) if self.next_rotation else None,
            "consumers": [c.to_dict() for c in self.consumers],
            "conditions": merge_conditions(observed_conditions, self.conditions, now),
            "observedGeneration": self.observed_generation,
            "rotateRequested": self.rotate_requested or None,
        }


# JSON schema of the status (rotor.crd puts it in the CRD; one source of truth with to_dict).
_TIME = {"type": "string", "format": "date-time"}
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "phase": {"type": "string", "enum": list(PHASES)},
        "version": {"type": "integer", "minimum": 0},
        "writer": {
            "type": "object",
            "nullable": True,
            "properties": {"pod": {"type": "string"}, "serviceAccount": {"type": "string"}},
        },
        "lastRotation": {**_TIME, "nullable": True},
        "nextRotation": {**_TIME, "nullable": True},
        "observedGeneration": {"type": "integer", "nullable": True},
        "rotateRequested": {"type": "string", "nullable": True},
        "consumers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["principal", "access", "state"],
                "properties": {
                    "principal": {"type": "string"},
                    "access": {"type": "string", "enum": ["rw", "ro"]},
                    "state": {"type": "string", "enum": ["granted", "pending", "denied"]},
                    "reason": {"type": "string"},
                    "version": {"type": "integer"},
                },
            },
        },
        "conditions": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "type": "object",
                "required": ["type", "status", "reason"],
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                    "lastTransitionTime": _TIME,
                },
            },
        },
    },
}
