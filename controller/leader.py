"""Leader election on a ``coordination.k8s.io/v1`` Lease, so two replicas never both act.

Why not kopf's peering: it pauses an operator only in favour of a peer with a *higher* priority;
replicas of one Deployment share a priority and would both run (kopf logs a warning and carries
on). The Lease protocol here is client-go's: the holder renews ``spec.renewTime`` every
``renew`` seconds; another replica takes the Lease only after it has seen the same record
unchanged for ``leaseDurationSeconds`` of its *own* clock (no trust in other clocks), and every
write carries ``metadata.resourceVersion``, so of two replicas racing for an expired Lease exactly
one wins (the other gets 409). A leader that cannot renew within the duration stops acting
before another replica may take over (``renew`` < duration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from controller.kube import Kube, path
from controller.metrics import Metrics
from rotor.errors import ConflictError, RotorError

log = logging.getLogger("rotor.controller.leader")

LEASE_DURATION = 15.0
RENEW_EVERY = 5.0
RETRY_EVERY = 2.0
API = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    renew_time: str
    duration: float
    transitions: int
    resource_version: str


def read_lease(obj: dict[str, Any] | None) -> LeaseRecord | None:
    if obj is None:
        return None
    spec = obj.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        duration=float(spec.get("leaseDurationSeconds") or LEASE_DURATION),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
    )


Decision = Literal["create", "renew", "take", "wait"]


def lease_decision(
    record: LeaseRecord | None, me: str, now: float, unchanged_since: float | None
) -> Decision:
    """What to do with the Lease. ``unchanged_since``: when this replica first saw the current
    (holder, renewTime) - expiry is judged on the local clock only."""
    if record is None:
        return "create"
    if record.holder == me:
        return "renew"
    if not record.holder:
        return "take"
    if unchanged_since is not None and now - unchanged_since >= record.duration:
        return "take"
    return "wait"


def micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        metrics: Metrics,
        *,
        duration: float = LEASE_DURATION,
        renew: float = RENEW_EVERY,
        retry: float = RETRY_EVERY,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.namespace, self.name, self.identity = namespace, name, identity
        self.metrics = metrics
        self.duration, self.renew, self.retry = duration, renew, retry
        self.clock, self.wall = clock, wall
        self._seen: tuple[str, str] | None = None
        self._seen_at: float | None = None

    def _spec(self, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": micro_time(self.wall()),
            "leaseTransitions": transitions,
        }

    async def try_acquire(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        url = path(API, "leases", self.namespace, self.name)
        try:
            record = read_lease(await self.kube.aget(url))
            now = self.clock()
            if record is not None and (record.holder, record.renew_time) != self._seen:
                self._seen, self._seen_at = (record.holder, record.renew_time), now
            decision = lease_decision(record, self.identity, now, self._seen_at)
            if decision == "wait":
                return False
            if decision == "create":
                spec = self._spec(0)
                spec["acquireTime"] = spec["renewTime"]
                await self.kube.acreate(
                    path(API, "leases", self.namespace),
                    {
                        "apiVersion": API,
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": spec,
                    },
                )
                return True
            assert record is not None
            spec = self._spec(record.transitions + (decision == "take"))
            if decision == "take":
                spec["acquireTime"] = spec["renewTime"]
            await self.kube.apatch(
                url, {"metadata": {"resourceVersion": record.resource_version}, "spec": spec}
            )
            return True
        except ConflictError:
            return False  # another replica wrote first
        except RotorError as e:
            self.metrics.errors.labels("leader").inc()
            log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            return False

    async def release(self) -> None:
        url = path(API, "leases", self.namespace, self.name)
        with contextlib.suppress(RotorError):
            record = read_lease(await self.kube.aget(url))
            if record is not None and record.holder == self.identity:
                await self.kube.apatch(
                    url,
                    {
                        "metadata": {"resourceVersion": record.resource_version},
                        "spec": {"holderIdentity": None},
                    },
                )

    async def run(self, leading: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        """Campaign, then run ``leading(lost)`` while renewing; ``lost`` is set when the Lease
        could not be renewed in time, and ``leading`` must then stop acting, after which this
        campaigns again. Returns (releasing the Lease) when ``leading`` ends by itself, e.g. on
        SIGTERM; when cancelled, stops ``leading``, releases the Lease and re-raises."""
        while True:
            while True:
                if await self.try_acquire():
                    break
                await asyncio.sleep(self.retry)
            log.info("leading as %s (lease %s/%s)", self.identity, self.namespace, self.name)
            self.metrics.leader.set(1)
            lost = asyncio.Event()
            task = asyncio.create_task(leading(lost))
            last_ok = self.clock()
            lease_lost = False
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=self.renew)
                    if task.done():
                        break
                    if await self.try_acquire():
                        last_ok = self.clock()
                    elif self.clock() - last_ok > self.duration - self.renew:
                        log.warning("lost the lease %s/%s; stopping", self.namespace, self.name)
                        lease_lost = True
                        lost.set()
                        await task
            except asyncio.CancelledError:
                lost.set()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, self.renew)
                await self.release()
                raise
            finally:
                self.metrics.leader.set(0)
            error = task.exception() if not task.cancelled() else None
            if not lease_lost:  # leading ended by itself (shutdown) or failed
                await self.release()
                if error is not None:
                    raise error
                return
