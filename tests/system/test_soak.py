"""A small soak (bench/soak.py runs the large one): rotations with reader and writer restarts
and watch drops injected; every reader must reach every version, and hold nothing uncommitted."""

from __future__ import annotations

from rotorctl import soak
from rotorctl.harness import System


def test_every_rotation_reaches_every_reader_through_restarts_and_watch_drops(
    system: System,
) -> None:
    """On the real control plane without the watch drops: only the emulator can close every
    watch stream on demand (docs/demo.md, "Emulator and real control plane")."""
    faults = soak.FAULTS if system.emulator is not None else ("reader", "writer")
    result = soak.run(
        system, rotations=12, namespaces=2, per_namespace=2, fault_every=2, faults=faults
    )
    if system.emulator is not None:
        assert result.faults == {"reader": 2, "writer": 2, "drop": 2}, result.summary()
        assert result.watches_dropped > 0  # the controller's and the agents' streams were closed
    else:
        assert result.faults == {"reader": 3, "writer": 3, "drop": 0}, result.summary()
    assert result.commits == 12, result.summary()
    assert result.late == [], result.summary()
    assert result.stale_at_end == []
    assert result.never_committed == []
    assert result.final_version == 13  # the first value, then one per rotation
