"""The propagation probe: the time from the writer's commit being stored to each RO pod's files
holding it, and every value each reader held (``rotor demo``, bench/propagation.py, the soak in
:mod:`rotorctl.soak`)."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotor.layout import ANN_PHASE, PREVIOUS_SUFFIX, SecretState, checksum
from rotorctl.kubelet import Pod
from rotorctl.processes import STOP_TIMEOUT

if TYPE_CHECKING:
    from rotorctl.harness import System

Obj = dict[str, Any]
METADATA = ".rotor.json"  # the agent's metadata file in every payload (agent/files.py)


@dataclass
class Commit:
    version: int
    at: float  # time.monotonic() when the emulator stored the commit (nan: before the probe)
    checksum: str = ""
    seen: dict[str, float] = field(default_factory=dict)  # pod -> when its files held it


def files_checksum(folder: Path) -> str | None:
    """:func:`rotor.layout.checksum` of the current values in a secret's folder (the visible
    files without ``.previous`` and the metadata file), or None when there are none (or they
    changed while read)."""
    values: dict[str, bytes] = {}
    try:
        for f in folder.iterdir():
            name = f.name
            if name.startswith("..") or name == METADATA or name.endswith(PREVIOUS_SUFFIX):
                continue
            values[name] = f.read_bytes()
    except OSError:
        return None
    return checksum(values) if values else None


def committed_state(obj: Mapping[str, Any], namespace: str, name: str) -> SecretState | None:
    """The committed state of a stored object when it is the source Secret ``namespace/name``
    with a committed value, else None (pure)."""
    m = obj.get("metadata") or {}
    if m.get("name") != name or m.get("namespace") != namespace:
        return None
    if obj.get("kind", "Secret") != "Secret" or "data" not in obj:
        return None
    ann = m.get("annotations") or {}
    if ann.get(ANN_PHASE) != "committed":
        return None
    try:
        state = SecretState.from_secret(obj.get("data"), ann)
    except ValueError:
        return None
    return state if state.has_value else None


def uncommitted(
    held: Mapping[str, Sequence[tuple[float, str]]],
    by_checksum: Mapping[str, int],
    commits: Mapping[int, Commit],
) -> list[tuple[str, float]]:
    """(pod, when) of every value a reader held that no stored commit had at that moment:
    never committed at all, or shown before its commit was stored (pure). A commit stored
    before the probe started (``at`` nan) counts as stored."""
    out = []
    for pod, values in held.items():
        for at, digest in values:
            v = by_checksum.get(digest)
            if v is None or commits[v].at > at:  # nan > at is False
                out.append((pod, at))
    return out


class PropagationProbe:
    """Measures the time from the writer's commit to each RO pod's files holding it.

    The clock starts when the emulator stores the commit (a :attr:`StrictEmulator.listeners`
    hook sees ``rotor.dev/phase: committed`` with a new ``rotor.dev/version`` on the source
    Secret), not when some watch delivers it. On the real control plane it starts when the
    probe's own watch of the source Secret (as the admin) delivers the commit: later than the
    store by that one delivery, which the readers' times then leave out. A reader's files
    changed when its ``..data`` link (swapped atomically by the agent) points somewhere new,
    polled every ``resolution`` seconds; the files are then read and matched to a commit **by
    their checksum**, so a change seen before the probe knows of its commit is counted for the
    right version once it does (attributing it to "the latest commit" lost such deliveries:
    bench/propagation.py then reported a rotation that never reached a reader which in fact had
    it).

    Every distinct value each reader's files held is kept in :attr:`held` (pod -> list of
    ``(when, checksum)``), so a checker can tell a value that was never committed
    (:meth:`never_committed`) and what each reader holds last (:meth:`last_version`)."""

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
        self.readers = list(readers)
        self.resolution = resolution
        self.commits: dict[int, Commit] = {}
        self.held: dict[str, list[tuple[float, str]]] = {}
        self._by_checksum: dict[str, int] = {}
        self._early: dict[str, dict[str, float]] = {}
        """checksum -> pod -> when, for values seen before any commit of them was stored."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, name="probe-files", daemon=True)]

    def __enter__(self) -> PropagationProbe:
        emu = self.system.emulator
        if emu is not None:
            emu.call(lambda k8s: k8s.listeners.append(self._stored))
        else:
            watch = threading.Thread(target=self._watch, name="probe-watch", daemon=True)
            self._threads.append(watch)
        current = self.system.source(self.namespace, self.name)
        if current is not None:
            self._stored(current, math.nan)
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(STOP_TIMEOUT)
        emu = self.system.emulator
        if emu is not None and emu.k8s is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                emu.call(lambda k8s: k8s.listeners.remove(self._stored))

    def _watch(self) -> None:
        """The real server's stand-in for the emulator's hook: a watch of the source Secret,
        each commit timed as it arrives. A read times out every second (so a stop is seen) and
        the watch resumes from the last resourceVersion: no event falls into a gap (one did,
        with a fresh watch every few seconds: a reader then held a value before the probe knew
        its commit, flagged as never committed)."""
        api, rv = self.system.api, ""
        base = (
            f"/api/v1/namespaces/{self.namespace}/secrets?watch=1&allowWatchBookmarks=true"
            f"&fieldSelector=metadata.name%3D{self.name}"
        )
        while not self._stop.is_set():
            url = api.url + base + (f"&resourceVersion={rv}" if rv else "")
            req = urllib.request.Request(url, headers=api.headers())  # noqa: S310
            try:
                with urllib.request.urlopen(req, timeout=1, context=api.context) as r:  # noqa: S310
                    for line in r:
                        rv = self._event(json.loads(line), rv)
            except TimeoutError:
                continue  # resume at once from rv
            except (OSError, ValueError):
                self._stop.wait(0.2)

    def _event(self, event: Obj, rv: str) -> str:
        """One watch event: a stored object timed now; the resourceVersion to resume from."""
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            return ""  # 410 Gone: start over from the current state
        if event.get("type") in ("ADDED", "MODIFIED"):
            self._stored(obj, time.monotonic())
        return str((obj.get("metadata") or {}).get("resourceVersion") or rv)

    def add_reader(self, pod: Pod) -> None:
        with self._lock:
            self.readers.append(pod)

    def _stored(self, obj: Obj, at: float) -> None:
        """Emulator hook (its thread): an object was stored at ``at``."""
        state = committed_state(obj, self.namespace, self.name)
        if state is None:
            return
        with self._lock:
            if state.version in self.commits:
                return
            c = Commit(state.version, at, state.checksum)
            self.commits[state.version] = c
            self._by_checksum.setdefault(c.checksum, c.version)
            for pod, when in self._early.pop(c.checksum, {}).items():
                c.seen.setdefault(pod, when)

    def _poll(self) -> None:
        links: dict[str, str] = {}
        while not self._stop.is_set():
            with self._lock:
                readers = list(self.readers)
            for p in readers:
                link = p.data_link(self.name)
                if link and link != links.get(p.name) and p.mount is not None:
                    now = time.monotonic()
                    digest = files_checksum(p.mount / self.name)
                    if digest is not None:
                        links[p.name] = link
                        self._observe(p.name, digest, now)
            self._stop.wait(self.resolution)

    def _observe(self, pod: str, digest: str, at: float) -> None:
        with self._lock:
            held = self.held.setdefault(pod, [])
            if held and held[-1][1] == digest:
                return  # the same value again (e.g. an agent restart rewrote the files)
            held.append((at, digest))
            version = self._by_checksum.get(digest)
            if version is None:
                self._early.setdefault(digest, {}).setdefault(pod, at)
            else:
                self.commits[version].seen.setdefault(pod, at)

    def latest(self) -> Commit | None:
        with self._lock:
            return self.commits[max(self.commits)] if self.commits else None

    def version_of(self, digest: str) -> int | None:
        with self._lock:
            return self._by_checksum.get(digest)

    def last_version(self, pod: str) -> int | None:
        """The version a reader's files hold last (None: nothing, or a value never committed)."""
        with self._lock:
            held = self.held.get(pod)
            return self._by_checksum.get(held[-1][1]) if held else None

    def never_committed(self) -> list[tuple[str, float]]:
        """(pod, when) of every value a reader held that no stored commit had at that moment."""
        with self._lock:
            return uncommitted(self.held, self._by_checksum, self.commits)

    def delays(self) -> list[float]:
        """Seconds from each commit's store to each reader holding it (commits the probe saw
        being stored)."""
        with self._lock:
            return [
                t - c.at
                for c in self.commits.values()
                if not math.isnan(c.at)  # not the commit already there when the probe started
                for t in c.seen.values()
            ]
