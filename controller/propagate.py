"""Vault as a source: the pure decision to propagate a value a person changed in an external store.

When the audit receiver (the package ``audit``, over HTTP) reports a write to a referenced KV
path, the controller reads the store's current version
(:meth:`controller.vault.VaultReader.read_values`) and calls :func:`decide_propagation` with the
source Secret's state. On ``propagate`` it patches
the source Secret to the returned state (resourceVersion precondition: a conflict means re-read
and decide again), then fans the new version out as for any commit; the store already holds it,
so the fan-out hold passes. The previous value stays as ``<file>.previous`` for ``overlap``, as in
a rotation, so consumers that still use the old one keep working.

Nothing is propagated when the store holds what the source Secret holds (current or pending) or
what Rotor itself wrote: the checksum of the data read back decides, so Rotor's own writes are
never echoed back even when the receiver's identity filter missed them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rotor.external import StoreRecord, StoreValues
from rotor.layout import SecretState, checksum
from rotor.protocol import commit, prepare

Action = Literal["propagate", "none", "wait", "reject"]
Reason = Literal[
    "Propagate",
    "InSync",
    "RotorPending",
    "RotorWrite",
    "Deleted",
    "NotFound",
    "RotationInFlight",
    "KeysMismatch",
]


@dataclass(frozen=True)
class Propagation:
    """What to do with a store version: ``state`` is set only for ``propagate``."""

    action: Action
    reason: Reason
    message: str
    state: SecretState | None = None


def _not_a_change(state: SecretState, rec: StoreRecord, at: str) -> Propagation | None:
    """Nothing to propagate (or not yet): a deletion, a version the source holds, Rotor's own
    write, or a change during a rotation."""
    if rec.deleted:
        return Propagation(
            "none", "Deleted", f"{at} is deleted; the next rotation writes a new version"
        )
    if state.has_value and rec.checksum == state.checksum:
        return Propagation("none", "InSync", f"{at} holds source version {state.version}")
    if state.pending and rec.checksum == checksum(state.pending):
        return Propagation("none", "RotorPending", f"{at} holds the rotation in flight")
    if rec.written_by_rotor:
        return Propagation(
            "none",
            "RotorWrite",
            f"{at} was written by Rotor (rotor version {rec.rotor_version}), not by a person",
        )
    if state.phase == "pending":
        # the writer's check-and-set fails on this version and it aborts; decide again then
        return Propagation("wait", "RotationInFlight", f"{at} changed during a rotation")
    return None


def _keys_mismatch(files: Sequence[str], values: Mapping[str, bytes]) -> str:
    """Which files the store's version lacks or has in excess ("" when they match)."""
    missing = sorted(set(files) - set(values))
    extra = sorted(set(values) - set(files))
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected {', '.join(extra)}")
    return "; ".join(parts)


def decide_propagation(
    state: SecretState,
    read: StoreValues | None,
    files: Sequence[str],
    now: float,
    overlap: float,
    where: str,
) -> Propagation:
    """Decide whether the store's current version (``read``) becomes the next source version.

    ``files``: the RotatingSecret's files (``spec.files``); ``where``: ``<store>:<mount>/<path>``
    for messages (no value is ever put in a message).
    """
    if read is None or read.record is None:
        return Propagation("none", "NotFound", f"{where} holds nothing")
    at = f"{where} version {read.record.store_version}"
    skip = _not_a_change(state, read.record, at)
    if skip is not None:
        return skip
    mismatch = _keys_mismatch(files, read.values)
    if mismatch:
        return Propagation(
            "reject",
            "KeysMismatch",
            f"{at} was changed outside Rotor but its keys do not match the RotatingSecret's "
            f"files ({mismatch}); write every file of the secret at once",
        )
    values = {f: read.values[f] for f in files}
    new = commit(prepare(state, values, now, state.writer or ""), now, overlap)
    return Propagation(
        "propagate",
        "Propagate",
        f"{at} was changed outside Rotor; it becomes source version {new.version}",
        new,
    )
