"""The rotation protocol, as pure functions: every decision the agent and the controller make
about a rotation, and every transition of a source Secret's state.

No clock, no I/O, no randomness inside: ``now``, the jitter draw and what the stores hold are
passed in, so every case is a row of one table test (``tests/unit/test_protocol.py``). The
layout these functions move (:class:`rotor.layout.SecretState` and its encoding) is
:mod:`rotor.layout`; the I/O is the caller's (the agent's engine, the controller).

The steps (docs/architecture.md, "The rotation protocol, step by step"):

* 0 :func:`needs_rotation` (why the secret must rotate now), :func:`starts_rotation` (whether
  it does, while backing off), :func:`next_rotation_at` (when its value is due, with
  :func:`jitter_draw`), :func:`backoff_delay` (the wait after failed attempts),
  :func:`wakeup_at` (when the writer steps next).
* 1 :func:`prepare`: the new values become ``<file>.pending``, phase pending.
* 3 :func:`plan_store_write`: for each external store, nothing (it holds the pending values)
  or the check-and-set version to write with (:func:`cas_version`, :func:`holds`).
* 4 :func:`commit`: current <- pending, previous <- current (for the overlap), version + 1.
* 6 :func:`publishable`: a committed value whose checksum annotation matches its data (the
  controller then holds it until every external store holds it).
* 9 :func:`expire_previous`: the previous value dropped once its overlap has passed.
* A :func:`abort`: the pending values dropped, the reason recorded.
* R :func:`recovery`: a rotation found pending at start (the spec, the apply hook and what the
  external stores hold decide: commit, apply again, or abort).
* every write of a source Secret or a view: :func:`secret_patch` / :func:`merge_data` (a JSON
  merge patch that sets the data keys the new state no longer has to ``null``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

from rotor import backoff
from rotor.errors import ConflictError, RotorError
from rotor.external import StoreRecord
from rotor.layout import SecretState, checksum
from rotor.settings.agent import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_JITTER
from rotor.spec import RotatingSecretSpec

Reason = Literal["first-value", "keys-changed", "requested", "due"]
Recovery = Literal["commit", "apply", "abort"]


# -- step 0: when to rotate ---------------------------------------------------------------------
def jitter_draw(state: SecretState) -> float:
    """A number in [0, 1) fixed for one version of one secret (from its checksum).

    Deriving it from the values' checksum keeps the due time the same across restarts of the
    agent, and different between secrets and versions, with no random state to persist.
    """
    if not state.current:
        return 0.0
    return int(state.checksum[:8], 16) / 2**32


def next_rotation_at(
    state: SecretState,
    spec: RotatingSecretSpec,
    jitter_draw: float,
    jitter: float = DEFAULT_JITTER,
) -> float | None:
    """When the current value is due: ``rotated_at + interval * (1 - jitter * draw)``.

    The jitter only shortens the interval, so a value never outlives ``interval``. ``None`` when
    there is no value yet (rotate at once), when the secret is suspended, or the time is unknown.
    """
    if not state.has_value or spec.suspend or state.rotated_at is None:
        return None
    return state.rotated_at + spec.rotation.interval * (1.0 - jitter * jitter_draw)


def needs_rotation(
    state: SecretState,
    spec: RotatingSecretSpec,
    now: float,
    jitter_draw: float = 0.0,
    jitter: float = DEFAULT_JITTER,
    requested: bool = False,
) -> Reason | None:
    """Why the secret must rotate now, or ``None``.

    A pending rotation is recovered first (:func:`recovery`), never rotated over. A suspended
    secret still gets its first value (so its app can start) and still honours rotate-now, but
    is not rotated on schedule.
    """
    if state.phase == "pending":
        return None
    if not state.has_value:
        return "first-value"
    if set(state.current) != set(spec.files):
        return "keys-changed"
    if requested:
        return "requested"
    if spec.suspend:
        return None
    if state.rotated_at is None:
        return "due"
    due = next_rotation_at(state, spec, jitter_draw, jitter)
    return "due" if due is not None and now >= due else None


def backoff_delay(
    failures: int, base: float = DEFAULT_BACKOFF_BASE, maximum: float = DEFAULT_BACKOFF_MAX
) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row: base, 2 base, 4 base, ...
    (the one backoff policy, :func:`rotor.backoff.delay`, without jitter)."""
    return backoff.delay(failures, base, maximum)


def next_wakeup(*times: float | None) -> float | None:
    """The earliest of the given times, ignoring ``None``; ``None`` when there is none."""
    known = [t for t in times if t is not None]
    return min(known) if known else None


def starts_rotation(reason: Reason, now: float, retry_at: float | None, fresh: bool) -> bool:
    """Whether a step rotates now, for the ``reason`` :func:`needs_rotation` gave.

    While backing off after a failure (``now < retry_at``) nothing rotates, except a *new*
    rotate-now request (``fresh``), which goes at once; a request whose rotation failed
    stays open and is retried like any failure, after the backoff."""
    backing_off = retry_at is not None and now < retry_at
    return (fresh and reason == "requested") or not backing_off


def wakeup_at(
    state: SecretState,
    spec: RotatingSecretSpec,
    now: float,
    *,
    jitter: float,
    retry_at: float | None,
    files_written: bool,
    request_open: bool,
) -> float | None:
    """When the writer's next step has something to do (``None``: nothing scheduled).

    The value's due time, not before the end of a backoff (``retry_at``); at once (or at the
    end of the backoff) while there is no value, a rotation is pending or the files are not
    written yet; a requested rotation that failed (``request_open``) is retried when the backoff
    ends, even before the value is due; and the end of the previous value's overlap."""
    due = next_rotation_at(state, spec, jitter_draw(state), jitter)
    if not state.has_value or state.phase == "pending" or not files_written:
        due = retry_at if retry_at is not None else now
    elif due is not None and retry_at is not None:
        due = max(due, retry_at)
    if request_open:
        retry = retry_at if retry_at is not None else now
        due = retry if due is None else min(due, retry)
    return next_wakeup(due, state.previous_expires if state.previous else None)


# -- transitions --------------------------------------------------------------------------------
class ProtocolError(RotorError):
    """A transition was asked for in a state that does not allow it: a bug, or a lost race,
    never a user's mistake (so not an :class:`~rotor.errors.InvalidSpec`: a CLI reports it as
    a failure, exit 1, not as bad input). ``field`` and ``problem`` say what was refused,
    ``expected`` what the caller should have done first."""

    def __init__(self, field: str, problem: str, expected: str = "") -> None:
        self.field = field
        self.problem = problem
        self.expected = expected
        text = f"rotation protocol: {field}: {problem}"
        super().__init__(text + (f" (expected: {expected})" if expected else ""))


def prepare(
    state: SecretState, values: Mapping[str, bytes], now: float, writer: str
) -> SecretState:
    """Step 1: record the new values as pending."""
    if state.phase == "pending":
        raise ProtocolError(
            "phase", "a rotation is already pending", "finish or abort it first (recover_pending)"
        )
    if not values:
        raise ProtocolError("values", "no values to prepare", "")
    return replace(state, phase="pending", pending=dict(values), writer=writer, pending_since=now)


def commit(state: SecretState, now: float, overlap: float) -> SecretState:
    """Step 4: current <- pending, previous <- old current (for ``overlap``), version + 1."""
    if state.phase != "pending" or not state.pending:
        raise ProtocolError("phase", "nothing is pending", "prepare before commit")
    keep = overlap > 0 and bool(state.current)
    return replace(
        state,
        version=state.version + 1,
        phase="committed",
        current=dict(state.pending),
        previous=dict(state.current) if keep else {},
        previous_expires=now + overlap if keep else None,
        pending={},
        rotated_at=now,
        pending_since=None,
        next_rotation=None,
        last_abort="",
        last_abort_at=None,
    )


def abort(state: SecretState, why: str = "", now: float | None = None) -> SecretState:
    """Drop the pending values; what was current stays current. ``why`` (``<Reason>:
    <message>``, no value) is recorded as the last abort when given."""
    out = replace(state, phase="committed", pending={}, pending_since=None)
    if why:
        out = replace(out, last_abort=why, last_abort_at=now)
    return out


def expire_previous(state: SecretState, now: float) -> SecretState:
    """Drop the previous values once their overlap window has passed."""
    if state.previous and state.previous_expires is not None and now >= state.previous_expires:
        return replace(state, previous={}, previous_expires=None)
    return state


# -- external stores ------------------------------------------------------------------------------
def holds(record: StoreRecord | None, digest: str) -> bool:
    """Whether a store's current version holds the values whose checksum is ``digest``."""
    return record is not None and not record.deleted and record.checksum == digest


def cas_version(state: SecretState, record: StoreRecord | None, path: str) -> int:
    """The check-and-set version for writing the next pending value at ``path``.

    0 when nothing is stored (create only). The current version when it holds what the source
    Secret holds (current or pending), or what Rotor wrote itself (an aborted rotation), or was
    deleted (nothing to lose), or when the secret has no value yet (Rotor takes the path over;
    KV keeps the older versions). A version written outside Rotor that the source Secret does
    not hold yet raises ConflictError: the controller propagates it first, so a person's change
    is never silently overwritten.
    """
    if record is None:
        return 0
    known = {state.checksum} if state.has_value else set()
    if state.pending:
        known.add(checksum(state.pending))
    if record.deleted or record.checksum in known or record.written_by_rotor:
        return record.store_version
    if not state.has_value:  # first value: take the path over
        return record.store_version
    raise ConflictError(
        f"{path}: store version {record.store_version} was written outside Rotor and is not in "
        "the source Secret yet; it is propagated to the source Secret before the next rotation"
    )


def plan_store_write(state: SecretState, record: StoreRecord | None, path: str) -> int | None:
    """Rotation step 3 for one store: None when it already holds the pending values (a retry
    after a lost answer or a restart), else the check-and-set version to write with."""
    if not state.pending:
        raise ProtocolError("phase", "nothing is pending", "prepare before writing a store")
    if holds(record, checksum(state.pending)):
        return None
    return cas_version(state, record, path)


# -- recovery: a rotation found pending at start ---------------------------------------------------
def recovery(
    state: SecretState,
    spec: RotatingSecretSpec,
    has_apply_hook: bool,
    records: Mapping[str, StoreRecord | None] | None = None,
) -> Recovery:
    """What a writer that starts (or takes over) does with a rotation found pending: the one rule.

    ``records``: what each external store holds now (one entry per store and path; empty or None
    when the secret has none). In order:

    * pending values that do not match the spec's files any more (or none at all): ``abort``;
    * an external store that does not hold the pending values (the writer stopped before or
      during step 3, or a person wrote after it): ``abort``;
    * an apply hook (or a target) to satisfy: the agent cannot know whether the app applied the
      values, so it posts them again (``apply``; the hook must be idempotent) and commits on
      2xx, aborts otherwise;
    * else ``commit``: the values are complete in the source Secret and in every store.

    A state that is not pending at all is a ProtocolError (there is nothing to recover).
    """
    if state.phase != "pending":
        raise ProtocolError("phase", "nothing is pending", "recover only a pending rotation")
    if not state.pending or set(state.pending) != set(spec.files):
        return "abort"
    digest = checksum(state.pending)
    if not all(holds(r, digest) for r in (records or {}).values()):
        return "abort"
    return "apply" if has_apply_hook else "commit"


# -- publishing -----------------------------------------------------------------------------------
def publishable(state: SecretState | None, checksum_annotation: str) -> bool:
    """Step 6: a committed value whose checksum annotation matches its data (checked before
    the stores: the controller then holds it until every external store holds it)."""
    return (
        state is not None
        and state.has_value
        and state.phase == "committed"
        and checksum_annotation == state.checksum
    )


# -- the Secret patch -----------------------------------------------------------------------------
def merge_data(data: Mapping[str, str], old_keys: Iterable[str]) -> dict[str, str | None]:
    """The ``data`` of a JSON merge patch (RFC 7386) from a Secret holding ``old_keys`` to one
    holding ``data``: every key the new data no longer has (``.pending`` after a commit,
    ``.previous`` after the overlap) is set to ``null``, which deletes it."""
    out: dict[str, str | None] = dict.fromkeys(old_keys, None)
    out.update(data)
    return out


def secret_patch(
    state: SecretState,
    old_keys: Iterable[str],
    *,
    annotations: Mapping[str, str] | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """The merge patch that turns a source Secret holding ``old_keys`` into ``state``:
    its data (:func:`merge_data`) and annotations (plus ``annotations``), and with
    ``resource_version`` the precondition that nobody wrote in between."""
    metadata: dict[str, Any] = {"annotations": {**state.annotations(), **(annotations or {})}}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {"metadata": metadata, "data": merge_data(state.secret_data(), old_keys)}
