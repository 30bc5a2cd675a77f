"""The one backoff policy of every retry loop: exponential, capped, optionally jittered (pure).

:func:`delay` is the rule: base, 2 base, 4 base, ... capped at ``maximum``, then scaled by a
factor in the ``jitter`` range (the caller draws the random number, so this module has no
randomness and no clock: :mod:`rotor.protocol` uses it for the engine's schedule, an
import-linter contract keeps it pure). :class:`rotor.retry.Backoff` is the counter a loop keeps,
with the draw and an async wait. Each loop keeps its own bounds (docs/architecture.md lists the
loops).

Why not a library: tenacity, stamina and backoff retry *one call* (a decorator or a context
around it, raising when attempts run out). Rotor's loops are mostly not that shape: watches that
reset on every event and never give up (``agent/kube.py``), the engine's schedule that stores a
retry *time* (``rotor/protocol.py``), the controller's hold that re-queues a secret rather than
sleeping (``controller/queue.py``), a poll with a deadline (``controller/acl/canister``).
What they share is the arithmetic below, a few lines; a dependency would also load in every
agent sidecar, whose memory is paid once per pod (docs/benchmarks.md).
"""

from __future__ import annotations

NO_JITTER = (1.0, 1.0)


def delay(
    failures: int,
    base: float,
    maximum: float,
    *,
    jitter: tuple[float, float] = NO_JITTER,
    draw: float = 0.0,
) -> float:
    """Seconds to wait after ``failures`` failures in a row: ``base * 2 ** (failures - 1)``,
    at most ``maximum``, times ``jitter[0] + (jitter[1] - jitter[0]) * draw`` (``draw`` in
    0..1, drawn by the caller). 0 for no failure."""
    if failures <= 0:
        return 0.0
    raw = min(maximum, base * 2 ** min(failures - 1, 62))
    low, high = jitter
    return float(raw * (low + (high - low) * draw))
