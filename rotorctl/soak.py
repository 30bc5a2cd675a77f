"""The soak: many rotations through the whole system with faults injected, and a checker.

Used by ``bench/soak.py`` (the large run) and ``tests/system/test_soak.py`` (a small one). On the
:class:`rotorctl.harness.System` (emulator, webhook, controller, one agent process per pod): one
RotatingSecret, ``rw`` writer replicas, ``per_namespace`` RO pods in each of ``namespaces``
consumer namespaces. Each rotation is a ``rotor.dev/rotate-now``; every ``fault_every`` rotations
one fault is injected right after it is asked for, in turn: a reader's agent is killed (SIGKILL)
and restarted, the writer's agent is killed and restarted (mid-rotation: its recovery must
finish or abort what it left pending), every open API watch is closed by the emulator
(controller and agents must resume).

The checker is :class:`rotorctl.probe.PropagationProbe`: it reads each reader's files whenever
their ``..data`` link moves and matches them by checksum to the commits the emulator stored.
Counted: a **miss** is a (rotation, reader) pair where the reader did not hold that version (or a
later one) within ``deadline`` seconds of its commit, or a reader not at the final version at the
end; a **never committed** value is one a reader held that no stored commit had at that moment.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rotor import annotations as ann
from rotorctl.harness import HarnessError, Pod, System, wait_for
from rotorctl.probe import PropagationProbe

NS, NAME = "shop", "db"
FAULTS = ("reader", "writer", "drop")


@dataclass
class SoakResult:
    rotations: int = 0
    commits: int = 0
    readers: int = 0
    namespaces: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    watches_dropped: int = 0
    late: list[tuple[int, str]] = field(default_factory=list)
    """(version, reader) not reached within the deadline of its commit."""
    stale_at_end: list[str] = field(default_factory=list)
    never_committed: list[tuple[str, float]] = field(default_factory=list)
    no_commit: list[int] = field(default_factory=list)
    """Rotations asked for whose commit was not stored within the deadline."""
    final_version: int = 0
    seconds: float = 0.0
    delays: list[float] = field(default_factory=list)

    @property
    def missed(self) -> int:
        return len(self.late) + len(self.stale_at_end)

    @property
    def ok(self) -> bool:
        return not (self.missed or self.never_committed or self.no_commit)

    def summary(self) -> str:
        f = self.faults
        return (
            f"{self.rotations} rotations ({self.commits} commits stored, final version "
            f"{self.final_version}) to {self.readers} readers in {self.namespaces} namespaces in "
            f"{self.seconds:.0f}s; injected: {f['reader']} reader restarts, {f['writer']} writer "
            f"restarts, {f['drop']} watch drops ({self.watches_dropped} streams closed); "
            f"missed {self.missed} (late {len(self.late)}, stale at the end "
            f"{len(self.stale_at_end)}), values never committed {len(self.never_committed)}, "
            f"rotations without a commit {len(self.no_commit)}"
        )


def fault_for(n: int, fault_every: int, kinds: Sequence[str]) -> str | None:
    """The fault injected after rotation ``n`` (1-based): every ``fault_every`` rotations the
    next of ``kinds`` in turn; None between them (pure)."""
    if not fault_every or not kinds or n % fault_every:
        return None
    return kinds[(n // fault_every - 1) % len(kinds)]


def behind(versions: Mapping[str, int | None], version: int) -> list[str]:
    """The readers whose files hold neither ``version`` nor a later one (pure); None: nothing
    yet, or a value never committed."""
    return [pod for pod, v in versions.items() if (v or 0) < version]


def setup(
    system: System, rw: int, namespaces: int, per_namespace: int
) -> tuple[list[Pod], list[Pod]]:
    """The secret, its writers and readers, all granted; returns (writers, readers) once every
    pod has the first value."""
    system.rotating_secret(
        NS, NAME, [{"name": "password", "generator": {"type": "password"}}], "24h", "12h"
    )
    api = system.workload(NS, "api", {ann.RW: NAME})
    system.acl("approve", f"{NS}/{NAME}", f"{NS}/api", "rw")
    loads = []
    for i in range(namespaces):
        ns = f"soak{i}"
        loads.append(system.workload(ns, "web", {ann.RO: f"{NS}/{NAME}"}))
        system.acl("approve", f"{NS}/{NAME}", f"{ns}/web", "ro")
    writers = [system.add_pod(api) for _ in range(rw)]
    readers = [system.add_pod(w) for w in loads for _ in range(per_namespace)]
    wait_for(
        lambda: all(p.files(NAME) for p in [*writers, *readers]),
        "every pod has the first value",
        timeout=300,
    )
    return writers, readers


def _writer(system: System, writers: list[Pod]) -> Pod:
    name = str((system.status(NS, NAME).get("writer") or {}).get("pod") or "")
    return next((p for p in writers if p.name == name), writers[0])


def _inject(
    system: System, kind: str, rng: random.Random, readers: list[Pod], writers: list[Pod]
) -> int:
    """One fault, somewhere inside the rotation just asked for; the watches it closed."""
    time.sleep(rng.uniform(0, 0.05))
    if kind in ("reader", "writer"):
        p = rng.choice(readers) if kind == "reader" else _writer(system, writers)
        system.kill_agent(p)
        system.restart_agent(p)
        return 0
    emu = system.emulator
    return emu.drop_watches() if emu is not None else 0


def _late(probe: PropagationProbe, readers: list[Pod], version: int, deadline: float) -> list[str]:
    """The readers still behind ``version`` ``deadline`` seconds after its commit."""
    t = probe.commits[version].at
    while True:
        late = behind({p.name: probe.last_version(p.name) for p in readers}, version)
        if not late or time.monotonic() - t > deadline:
            return late
        time.sleep(0.005)


def _finish(
    result: SoakResult, probe: PropagationProbe, readers: list[Pod], deadline: float
) -> None:
    """The end state: every reader given ``deadline`` to reach the last commit, then counted."""
    final = max(probe.commits, default=0)
    with contextlib.suppress(HarnessError):  # counted below
        wait_for(
            lambda: all(probe.last_version(p.name) == final for p in readers),
            "every reader at the final version",
            deadline,
        )
    final = max(probe.commits, default=0)
    result.final_version = final
    result.stale_at_end = [p.name for p in readers if probe.last_version(p.name) != final]
    result.never_committed = probe.never_committed()
    result.commits = sum(1 for c in probe.commits.values() if not math.isnan(c.at))
    result.delays = probe.delays()


def _report(
    progress: Callable[[str], None],
    result: SoakResult,
    n: int,
    v: int,
    late: list[str],
    deadline: float,
) -> None:
    if late:
        progress(
            f"version {v} (rotation {n}) not at {len(late)} readers {deadline:.0f}s "
            f"after its commit, at {time.strftime('%H:%M:%S')}"
        )
    if n % 50 == 0:
        progress(f"{n} rotations, version {v}, missed so far {len(result.late)}")


def run(
    system: System,
    *,
    rotations: int,
    rw: int = 2,
    namespaces: int = 3,
    per_namespace: int = 2,
    fault_every: int = 5,
    deadline: float = 20.0,
    seed: int = 1,
    faults: tuple[str, ...] = FAULTS,
    progress: Callable[[str], None] = lambda _m: None,
) -> SoakResult:
    rng = random.Random(seed)  # noqa: S311  (fault timing, not cryptographic)
    writers, readers = setup(system, rw, namespaces, per_namespace)
    result = SoakResult(readers=len(readers), namespaces=namespaces)
    if system.emulator is None and "drop" in faults:
        raise HarnessError("the drop fault needs the emulator (it closes every watch stream)")
    started = time.monotonic()
    with PropagationProbe(system, NS, NAME, readers, resolution=0.01) as probe:
        wait_for(lambda: all(probe.last_version(p.name) for p in readers), "probe ready", 30)
        for n in range(1, rotations + 1):
            before = max(probe.commits, default=0)
            system.rotate_now(NS, NAME)
            result.rotations += 1
            kind = fault_for(n, fault_every, faults)
            if kind is not None:
                result.watches_dropped += _inject(system, kind, rng, readers, writers)
                result.faults[kind] += 1

            def committed(b: int = before) -> bool:
                return max(probe.commits, default=0) > b

            try:
                wait_for(committed, "a commit", deadline)
            except HarnessError:
                result.no_commit.append(n)
                continue
            v = max(probe.commits)
            late = _late(probe, readers, v, deadline)
            result.late.extend((v, name) for name in late)
            _report(progress, result, n, v, late, deadline)
        _finish(result, probe, readers, deadline)
    result.seconds = time.monotonic() - started
    return result
