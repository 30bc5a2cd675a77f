"""The webhook's metrics, registered into a registry passed in (each test gets a fresh one).

Labels carry outcomes and modes only: never a pod, secret or namespace name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Admission is on the pod-creation path: the interesting range is sub-millisecond to 1 s."""


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    """``rotor_webhook_requests_total{result}``: injected, skipped, denied, invalid, error."""
    latency: Histogram
    """``rotor_webhook_request_duration_seconds``: from the request to the answer."""
    injections: Counter
    """``rotor_webhook_injections_total{mode,delivery}``: mode rw|ro; delivery agent|volume|env."""
    cert_reloads: Counter
    """``rotor_webhook_certificate_reloads_total{result}``: ok or error."""
    _by_result: dict[str, Counter] = field(default_factory=dict, repr=False)

    def count_request(self, result: str, seconds: float) -> None:
        """One answered request (label children are looked up once: this is the hot path)."""
        child = self._by_result.get(result)
        if child is None:
            child = self._by_result[result] = self.requests.labels(result)
        child.inc()
        self.latency.observe(seconds)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        return cls(
            requests=Counter(
                "rotor_webhook_requests",
                "Admission requests answered, by result.",
                ["result"],
                registry=registry,
            ),
            latency=Histogram(
                "rotor_webhook_request_duration_seconds",
                "Time from receiving an admission request to answering it.",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            injections=Counter(
                "rotor_webhook_injections",
                "Pods patched, by agent mode and delivery.",
                ["mode", "delivery"],
                registry=registry,
            ),
            cert_reloads=Counter(
                "rotor_webhook_certificate_reloads",
                "Reloads of the serving certificate after its files changed, by result.",
                ["result"],
                registry=registry,
            ),
        )
