"""The agent's Prometheus metrics, registered into a registry passed in (a fresh one per test).

=================================================  =========  ===================================
metric                                             type       labels
=================================================  =========  ===================================
``rotor_agent_rotations_total``                    counter    secret, result (success, failure,
                                                              conflict, aborted)
``rotor_agent_rotation_duration_seconds``          histogram  secret (generate to files written)
``rotor_agent_secret_version``                     gauge      secret (0 before the first value)
``rotor_agent_last_rotation_timestamp_seconds``    gauge      secret (Unix time of the commit)
``rotor_agent_next_rotation_timestamp_seconds``    gauge      secret (0 when none is scheduled)
``rotor_agent_previous_expiry_timestamp_seconds``  gauge      secret (0 when no previous value)
``rotor_agent_apply_hook_failures_total``          counter    secret, reason (status, error)
``rotor_agent_target_failures_total``              counter    secret, step (apply, retire),
                                                              reason (DatabaseUnreachable,
                                                              AdminLoginRefused, ...)
``rotor_agent_reload_notifications_total``         counter    secret, method (signal, http),
                                                              result (success, failure)
``rotor_agent_secret_ready``                       gauge      secret (1 once files are written)
=================================================  =========  ===================================

Labels carry names only, never a value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rotations = Counter(
            "rotor_agent_rotations",
            "Rotations attempted by the agent, by secret and result.",
            ["secret", "result"],
            registry=registry,
        )
        self.rotation_duration = Histogram(
            "rotor_agent_rotation_duration_seconds",
            "Time from generating new values to writing the files of a committed rotation.",
            ["secret"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.version = Gauge(
            "rotor_agent_secret_version",
            "Version of the secret's current value (0 before the first value).",
            ["secret"],
            registry=registry,
        )
        self.last_rotation = Gauge(
            "rotor_agent_last_rotation_timestamp_seconds",
            "Unix time of the last committed rotation.",
            ["secret"],
            registry=registry,
        )
        self.next_rotation = Gauge(
            "rotor_agent_next_rotation_timestamp_seconds",
            "Unix time of the next scheduled rotation (0 when none is scheduled).",
            ["secret"],
            registry=registry,
        )
        self.previous_expiry = Gauge(
            "rotor_agent_previous_expiry_timestamp_seconds",
            "Unix time at which the previous value is dropped (0 when there is none).",
            ["secret"],
            registry=registry,
        )
        self.apply_hook_failures = Counter(
            "rotor_agent_apply_hook_failures",
            "Apply-hook calls that did not answer 2xx (the rotation was aborted).",
            ["secret", "reason"],
            registry=registry,
        )
        self.target_failures = Counter(
            "rotor_agent_target_failures",
            "Target steps (spec.target) that failed: apply aborts the rotation, retire is "
            "retried at the next rotation.",
            ["secret", "step", "reason"],
            registry=registry,
        )
        self.reloads = Counter(
            "rotor_agent_reload_notifications",
            "Notifications sent to the app after a new value was written.",
            ["secret", "method", "result"],
            registry=registry,
        )
        self.api_denied = Counter(
            "rotor_agent_api_denied",
            "Kubernetes API calls refused with 401/403 (the service account lacks the permission).",
            ["secret"],
            registry=registry,
        )
        self.ready = Gauge(
            "rotor_agent_secret_ready",
            "1 once the secret's files are written, else 0.",
            ["secret"],
            registry=registry,
        )
