"""The propagation probe: the time from the writer's commit to each RO pod's files changing
(``rotor demo``, bench/propagation.py)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rotorctl.kubeapi import _plural_path
from rotorctl.kubelet import Pod
from rotorctl.processes import STOP_TIMEOUT

if TYPE_CHECKING:
    from rotorctl.harness import System

Obj = dict[str, Any]


@dataclass
class Commit:
    version: int
    at: float  # time.monotonic() when the watch delivered the commit
    seen: dict[str, float] = field(default_factory=dict)  # pod -> when its files changed


class PropagationProbe:
    """Measures the time from the writer's commit to each RO pod's files changing.

    The commit time is when a watch on the source Secret (one stream from the emulator, the way
    the controller learns of it) delivers ``rotor.dev/phase: committed`` with a new
    ``rotor.dev/version``; an RO pod's files changed when its ``..data`` link (swapped
    atomically by the agent) points somewhere new, polled every ``resolution`` seconds."""

    def __init__(
        self,
        system: System,
        namespace: str,
        name: str,
        readers: list[Pod],
        resolution: float = 0.005,
    ) -> None:
        self.system = system
        self.namespace = namespace
        self.name = name
        self.readers = readers
        self.resolution = resolution
        self.commits: dict[int, Commit] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, name="probe-watch", daemon=True),
            threading.Thread(target=self._poll, name="probe-files", daemon=True),
        ]

    def __enter__(self) -> PropagationProbe:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(STOP_TIMEOUT)

    def _watch(self) -> None:
        path = _plural_path("v1", "secrets", self.namespace) + "?watch=true"
        req = urllib.request.Request(  # noqa: S310 - the local emulator
            self.system.url + path, headers=self.system.api.headers()
        )
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(  # noqa: S310
                    req, timeout=2, context=self.system.api.context
                ) as r:
                    for line in r:
                        if self._stop.is_set():
                            return
                        self._event(json.loads(line), time.monotonic())
            except (OSError, ValueError):
                self._stop.wait(0.05)

    def _event(self, event: Obj, at: float) -> None:
        obj = event.get("object") or {}
        m = obj.get("metadata") or {}
        if m.get("name") != self.name:
            return
        ann = m.get("annotations") or {}
        if ann.get("rotor.dev/phase") != "committed":
            return
        version = int(ann.get("rotor.dev/version") or 0)
        with self._lock:
            if version and version not in self.commits:
                self.commits[version] = Commit(version, at)

    def _poll(self) -> None:
        links = {p.name: p.data_link(self.name) for p in self.readers}
        while not self._stop.wait(self.resolution):
            now = time.monotonic()
            for p in self.readers:
                link = p.data_link(self.name)
                if link and link != links[p.name]:
                    links[p.name] = link
                    with self._lock:
                        latest = max(self.commits, default=0)
                        if latest and p.name not in self.commits[latest].seen:
                            self.commits[latest].seen[p.name] = now

    def latest(self) -> Commit | None:
        with self._lock:
            return self.commits[max(self.commits)] if self.commits else None

    def delays(self) -> list[float]:
        """Seconds from commit to each reader's change, over every complete commit."""
        with self._lock:
            return [t - c.at for c in self.commits.values() for t in c.seen.values()]
