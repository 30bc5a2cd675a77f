"""Audit receiver settings (``rotor-audit-receiver``): listeners, who may send, bounds."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from rotor.errors import InvalidSpec
from rotor.settings._env import env_duration, env_int, env_str

DEFAULT_SOCKET_PORT = 9760
DEFAULT_INGEST_PORT = 0  # HTTP ingest from a forwarder: off unless a port and a token are set
DEFAULT_EVENTS_PORT = 9762
DEFAULT_ALLOWED_SOURCES = ("127.0.0.1/32", "::1/128")
DEFAULT_CONFIG = "/etc/rotor/audit/config.json"
DEFAULT_MAX_LINE = 1024 * 1024
DEFAULT_MAX_PATHS = 10_000
DEFAULT_CONFIG_POLL = 2.0
DEFAULT_MAX_WAIT = 60.0
DEFAULT_TAIL_POLL = 0.2

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str, name: str) -> tuple[Network, ...]:
    nets: list[Network] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise InvalidSpec(
                name, f"{part!r} is not an address or network", "write e.g. 10.42.0.0/16"
            ) from None
    return tuple(nets)


@dataclass(frozen=True)
class AuditSettings:
    host: str = "0.0.0.0"  # noqa: S104 - Vault's pods must reach the socket listener
    socket_port: int = DEFAULT_SOCKET_PORT
    ingest_port: int = DEFAULT_INGEST_PORT
    events_port: int = DEFAULT_EVENTS_PORT
    allowed_sources: tuple[Network, ...] = tuple(
        ipaddress.ip_network(n) for n in DEFAULT_ALLOWED_SOURCES
    )
    ingest_token_file: str = ""
    events_token_file: str = ""
    config_file: str = DEFAULT_CONFIG
    config_poll: float = DEFAULT_CONFIG_POLL
    max_line: int = DEFAULT_MAX_LINE
    max_paths: int = DEFAULT_MAX_PATHS
    max_wait: float = DEFAULT_MAX_WAIT
    tail_file: str = ""  # a `file` audit device's log on a shared volume (sidecar of Vault)
    tail_poll: float = DEFAULT_TAIL_POLL
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuditSettings:
        e = os.environ if env is None else env
        d = cls()
        raw_sources = e.get("ROTOR_AUDIT_ALLOWED_SOURCES", "").strip()
        settings = cls(
            host=env_str(e, "ROTOR_AUDIT_HOST", d.host),
            socket_port=env_int(e, "ROTOR_AUDIT_SOCKET_PORT", d.socket_port, 0, 65535),
            ingest_port=env_int(e, "ROTOR_AUDIT_INGEST_PORT", d.ingest_port, 0, 65535),
            events_port=env_int(e, "ROTOR_AUDIT_EVENTS_PORT", d.events_port, 0, 65535),
            allowed_sources=(
                parse_networks(raw_sources, "ROTOR_AUDIT_ALLOWED_SOURCES")
                if raw_sources
                else d.allowed_sources
            ),
            ingest_token_file=env_str(e, "ROTOR_AUDIT_INGEST_TOKEN_FILE", ""),
            events_token_file=env_str(e, "ROTOR_AUDIT_EVENTS_TOKEN_FILE", ""),
            config_file=env_str(e, "ROTOR_AUDIT_CONFIG", d.config_file),
            config_poll=env_duration(e, "ROTOR_AUDIT_CONFIG_POLL", d.config_poll),
            max_line=env_int(e, "ROTOR_AUDIT_MAX_LINE", d.max_line, 1024, 64 * 1024 * 1024),
            max_paths=env_int(e, "ROTOR_AUDIT_MAX_PATHS", d.max_paths, 1, 10_000_000),
            max_wait=env_duration(e, "ROTOR_AUDIT_MAX_WAIT", d.max_wait),
            tail_file=env_str(e, "ROTOR_AUDIT_TAIL_FILE", ""),
            tail_poll=env_duration(e, "ROTOR_AUDIT_TAIL_POLL", d.tail_poll),
            log_level=env_str(e, "ROTOR_LOG_LEVEL", d.log_level).upper(),
        )
        if settings.ingest_port and not settings.ingest_token_file:
            raise InvalidSpec(
                "ROTOR_AUDIT_INGEST_TOKEN_FILE",
                "the HTTP ingest port is set but no bearer token is",
                "mount a Secret key with a long random token and point this variable at it",
            )
        return settings
