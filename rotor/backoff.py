"""The one backoff policy of every retry loop: exponential, capped, optionally jittered.

:func:`delay` is the pure rule (base, 2 base, 4 base, ... capped at ``maximum``, then scaled by
a factor drawn from ``jitter``); :class:`Backoff` is the small counter a loop keeps (one failure
more, a success resets it) with an async :meth:`Backoff.wait`. Each loop keeps its own bounds
(docs/architecture.md, "Concern -> module", lists them by module).

Why not a library: tenacity, stamina and backoff retry *one call* (a decorator or a context
around it, raising when attempts run out). Rotor's loops are mostly not that shape: watches that
reset on every event and never give up (``agent/kube.py``), the engine's schedule that stores a
retry *time* (``agent/schedule.py``), the controller's hold that re-queues a secret rather than
sleeping (``controller/operator.py``), a poll with a deadline (``controller/acl/canister``).
What they share is the arithmetic below, ten lines; a dependency would also load in every
agent sidecar, whose memory is paid once per pod (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

NO_JITTER = (1.0, 1.0)


def delay(
    failures: int,
    base: float,
    maximum: float,
    *,
    jitter: tuple[float, float] = NO_JITTER,
    draw: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after ``failures`` failures in a row: ``base * 2 ** (failures - 1)``,
    at most ``maximum``, times a factor in ``[jitter[0], jitter[1])`` (``draw`` gives 0..1).
    0 for no failure."""
    if failures <= 0:
        return 0.0
    raw = min(maximum, base * 2 ** min(failures - 1, 62))
    low, high = jitter
    return float(raw * (low + (high - low) * draw()))


@dataclass
class Backoff:
    """The failures in a row of one loop, and how long to wait after the next one."""

    base: float
    maximum: float
    jitter: tuple[float, float] = NO_JITTER
    failures: int = 0

    def reset(self) -> None:
        """A success: the next failure waits ``base`` again."""
        self.failures = 0

    def next(self, hint: float | None = None) -> float:
        """Count one failure; the seconds to wait (``hint``, e.g. a Retry-After, when given;
        jittered like the rest)."""
        self.failures += 1
        if hint is None:
            return delay(self.failures, self.base, self.maximum, jitter=self.jitter)
        return delay(1, hint, hint, jitter=self.jitter)

    async def wait(self, hint: float | None = None) -> float:
        """Count one failure and sleep for it; returns the seconds slept."""
        seconds = self.next(hint)
        await asyncio.sleep(seconds)
        return seconds
