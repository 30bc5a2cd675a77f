"""The receiver's state shared by its inputs and apps: configuration (re-read when it changes),
queue, metrics, and accepting an entry."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from audit.filter import classify
from audit.metrics import AuditMetrics
from audit.queue import EventQueue
from rotor.auditwire import AuditConfig, AuditEvent
from rotor.errors import InvalidSpec
from rotor.settings.audit import AuditSettings

log = logging.getLogger(__name__)

INPUT_RETRY = 1.0
"""Seconds before a failed input (the file tail, the config poll) tries again."""


@dataclass
class Receiver:
    """State shared by the listeners: configuration, queue, metrics."""

    settings: AuditSettings
    queue: EventQueue
    metrics: AuditMetrics
    config: AuditConfig = field(default_factory=AuditConfig)
    config_stamp: tuple[int, int, int] | None = None
    config_error: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    """Input (``socket``, ``file``, ``config``) -> ``ok`` or why it last failed; /healthz."""
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def supervise(self, name: str, step: Callable[[], Awaitable[None]], every: float) -> None:
        """Run ``step`` every ``every`` seconds for ever; an exception is logged, counted and
        shown on /healthz, and the input goes on after a pause (it never dies silently)."""
        self.inputs[name] = "ok"
        while True:
            try:
                await step()
                self.inputs[name] = "ok"
            except Exception as e:
                self.inputs[name] = f"failing: {type(e).__name__}"
                self.metrics.input_errors.labels(name).inc()
                log.warning("audit %s input failed (%s); retrying", name, type(e).__name__)
                await asyncio.sleep(max(every, INPUT_RETRY))
                continue
            await asyncio.sleep(every)

    @classmethod
    def create(cls, settings: AuditSettings, registry: CollectorRegistry | None = None) -> Receiver:
        r = cls(
            settings, EventQueue(settings.max_paths), AuditMetrics(registry or CollectorRegistry())
        )
        r.reload_config()
        return r

    def set_config(self, config: AuditConfig) -> None:
        self.config = config
        self.metrics.paths.set(len(config.paths))

    def reload_config(self) -> bool:
        """Re-read the config file if it changed; a bad file keeps the last good config."""
        path = Path(self.settings.config_file)
        try:
            st = path.stat()
        except OSError:
            if self.config_error != "missing":
                log.warning("audit config %s is missing: no path is referenced yet", path)
            self.config_error = "missing"
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self.config_stamp:
            return False
        self.config_stamp = stamp
        try:
            cfg = AuditConfig.from_dict(json.loads(path.read_text()), str(path))
        except (OSError, ValueError, InvalidSpec) as exc:
            self.config_error = str(exc)
            log.warning("audit config %s is invalid, keeping the last good one: %s", path, exc)
            return False
        self.config_error = ""
        self.set_config(cfg)
        log.info("audit config: %d referenced paths", len(cfg.paths))
        return True

    def accept(self, entry: Mapping[str, Any] | None) -> AuditEvent | None:
        """Queue the entry if it is an event; never raises (an input must outlive any entry)."""
        try:
            return self._accept(entry)
        except Exception as e:  # a shape classify() did not foresee: count it, keep going
            self.metrics.entries.labels("malformed").inc()
            log.warning("audit: an entry could not be read (%s)", type(e).__name__)
            return None

    def _accept(self, entry: Mapping[str, Any] | None) -> AuditEvent | None:
        if entry is None:
            self.metrics.entries.labels("malformed").inc()
            return None
        got = classify(entry, self.config)
        if isinstance(got, str):
            self.metrics.entries.labels(got).inc()
            return None
        dropped = self.queue.dropped
        stored = self.queue.put(got)
        self.metrics.entries.labels("event").inc()
        self.metrics.dropped.inc(self.queue.dropped - dropped)
        self.metrics.queued.set(len(self.queue))
        log.info(
            "write to %s (version %s) by %r queued as event %d",
            stored.path,
            stored.store_version,
            stored.actor,
            stored.seq,
        )
        return stored

    def allowed(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.settings.allowed_sources)
