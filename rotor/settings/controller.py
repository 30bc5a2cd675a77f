"""Controller settings: ACL backend and its timings, namespaces, rate limits, ports."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rotor.settings._env import env_bool, env_choice, env_duration, env_int, env_str

DEFAULT_ACL_POLL = 30.0
DEFAULT_MAX_STALENESS = 600.0
DEFAULT_METRICS_PORT = 9755
DEFAULT_RESTART_INTERVAL = 10.0
DEFAULT_UNINJECTED_SWEEP = 60.0
DEFAULT_CANISTER_CERT_MAX_AGE = 300.0
DEFAULT_STORE_CHECK_INTERVAL = 60.0
DEFAULT_AUDIT_RECHECK = 300.0


@dataclass(frozen=True)
class ControllerSettings:
    namespace: str = "rotor-system"
    acl_backend: Literal["configmap", "canister"] = "configmap"
    acl_poll: float = DEFAULT_ACL_POLL
    max_staleness: float = DEFAULT_MAX_STALENESS
    on_stale: Literal["keep", "revoke"] = "keep"
    acl_configmap: str = "rotor-acl"  # in ``namespace``
    canister_id: str = ""
    canister_host: str = "https://icp-api.io"
    canister_identity_secret: str = "rotor-canister-identity"  # noqa: S105 - a name  # in ``namespace``; key identity.pem
    canister_verify: Literal["strict", "hash-tree", "none"] = "strict"
    canister_cert_max_age: float = DEFAULT_CANISTER_CERT_MAX_AGE  # the certificate's /time
    canister_root_key: str = ""  # hex DER; empty: the IC mainnet key; "fetch": ask the host
    metrics_port: int = DEFAULT_METRICS_PORT
    restart_uninjected: bool = True
    restart_min_interval: float = DEFAULT_RESTART_INTERVAL
    restart_env_consumers: bool = True
    """Restart, through their owner, the workloads that read a secret as env vars
    (``rotor.dev/delivery: env``) when its view changes, at most once per
    ``restart_min_interval`` per workload (``restart_method`` says how)."""
    uninjected_sweep: float = DEFAULT_UNINJECTED_SWEEP  # list every annotated workload's
    # uninjected pods this often (and about 1 s after each of its events)
    restart_method: Literal["template", "evict"] = "template"
    """``template``: patch the owner's pod template (needs patch on workloads); ``evict``: evict
    the pod itself (needs only create on pods/eviction: the least-privilege mode)."""
    leader_election: bool = True
    webhook_cert_secret: str = "rotor-webhook-tls"  # noqa: S105 - a name
    webhook_config_name: str = "rotor-webhook"
    manage_certs: bool = True
    store_check_interval: float = DEFAULT_STORE_CHECK_INTERVAL  # ExternalStore Ready re-check
    audit_receiver_url: str = ""  # the audit receiver's events API; empty: Vault is no source
    audit_receiver_token_file: str = ""  # its bearer token, if it requires one
    audit_configmap: str = "rotor-audit-receiver"  # in ``namespace``: the receiver's config
    audit_recheck: float = DEFAULT_AUDIT_RECHECK  # re-read every referenced path this often
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControllerSettings:
        e = os.environ if env is None else env
        d = cls()
        return cls(
            namespace=env_str(e, "ROTOR_NAMESPACE", d.namespace),
            acl_backend=env_choice(
                e,
                "ROTOR_ACL_BACKEND",
                d.acl_backend,  # type: ignore[arg-type]
                ("configmap", "canister"),
            ),
            acl_poll=env_duration(e, "ROTOR_ACL_POLL", d.acl_poll),
            max_staleness=env_duration(e, "ROTOR_ACL_MAX_STALENESS", d.max_staleness),
            on_stale=env_choice(
                e,
                "ROTOR_ACL_ON_STALE",
                d.on_stale,  # type: ignore[arg-type]
                ("keep", "revoke"),
            ),
            acl_configmap=env_str(e, "ROTOR_ACL_CONFIGMAP", d.acl_configmap),
            canister_id=env_str(e, "ROTOR_CANISTER_ID", d.canister_id),
            canister_host=env_str(e, "ROTOR_CANISTER_HOST", d.canister_host),
            canister_identity_secret=env_str(
                e, "ROTOR_CANISTER_IDENTITY_SECRET", d.canister_identity_secret
            ),
            canister_verify=env_choice(
                e,
                "ROTOR_CANISTER_VERIFY",  # type: ignore[arg-type]
                d.canister_verify,
                ("strict", "hash-tree", "none"),
            ),
            canister_cert_max_age=env_duration(
                e, "ROTOR_CANISTER_CERT_MAX_AGE", d.canister_cert_max_age
            ),
            canister_root_key=env_str(e, "ROTOR_CANISTER_ROOT_KEY", d.canister_root_key),
            metrics_port=env_int(e, "ROTOR_CONTROLLER_METRICS_PORT", d.metrics_port, 1, 65535),
            restart_uninjected=env_bool(e, "ROTOR_RESTART_UNINJECTED", d.restart_uninjected),
            restart_method=env_choice(
                e,
                "ROTOR_RESTART_METHOD",
                d.restart_method,  # type: ignore[arg-type]
                ("template", "evict"),
            ),
            restart_min_interval=env_duration(
                e, "ROTOR_RESTART_MIN_INTERVAL", d.restart_min_interval
            ),
            restart_env_consumers=env_bool(
                e, "ROTOR_RESTART_ENV_CONSUMERS", d.restart_env_consumers
            ),
            uninjected_sweep=env_duration(e, "ROTOR_UNINJECTED_SWEEP", d.uninjected_sweep),
            leader_election=env_bool(e, "ROTOR_LEADER_ELECTION", d.leader_election),
            webhook_cert_secret=env_str(e, "ROTOR_WEBHOOK_CERT_SECRET", d.webhook_cert_secret),
            webhook_config_name=env_str(e, "ROTOR_WEBHOOK_CONFIG_NAME", d.webhook_config_name),
            manage_certs=env_bool(e, "ROTOR_MANAGE_CERTS", d.manage_certs),
            store_check_interval=env_duration(
                e, "ROTOR_STORE_CHECK_INTERVAL", d.store_check_interval
            ),
            audit_receiver_url=env_str(e, "ROTOR_AUDIT_RECEIVER_URL", d.audit_receiver_url),
            audit_receiver_token_file=env_str(
                e, "ROTOR_AUDIT_RECEIVER_TOKEN_FILE", d.audit_receiver_token_file
            ),
            audit_configmap=env_str(e, "ROTOR_AUDIT_CONFIGMAP", d.audit_configmap),
            audit_recheck=env_duration(e, "ROTOR_AUDIT_RECHECK", d.audit_recheck),
            log_level=env_choice(
                e, "ROTOR_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
        )
