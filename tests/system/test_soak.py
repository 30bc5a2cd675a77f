"""A small soak (bench/soak.py runs the large one): rotations with reader and writer restarts
and watch drops injected; every reader must reach every version, and hold nothing uncommitted."""

from __future__ import annotations

from rotorctl import soak
from rotorctl.harness import System


def test_every_rotation_reaches_every_reader_through_restarts_and_watch_drops(
    system: System,
) -> None:
    result = soak.run(system, rotations=12, namespaces=2, per_namespace=2, fault_every=2)
    assert result.faults == {"reader": 2, "writer": 2, "drop": 2}, result.summary()
    assert result.watches_dropped > 0  # the controller's and the agents' streams were closed
    assert result.commits == 12, result.summary()
    assert result.late == [], result.summary()
    assert result.stale_at_end == []
    assert result.never_committed == []
    assert result.final_version == 13  # the first value, then one per rotation
