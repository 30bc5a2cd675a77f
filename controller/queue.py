"""The work queue: RotatingSecrets marked dirty are reconciled concurrently, one reconcile per
secret at a time; a failed or held reconcile marks its secret again after a delay."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from rotor.names import SecretRef

Handler = Callable[[SecretRef], Awaitable[None]]

RETRY_DELAY = 2.0
DEFAULT_CONCURRENCY = 64


class WorkQueue:
    """Dirty secrets, the ones in flight, and the tasks and timers this queue started."""

    def __init__(self, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.dirty: set[SecretRef] = set()
        self.inflight: set[SecretRef] = set()
        self.concurrency = concurrency
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retry_handles: set[asyncio.TimerHandle] = set()

    def mark(self, refs: Iterable[SecretRef]) -> None:
        self.dirty.update(refs)
        self._wake.set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retry_later(self, ref: SecretRef, delay: float = RETRY_DELAY) -> None:
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, lambda: self.mark([ref]))
        self._retry_handles.add(handle)

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
                self.inflight.add(ref)
                self.spawn(self._run_one(ref, handle))

    async def _run_one(self, ref: SecretRef, handle: Handler) -> None:
        try:
            async with self._sem:
                await handle(ref)
        finally:
            self.inflight.discard(ref)
            if self.dirty:
                self._wake.set()

    async def close(self) -> None:
        for h in self._retry_handles:
            h.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
