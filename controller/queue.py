"""The work queue: RotatingSecrets marked dirty are reconciled concurrently, one reconcile per
secret at a time; what a reconcile asks for afterwards (:class:`Requeue`) is decided here, in one
place: a failure or a held fan-out comes back after the secret's own backoff, the previous
value's expiry at its time. Each secret has at most one timer (the earliest asked for) and one
backoff counter, both dropped when they are spent, so neither grows with the number of retries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rotor.names import SecretRef
from rotor.retry import Backoff


@dataclass(frozen=True)
class Requeue:
    """What one reconcile asks of the queue. ``backoff``: again after the secret's next backoff
    delay (a failure, or a fan-out held until its stores catch up); ``hint`` replaces the
    doubling delay for this once (a server's Retry-After, or the 30 s of a missing permission).
    ``after``: again in that many seconds whatever else happens (the previous value's expiry).
    A reconcile that asks for no backoff resets the secret's counter."""

    backoff: bool = False
    hint: float | None = None
    after: float | None = None


Handler = Callable[[SecretRef], Awaitable[Requeue | None]]

DEFAULT_CONCURRENCY = 64
RETRY_MIN = 0.5
"""The first retry of a failing (or held) secret, doubling per failure in a row up to..."""
RETRY_MAX = 60.0
RETRY_JITTER = (1.0, 1.5)
"""Never sooner than asked (a Retry-After is a floor), up to half again later, so secrets that
failed together (an API server restart) do not come back together."""


class WorkQueue:
    """Dirty secrets, the ones in flight, one timer and one backoff per secret that asked for
    one, and the tasks this queue started."""

    def __init__(
        self,
        concurrency: int = DEFAULT_CONCURRENCY,
        *,
        retry: tuple[float, float] = (RETRY_MIN, RETRY_MAX),
    ) -> None:
        self.dirty: set[SecretRef] = set()
        self.inflight: set[SecretRef] = set()
        self.concurrency = concurrency
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[SecretRef, asyncio.TimerHandle] = {}
        self._backoffs: dict[SecretRef, Backoff] = {}
        self._retry = retry
        self._taken: dict[SecretRef, int] = {}
        """Secrets whose only mark may still be taken back, with its token."""
        self._seq = 0

    @property
    def timers(self) -> int:
        """Timers pending (at most one per secret)."""
        return len(self._timers)

    @property
    def backing_off(self) -> int:
        """Secrets whose last reconcile failed or held (a backoff counter each)."""
        return len(self._backoffs)

    def mark(self, refs: Iterable[SecretRef]) -> None:
        for ref in refs:
            self.dirty.add(ref)
            self._taken.pop(ref, None)  # a mark that cannot be taken back
        self._wake.set()

    def mark_revocably(self, ref: SecretRef) -> int | None:
        """Mark ``ref``; a token to take this mark back with (:meth:`unmark`), None when it
        was dirty already (then there is nothing of its own to take back)."""
        if ref in self.dirty:
            return None
        self.mark([ref])
        self._seq += 1
        self._taken[ref] = self._seq
        return self._seq

    def unmark(self, ref: SecretRef, token: int) -> None:
        """Take back the mark ``token`` gave, if nothing marked ``ref`` since and it has not
        been picked up (a watch event that proved to be the echo of the controller's write)."""
        if self._taken.get(ref) == token:
            del self._taken[ref]
            self.dirty.discard(ref)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def requeue(self, ref: SecretRef, after: float) -> None:
        """Mark ``ref`` in ``after`` seconds. One timer per secret: an earlier request replaces
        the pending timer, a later one keeps it (the reconcile then asks again if need be)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(after, 0.0)
        pending = self._timers.get(ref)
        if pending is not None:
            if pending.when() <= when:
                return
            pending.cancel()
        self._timers[ref] = loop.call_at(when, self._due, ref)

    def _due(self, ref: SecretRef) -> None:
        self._timers.pop(ref, None)
        self.mark([ref])

    def settle(self, ref: SecretRef, asked: Requeue | None) -> None:
        """Act on what a reconcile of ``ref`` asked for (the one place requeues are decided)."""
        if asked is None or not asked.backoff:
            self._backoffs.pop(ref, None)
        if asked is None:
            return
        if asked.backoff:
            base, cap = self._retry
            backoff = self._backoffs.setdefault(ref, Backoff(base, cap, RETRY_JITTER))
            self.requeue(ref, backoff.next(asked.hint))
        if asked.after is not None:
            self.requeue(ref, asked.after)

    async def worker(self, handle: Handler) -> None:
        """Run ``handle`` for dirty secrets, concurrently, one at a time per secret."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            for ref in list(self.dirty):
                if ref in self.inflight:
                    continue
                if len(self.inflight) >= self.concurrency:
                    break  # a finishing reconcile wakes the worker again
                self.dirty.discard(ref)
                self._taken.pop(ref, None)
                self.inflight.add(ref)
                self.spawn(self._run_one(ref, handle))

    async def _run_one(self, ref: SecretRef, handle: Handler) -> None:
        try:
            async with self._sem:
                self.settle(ref, await handle(ref))
        finally:
            self.inflight.discard(ref)
            if self.dirty:
                self._wake.set()

    async def close(self) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
