"""The work queue: every requeue decided in one place, one timer and one backoff per secret."""

from __future__ import annotations

import asyncio
import contextlib

from controller.queue import RETRY_JITTER, Requeue, WorkQueue
from rotor.names import SecretRef

REFS = [SecretRef("shop", f"db{i}") for i in range(10)]


async def test_the_timers_stay_bounded_under_10000_failing_retries() -> None:
    """Ten secrets whose every reconcile fails, 10,000 reconciles in all: each comes back after
    its backoff, and the queue never holds more than one timer (or backoff) per secret."""
    queue = WorkQueue(retry=(0.0001, 0.001))
    seen: list[int] = []
    done = asyncio.Event()

    async def failing(ref: SecretRef) -> Requeue:
        seen.append(queue.timers)
        if len(seen) >= 10_000:
            done.set()
        return Requeue(backoff=True)

    worker = asyncio.create_task(queue.worker(failing))
    queue.mark(REFS)
    try:
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert len(seen) >= 10_000
    assert max(seen) <= len(REFS)
    assert queue.timers <= len(REFS)
    assert queue.backing_off == len(REFS)
    await queue.close()
    assert queue.timers == 0


async def _fires_after(queue: WorkQueue, ref: SecretRef) -> float:
    """Seconds until ``ref`` is marked dirty by its timer."""
    start = asyncio.get_running_loop().time()
    while ref not in queue.dirty:
        await asyncio.sleep(0.005)
    return asyncio.get_running_loop().time() - start


async def test_one_timer_per_secret_the_earliest_kept() -> None:
    queue = WorkQueue()
    ref = REFS[0]
    queue.requeue(ref, 0.3)
    queue.requeue(ref, 5.0)  # later: the pending 0.3 s is kept
    queue.requeue(ref, 0.1)  # earlier: replaces it
    assert queue.timers == 1
    waited = await _fires_after(queue, ref)
    assert 0.08 <= waited < 0.28
    assert queue.timers == 0  # a spent timer is dropped
    queue.dirty.clear()
    await asyncio.sleep(0.3)
    assert ref not in queue.dirty  # the replaced 0.3 s timer never fires
    await queue.close()


async def test_a_failing_secret_backs_off_and_a_success_resets_it() -> None:
    queue = WorkQueue(retry=(0.05, 0.2))
    ref = REFS[0]
    low, high = RETRY_JITTER
    for failures, base in ((1, 0.05), (2, 0.1), (3, 0.2), (4, 0.2)):  # doubling, capped
        queue.settle(ref, Requeue(backoff=True))
        waited = await _fires_after(queue, ref)
        assert base * low - 0.01 <= waited <= base * high + 0.1, (failures, waited)
        queue.dirty.clear()
    queue.settle(ref, None)  # a success
    assert queue.backing_off == 0
    queue.settle(ref, Requeue(backoff=True))
    assert await _fires_after(queue, ref) <= 0.05 * high + 0.1
    await queue.close()


async def test_a_servers_delay_is_a_floor_and_an_expiry_keeps_its_time() -> None:
    queue = WorkQueue(retry=(0.05, 0.2))
    ref, other = REFS[0], REFS[1]
    queue.settle(ref, Requeue(backoff=True, hint=0.3))  # e.g. Retry-After: 0.3
    assert await _fires_after(queue, ref) >= 0.29
    queue.settle(other, Requeue(after=0.15))  # the previous value's expiry: not a failure
    assert queue.backing_off == 1
    assert await _fires_after(queue, other) >= 0.14
    await queue.close()
