"""Webhook settings: where it listens, its certificate, and what it injects."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rotor.settings._env import env_choice, env_int, env_str

DEFAULT_PORT = 8443
DEFAULT_METRICS_PORT = 9754
DEFAULT_AGENT_IMAGE = "ghcr.io/rotor-dev/rotor-agent:0.1.0"
DEFAULT_MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit


@dataclass(frozen=True)
class WebhookSettings:
    host: str = "0.0.0.0"  # noqa: S104 - a webhook must be reachable by the API server
    port: int = DEFAULT_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    cert_file: str = "/etc/rotor/tls/tls.crt"
    key_file: str = "/etc/rotor/tls/tls.key"
    agent_image: str = DEFAULT_AGENT_IMAGE
    agent_pull_policy: str = "IfNotPresent"
    agent_cpu_request: str = "10m"
    agent_memory_request: str = "36Mi"  # docs/benchmarks.md: 28-30 MiB, 34.4 with OpenBao
    agent_cpu_limit: str = ""
    agent_memory_limit: str = "64Mi"
    sidecar_mode: Literal["native", "classic"] = "native"
    own_namespace: str = "rotor-system"
    own_app_label: str = "rotor"  # pods labelled app.kubernetes.io/name=<this> in own_namespace
    max_body: int = DEFAULT_MAX_BODY
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        e = os.environ if env is None else env
        d = cls()
        return cls(
            host=env_str(e, "ROTOR_WEBHOOK_HOST", d.host),
            port=env_int(e, "ROTOR_WEBHOOK_PORT", d.port, 1, 65535),
            metrics_port=env_int(e, "ROTOR_WEBHOOK_METRICS_PORT", d.metrics_port, 1, 65535),
            cert_file=env_str(e, "ROTOR_WEBHOOK_CERT_FILE", d.cert_file),
            key_file=env_str(e, "ROTOR_WEBHOOK_KEY_FILE", d.key_file),
            agent_image=env_str(e, "ROTOR_AGENT_IMAGE", d.agent_image),
            agent_pull_policy=env_choice(
                e,
                "ROTOR_AGENT_PULL_POLICY",
                d.agent_pull_policy,
                ("Always", "IfNotPresent", "Never"),
            ),
            agent_cpu_request=env_str(e, "ROTOR_AGENT_CPU_REQUEST", d.agent_cpu_request),
            agent_memory_request=env_str(e, "ROTOR_AGENT_MEMORY_REQUEST", d.agent_memory_request),
            agent_cpu_limit=e.get("ROTOR_AGENT_CPU_LIMIT", d.agent_cpu_limit).strip(),
            agent_memory_limit=e.get("ROTOR_AGENT_MEMORY_LIMIT", d.agent_memory_limit).strip(),
            sidecar_mode=env_choice(
                e,
                "ROTOR_SIDECAR_MODE",
                d.sidecar_mode,  # type: ignore[arg-type]
                ("native", "classic"),
            ),
            own_namespace=env_str(e, "ROTOR_NAMESPACE", d.own_namespace),
            own_app_label=env_str(e, "ROTOR_APP_LABEL", d.own_app_label),
            max_body=env_int(e, "ROTOR_WEBHOOK_MAX_BODY", d.max_body, 1024, 64 * 1024 * 1024),
            log_level=env_choice(
                e, "ROTOR_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
        )
