"""The layout of the Secrets Rotor writes: names, annotations, and the state and its encoding.

Source Secret (same name and namespace as the RotatingSecret, owned by it, readable only by RW
principals and the controller)::

    data:        <file>             current value
                 <file>.previous    previous value, during the overlap window
                 <file>.pending     new value, only while a rotation is in flight
    annotations: rotor.dev/version, rotor.dev/phase (pending|committed), rotor.dev/rotated-at,
                 rotor.dev/previous-expires, rotor.dev/checksum, rotor.dev/writer,
                 rotor.dev/next-rotation (when the writer rotates next),
                 rotor.dev/last-abort and rotor.dev/last-abort-at (the reason and message of
                 the last rotation that aborted, until a commit)
    labels:      rotor.dev/secret=<name>

RO view: Secret ``rotor.<source-namespace>.<name>`` in the consumer's namespace with current and
previous only. A *file* is what one key produces (``password``, or ``signing-key`` and
``signing-key.pub``).

The protocol that moves a state from one step to the next (prepare, commit, abort, expire, and
every decision about them) is :mod:`rotor.protocol`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, cast

from rotor import PREFIX
from rotor.errors import InvalidSpec

Phase = Literal["pending", "committed"]

PREVIOUS_SUFFIX = ".previous"
PENDING_SUFFIX = ".pending"

LABEL_SECRET = PREFIX + "secret"
"""On a source Secret: the RotatingSecret's name."""
LABEL_VIEW_OF = PREFIX + "view-of"
"""On an RO view: ``<source-namespace>.<name>`` of the source."""
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "rotor"

ANN_VERSION = PREFIX + "version"
ANN_PHASE = PREFIX + "phase"
ANN_ROTATED_AT = PREFIX + "rotated-at"
ANN_PREVIOUS_EXPIRES = PREFIX + "previous-expires"
ANN_CHECKSUM = PREFIX + "checksum"
ANN_WRITER = PREFIX + "writer"
ANN_PENDING_SINCE = PREFIX + "pending-since"
ANN_NEXT_ROTATION = PREFIX + "next-rotation"
"""When the writer rotates next (copied to RO views; readers put it in ``.rotor.json``)."""
ANN_LAST_ABORT = PREFIX + "last-abort"
"""``<Reason>: <message>`` of the last rotation that aborted (names and reasons, never a value);
removed by the next commit. The controller turns it into a condition reason and an Event."""
ANN_LAST_ABORT_AT = PREFIX + "last-abort-at"
ANN_LAST_RETIRE_FAILURE = PREFIX + "last-retire-failure"
"""``<Reason>: <message>`` of the last overlap end the target could not complete (e.g. sessions
of the retired role not terminated); removed by the next one that succeeds. The controller's
``Rotated`` condition shows it."""
ANN_POSTGRES_ADMIN_FOR = PREFIX + "postgres-admin-for"
"""On a Secret that holds a PostgreSQL admin credential: the names of the RotatingSecrets (same
namespace, comma-separated) whose writer may read it. The opt-in of whoever may edit that Secret:
a RotatingSecret's ``spec.target.postgres.admin.secretRef`` alone grants nothing."""
ANN_ROTATE_REQUESTED = PREFIX + "rotate-requested"
"""On a source Secret, set by the controller: the value of the RotatingSecret's
``rotor.dev/rotate-now`` annotation. The writer rotates once when it differs from the last value
it handled."""
ANN_ROTATE_HANDLED = PREFIX + "rotate-handled"
"""On a source Secret, set by the writer with its prepare: the rotate-now value that rotation
answers, so a restarted or new writer does not rotate twice for one request."""


def view_name(source_namespace: str, name: str) -> str:
    """The name of the RO view of ``source_namespace/name`` in a consumer's namespace."""
    return f"rotor.{source_namespace}.{name}"


def previous_key(file: str) -> str:
    return file + PREVIOUS_SUFFIX


def pending_key(file: str) -> str:
    return file + PENDING_SUFFIX


def checksum(values: Mapping[str, bytes]) -> str:
    """sha256 over the values, in name order, each length-prefixed (no ambiguity of joins)."""
    h = hashlib.sha256()
    for name in sorted(values):
        for part in (name.encode(), values[name]):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_precise_time(ts: float) -> str:
    """RFC 3339 UTC with milliseconds when the time has a fraction (``...T12:00:00.250Z``).

    The state's own times (rotated-at, previous-expires, pending-since) keep the fraction: cut
    to whole seconds, a value rotated at 12:00:00.9 was read back as rotated at 12:00:00, and
    fell due up to a second early (10 s intervals came 8.9-9.1 s apart with a 5 % jitter)."""
    ms = round(ts * 1000)
    whole, frac = divmod(ms, 1000)
    text = format_time(whole)
    return text if not frac else f"{text[:-1]}.{frac:03d}Z"


def parse_time(text: str, field: str) -> float:
    try:
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else "%Y-%m-%dT%H:%M:%SZ"
        return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise InvalidSpec(
            field, f"{text!r} is not an RFC 3339 UTC time", "write e.g. 2026-01-31T12:00:00Z"
        ) from None


@dataclass(frozen=True)
class SecretState:
    """What a source Secret holds, decoded; values are bytes and never printed (``__repr__``)."""

    version: int = 0
    phase: Phase = "committed"
    current: Mapping[str, bytes] = field(default_factory=dict)
    previous: Mapping[str, bytes] = field(default_factory=dict)
    pending: Mapping[str, bytes] = field(default_factory=dict)
    rotated_at: float | None = None
    previous_expires: float | None = None
    writer: str | None = None
    pending_since: float | None = None
    next_rotation: float | None = None
    last_abort: str = ""
    """``<Reason>: <message>`` of the last aborted rotation (``""`` once a rotation commits)."""
    last_abort_at: float | None = None
    last_retire_failure: str = ""
    """``<Reason>: <message>`` of the last failed overlap end (``""`` once one succeeds)."""

    @property
    def abort_reason(self) -> str:
        """The CamelCase reason of :attr:`last_abort` (``""``: none)."""
        return self.last_abort.partition(":")[0].strip()

    def __repr__(self) -> str:  # never show values
        return (
            f"SecretState(version={self.version}, phase={self.phase}, "
            f"files={sorted(self.current)}, previous={bool(self.previous)}, "
            f"pending={bool(self.pending)})"
        )

    @property
    def checksum(self) -> str:
        return checksum(self.current)

    @property
    def has_value(self) -> bool:
        return self.version > 0 and bool(self.current)

    # -- encoding ------------------------------------------------------------------------------
    @classmethod
    def from_secret(
        cls, data: Mapping[str, str] | None, annotations: Mapping[str, str] | None
    ) -> SecretState:
        """Decode a Secret's ``data`` (base64 strings) and annotations."""
        data = data or {}
        ann = annotations or {}
        current: dict[str, bytes] = {}
        previous: dict[str, bytes] = {}
        pending: dict[str, bytes] = {}
        for key, b64 in data.items():
            try:
                raw = base64.b64decode(b64, validate=True)
            except ValueError:
                raise InvalidSpec(f"data.{key}", "is not base64", "") from None
            if key.endswith(PREVIOUS_SUFFIX):
                previous[key[: -len(PREVIOUS_SUFFIX)]] = raw
            elif key.endswith(PENDING_SUFFIX):
                pending[key[: -len(PENDING_SUFFIX)]] = raw
            else:
                current[key] = raw
        try:
            version = int(ann.get(ANN_VERSION, "0"))
        except ValueError:
            raise InvalidSpec(
                f"metadata.annotations[{ANN_VERSION}]", "is not an integer", ""
            ) from None
        phase = ann.get(ANN_PHASE, "committed")
        if phase not in ("pending", "committed"):
            raise InvalidSpec(
                f"metadata.annotations[{ANN_PHASE}]",
                f"{phase!r} is unknown",
                "use pending or committed",
            )

        def t(key: str) -> float | None:
            return parse_time(ann[key], f"metadata.annotations[{key}]") if ann.get(key) else None

        return cls(
            version=version,
            phase=cast(Phase, phase),
            current=current,
            previous=previous,
            pending=pending,
            rotated_at=t(ANN_ROTATED_AT),
            previous_expires=t(ANN_PREVIOUS_EXPIRES),
            writer=ann.get(ANN_WRITER) or None,
            pending_since=t(ANN_PENDING_SINCE),
            next_rotation=t(ANN_NEXT_ROTATION),
            last_abort=ann.get(ANN_LAST_ABORT, ""),
            last_abort_at=t(ANN_LAST_ABORT_AT),
            last_retire_failure=ann.get(ANN_LAST_RETIRE_FAILURE, ""),
        )

    def secret_data(self) -> dict[str, str]:
        """The Secret's ``data``: every current, previous and pending value, base64."""
        out: dict[str, str] = {}
        for suffix, values in (
            ("", self.current),
            (PREVIOUS_SUFFIX, self.previous),
            (PENDING_SUFFIX, self.pending),
        ):
            for name, raw in values.items():
                out[name + suffix] = base64.b64encode(raw).decode()
        return out

    def view_data(self) -> dict[str, str]:
        """An RO view's ``data``: current and previous only, never pending."""
        return {k: v for k, v in self.secret_data().items() if not k.endswith(PENDING_SUFFIX)}

    def annotations(self) -> dict[str, str]:
        out = {ANN_VERSION: str(self.version), ANN_PHASE: self.phase, ANN_CHECKSUM: self.checksum}
        at = format_precise_time
        out[ANN_ROTATED_AT] = at(self.rotated_at) if self.rotated_at is not None else ""
        out[ANN_PREVIOUS_EXPIRES] = (
            at(self.previous_expires) if self.previous_expires is not None else ""
        )
        out[ANN_WRITER] = self.writer or ""
        out[ANN_PENDING_SINCE] = at(self.pending_since) if self.pending_since is not None else ""
        out[ANN_NEXT_ROTATION] = at(self.next_rotation) if self.next_rotation is not None else ""
        out[ANN_LAST_ABORT] = self.last_abort
        out[ANN_LAST_ABORT_AT] = at(self.last_abort_at) if self.last_abort_at is not None else ""
        out[ANN_LAST_RETIRE_FAILURE] = self.last_retire_failure
        return out
