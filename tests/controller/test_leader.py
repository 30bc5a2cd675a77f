"""Lease leader election against the strict emulator (409 on a stale resourceVersion)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from controller.kube import Kube
from controller.leader import LeaderElector
from controller.metrics import Metrics
from tests.controller.conftest import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kube(kube_emulator):
    k = Kube(kube_emulator.api_client())
    yield k
    k.close()


def elector(kube, identity, clock, **kw):
    return LeaderElector(
        kube,
        "rotor-system",
        "rotor-controller",
        identity,
        Metrics(CollectorRegistry()),
        clock=clock,
        **kw,
    )


async def test_only_one_leads_until_the_lease_expires_on_the_other_clock(kube):
    ca, cb = Clock(), Clock()
    a, b = elector(kube, "a", ca), elector(kube, "b", cb)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    cb.now += 10
    assert await a.try_acquire()  # renewed: b sees a new record and starts counting again
    assert not await b.try_acquire()
    cb.now += 14
    assert not await b.try_acquire()  # 14 s < 15 s since b saw the renewal
    cb.now += 1
    assert await b.try_acquire()  # a stopped renewing: b takes over
    assert not await a.try_acquire()  # a sees b's record and waits


async def test_racing_for_a_free_lease_exactly_one_wins(kube):
    clock = Clock()
    electors = [elector(kube, f"r{i}", clock) for i in range(6)]
    results = await asyncio.gather(*(e.try_acquire() for e in electors))
    assert sum(results) == 1


async def test_release_on_cancel_hands_over_at_once(kube):
    a = elector(kube, "a", Clock(), renew=0.1, retry=0.05)
    b = elector(kube, "b", Clock(), renew=0.1, retry=0.05)
    leading: list[str] = []

    def leader(name):
        async def run(lost: asyncio.Event) -> None:
            leading.append(name)
            await lost.wait()

        return run

    task_a = asyncio.create_task(a.run(leader("a")))
    await eventually(lambda: leading == ["a"])
    task_b = asyncio.create_task(b.run(leader("b")))
    task_a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task_a
    await eventually(lambda: leading == ["a", "b"], what="b leads after a released the lease")
    task_b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task_b
