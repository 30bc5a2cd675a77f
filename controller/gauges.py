"""The gauges read from the index: RotatingSecrets by phase, consumers behind."""

from __future__ import annotations

import asyncio

from controller.index import Index
from controller.metrics import Metrics
from rotor import status as st


def update_gauges(index: Index, metrics: Metrics) -> None:
    phases = {p: 0 for p in st.PHASES}
    behind = 0
    for obs in index.rsecs.values():
        if obs.status.phase in phases:
            phases[obs.status.phase] += 1
        behind += obs.status.behind
    for p, n in phases.items():
        metrics.rotating_secrets.labels(p).set(n)
    metrics.consumers_behind.set(behind)


async def gauge_loop(index: Index, metrics: Metrics, every: float = 5.0) -> None:
    while True:
        update_gauges(index, metrics)
        await asyncio.sleep(every)
