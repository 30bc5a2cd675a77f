"""Events coalesced by path, with growing sequence numbers, for the long-poll."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import OrderedDict

from rotor.auditwire import MAX_EVENTS_PER_PAGE, AuditEvent


class EventQueue:
    """Events coalesced by path (the latest write wins), each with a growing sequence number.

    Bounded by the number of distinct paths (itself bounded by the referenced paths); past the
    bound the oldest path is dropped and counted. Readers pull with :meth:`since`.
    """

    def __init__(self, max_paths: int) -> None:
        self.max_paths = max_paths
        self.epoch = secrets.token_hex(8)
        self.last = 0
        self.dropped = 0
        self._events: OrderedDict[str, AuditEvent] = OrderedDict()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._events)

    def put(self, event: AuditEvent) -> AuditEvent:
        self.last += 1
        stored = AuditEvent(event.path, event.store_version, event.time, event.actor, self.last)
        self._events.pop(event.path, None)
        self._events[event.path] = stored
        while len(self._events) > self.max_paths:
            self._events.popitem(last=False)
            self.dropped += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return stored

    def since(self, seq: int, limit: int = MAX_EVENTS_PER_PAGE) -> list[AuditEvent]:
        out = [e for e in self._events.values() if e.seq > seq]  # in sequence order
        return out[:limit]

    async def wait_since(self, seq: int, wait: float) -> list[AuditEvent]:
        """Events after ``seq``, waiting up to ``wait`` seconds for one to arrive."""
        got = self.since(seq)
        if got or wait <= 0:
            return got
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), wait)
        return self.since(seq)
