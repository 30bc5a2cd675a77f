"""The counter a retry loop keeps, over the one backoff policy (:func:`rotor.backoff.delay`):
one failure more, a success resets it, the random draw for the jitter and an async wait."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from rotor.backoff import NO_JITTER, delay


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
        draw = random.random()  # noqa: S311  (jitter, not cryptographic)
        if hint is None:
            return delay(self.failures, self.base, self.maximum, jitter=self.jitter, draw=draw)
        return delay(1, hint, hint, jitter=self.jitter, draw=draw)

    async def wait(self, hint: float | None = None) -> float:
        """Count one failure and sleep for it; returns the seconds slept."""
        seconds = self.next(hint)
        await asyncio.sleep(seconds)
        return seconds
