"""Rotation steps 5 and 8: a committed state into its files, then the app told.

One copy for the writer's engine (:class:`agent.engine.SecretRotator`) and every mirror (an RW
replica that is not the writer, an RO consumer: :class:`agent.incluster.Mirror`), so each
counts its reloads the same way (``rotor_agent_reload_notifications_total``).

The files are rewritten only when they differ from the last ones written (a checksum of the
set); the app is told only when the *version* changed since, and never for the first files an
agent writes (the app is only starting and reads them anyway). The notification runs in the
background (an app that is slow to answer holds up no rotation); :func:`drain_notifications`
waits for those in flight (shutdown, tests).
"""

from __future__ import annotations

import asyncio
import json
import logging

from agent.files import METADATA, AtomicWriter, files_for, value_files
from agent.hooks import Reloader
from agent.metrics import AgentMetrics
from rotor.layout import SecretState, checksum

log = logging.getLogger("rotor.agent")

_background: set[asyncio.Future[None]] = set()


async def drain_notifications() -> None:
    """Wait for reload notifications in flight (tests, shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


class Delivery:
    """The files of one secret and the reload of its app."""

    def __init__(
        self, name: str, files: AtomicWriter, metrics: AgentMetrics, reloader: Reloader | None
    ) -> None:
        self.name = name
        self.files = files
        self.metrics = metrics
        self.reloader = reloader
        self._written: str | None = None  # digest of the files last written
        self._version = 0  # version of the files last written (0: none since reset())

    @property
    def written(self) -> bool:
        """Files were written (since the last :meth:`forget` or :meth:`reset`)."""
        return self._written is not None

    def deliver(self, state: SecretState, due: float | None) -> bool:
        """Write the files of ``state`` (with ``due`` as the next rotation in ``.rotor.json``)
        if they differ from the last written, and tell the app of a new version. True when
        files were written; an OSError (disk full, folder gone) leaves everything as it was."""
        files = files_for(state, due)
        digest = checksum(files)
        if digest == self._written:
            return False
        self.files.write(files)
        first, self._written = self._written is None, digest
        if state.version != self._version:
            self._version = state.version
            if not first:
                self._notify(state.version, value_files(files))
        return True

    def shown_version(self) -> int:
        """The version the app sees now: the last written here, or (none written yet, e.g. at a
        restart) the one in the folder's ``.rotor.json``; 0 when there is none."""
        if self._written is not None:
            return self._version
        try:
            meta = json.loads(self.files.read().get(METADATA, b"{}"))
        except (OSError, ValueError):
            return 0
        version = meta.get("version") if isinstance(meta, dict) else None
        return version if isinstance(version, int) else 0

    def forget(self) -> None:
        """Another writer of these files takes over; the next :meth:`deliver` writes again (and
        tells the app nothing, as for a first write)."""
        self._written = None

    def reset(self) -> None:
        """The files are gone: start over as a new agent would."""
        self._written, self._version = None, 0

    def _notify(self, version: int, files: list[str]) -> None:
        reloader = self.reloader
        if reloader is None or reloader.method == "none":
            return

        async def notify() -> None:
            ok = await reloader.notify(self.name, version, files)
            result = "success" if ok else "failure"
            self.metrics.reloads.labels(self.name, reloader.method, result).inc()
            log.info("reload secret=%s version=%d result=%s", self.name, version, result)

        task = asyncio.ensure_future(notify())
        _background.add(task)
        task.add_done_callback(_background.discard)
