"""The controller's Prometheus metrics, registered into a registry passed in (one per test).

Labels never carry a value, only names of secrets, states and kinds of errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._work(registry)
        self._acl(registry)
        self._publishing(registry)
        self._cluster(registry)

    def _work(self, registry: CollectorRegistry) -> None:
        """Reconciles and failures."""
        self.reconciles = Counter(
            "rotor_controller_reconciles_total",
            "Reconciles of a RotatingSecret, by result (ok, conflict: retried, error).",
            ["result"],
            registry=registry,
        )
        self.errors = Counter(
            "rotor_controller_errors_total",
            "Failures, by kind (acl, api, spec, source, fanout, store, restart, leader, certs, "
            "audit).",
            ["kind"],
            registry=registry,
        )

    def _acl(self, registry: CollectorRegistry) -> None:
        """The ACL: sync time, staleness, unusable entries, entries by state."""
        self.acl_sync_seconds = Histogram(
            "rotor_controller_acl_sync_duration_seconds",
            "Time to read the ACL and record new requests.",
            buckets=_FAST,
            registry=registry,
        )
        self.acl_staleness = Gauge(
            "rotor_controller_acl_staleness_seconds",
            "Seconds since the last good ACL read (0 while fresh).",
            registry=registry,
        )
        self.acl_stale = Gauge(
            "rotor_controller_acl_stale",
            "1 while the ACL in use is the last good one because the backend failed.",
            registry=registry,
        )
        self.acl_skipped = Gauge(
            "rotor_controller_acl_skipped_entries",
            "1 for each ACL entry left out as unusable (e.g. a name that is not a Kubernetes "
            "name), by where it is in the ACL and the secret it names; `rotor acl retire` or "
            "`rotor acl revoke` removes it.",
            ["entry", "secret"],
            registry=registry,
        )
        self.grants = Gauge(
            "rotor_controller_grants",
            "ACL entries by state (granted, pending, denied) and mode.",
            ["state", "mode"],
            registry=registry,
        )

    def _publishing(self, registry: CollectorRegistry) -> None:
        """The fan-out: time, views written, consumers behind."""
        self.fanout_seconds = Histogram(
            "rotor_controller_fanout_duration_seconds",
            "Time to write the RO views of one secret's new version.",
            buckets=_FAST,
            registry=registry,
        )
        self.views_written = Counter(
            "rotor_controller_views_written_total",
            "RO views created or updated.",
            registry=registry,
        )
        self.consumers_behind = Gauge(
            "rotor_controller_consumers_behind",
            "Granted RO consumers whose view is not at the current version.",
            registry=registry,
        )

    def _cluster(self, registry: CollectorRegistry) -> None:
        """Restarts, leadership, external stores, Vault as a source, RotatingSecrets by phase."""
        self.restarts = Counter(
            "rotor_controller_restarts_total",
            "Workloads restarted because their pods were admitted without injection, by action.",
            ["action"],
            registry=registry,
        )
        self.env_restarts = Counter(
            "rotor_controller_env_restarts_total",
            "Workloads restarted because a secret they read as env vars changed, by method.",
            ["method"],
            registry=registry,
        )
        self.leader = Gauge(
            "rotor_controller_leader",
            "1 while this replica holds the leader Lease.",
            registry=registry,
        )
        self.store_ready = Gauge(
            "rotor_controller_external_store_ready",
            "1 while an ExternalStore's last check passed (login and a KV v2 mount), else 0.",
            ["namespace", "name"],
            registry=registry,
        )
        self.propagations = Counter(
            "rotor_controller_propagations_total",
            "Decisions on a value changed in an external store (Vault as a source), by reason "
            "(Propagate, InSync, RotorWrite, KeysMismatch, ...).",
            ["reason"],
            registry=registry,
        )
        self.rotating_secrets = Gauge(
            "rotor_controller_rotating_secrets",
            "RotatingSecrets known, by phase.",
            ["phase"],
            registry=registry,
        )
