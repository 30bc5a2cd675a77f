"""The receiver's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.entries = Counter(
            "rotor_audit_entries_total",
            "Audit entries received, by result (event, rotor, unreferenced, request, ...).",
            ["result"],
            registry=registry,
        )
        self.rejected = Counter(
            "rotor_audit_rejected_total",
            "Senders refused, by input (socket: address not allowed; http: bad token).",
            ["input"],
            registry=registry,
        )
        self.queued = Gauge(
            "rotor_audit_queue_paths", "Distinct paths with a queued event.", registry=registry
        )
        self.dropped = Counter(
            "rotor_audit_queue_dropped_total",
            "Events dropped because the queue held too many paths.",
            registry=registry,
        )
        self.paths = Gauge(
            "rotor_audit_config_paths", "Referenced paths in the configuration.", registry=registry
        )
        self.input_errors = Counter(
            "rotor_audit_input_errors_total",
            "Failures of an input (socket, file, config) that it recovered from.",
            ["input"],
            registry=registry,
        )
