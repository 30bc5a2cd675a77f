"""The engine's decisions, as pure functions: no clock, no I/O, no randomness inside.

``now`` and the jitter draw are passed in, so every decision is a row in a table test
(``tests/agent/test_schedule.py``).
"""

from __future__ import annotations

from typing import Literal

from rotor.layout import SecretState
from rotor.settings.agent import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_JITTER
from rotor.spec import RotatingSecretSpec

Reason = Literal["first-value", "keys-changed", "requested", "due"]
Recovery = Literal["commit", "apply", "abort"]


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


def recovery(state: SecretState, spec: RotatingSecretSpec, has_apply_hook: bool) -> Recovery:
    """What to do with a rotation found pending at start (the agent stopped mid-rotation).

    The pending values are complete in the store, so with no apply hook the commit is finished.
    With an apply hook the agent cannot know whether the app applied them: it posts them again
    (``apply``; the hook must be idempotent) and commits on 2xx, aborts otherwise. Pending values
    that do not match the spec's files any more are aborted.
    """
    if state.phase != "pending" or not state.pending:
        return "abort"
    if set(state.pending) != set(spec.files):
        return "abort"
    return "apply" if has_apply_hook else "commit"


def backoff_delay(
    failures: int, base: float = DEFAULT_BACKOFF_BASE, maximum: float = DEFAULT_BACKOFF_MAX
) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row: base, 2 base, 4 base, ..."""
    if failures <= 0:
        return 0.0
    return float(min(maximum, base * 2 ** min(failures - 1, 62)))


def next_wakeup(*times: float | None) -> float | None:
    """The earliest of the given times, ignoring ``None``; ``None`` when there is none."""
    known = [t for t in times if t is not None]
    return min(known) if known else None
