"""The agent's environment contract: what the webhook sets and the agent reads.

The webhook builds the agent container's ``env`` from :func:`agent_env`; the agent reads it back
with :meth:`AgentEnv.from_env`. Both sides use these constants, so the names cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rotor.annotations import APPLY_HOOK, Reload, parse_reload
from rotor.annotations import DEFAULT_MOUNT_PATH as _DEFAULT_MOUNT_PATH
from rotor.errors import InvalidSpec
from rotor.names import SecretRef
from rotor.settings._env import env_int

MODE = "ROTOR_MODE"
SECRETS = "ROTOR_SECRETS"
RO_SECRETS = "ROTOR_RO_SECRETS"
"""In an RW pod: the secrets it only reads (from ``rotor.dev/ro``), comma list of ``ns/name``."""
MOUNT_PATH = "ROTOR_MOUNT_PATH"
POD_NAME = "ROTOR_POD_NAME"
POD_NAMESPACE = "ROTOR_POD_NAMESPACE"
SERVICE_ACCOUNT = "ROTOR_SERVICE_ACCOUNT"
RELOAD = "ROTOR_RELOAD"
APPLY_HOOK_ENV = "ROTOR_APPLY_HOOK"
METRICS_PORT = "ROTOR_METRICS_PORT"
DEFAULT_METRICS_PORT = 9753
METRICS_PORT_NAME = "rotor-metrics"
DEFAULT_MOUNT_PATH = _DEFAULT_MOUNT_PATH


@dataclass(frozen=True)
class AgentEnv:
    mode: Literal["rw", "ro"]
    secrets: tuple[SecretRef, ...]  # rw: written; ro: read
    ro_secrets: tuple[SecretRef, ...]  # rw mode only: also read
    mount_path: str
    pod_name: str
    pod_namespace: str
    service_account: str
    reload: Reload
    apply_hook: str
    metrics_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentEnv:
        mode = env.get(MODE, "").strip()
        if mode not in ("rw", "ro"):
            raise InvalidSpec(MODE, f"{mode!r} is not a mode", f"set {MODE}=rw or {MODE}=ro")
        ns = env.get(POD_NAMESPACE, "").strip()
        if not ns:
            raise InvalidSpec(
                POD_NAMESPACE, "is not set", "set it from the downward API (metadata.namespace)"
            )

        def refs(name: str) -> tuple[SecretRef, ...]:
            return tuple(
                SecretRef.parse(s, ns, name) for s in env.get(name, "").split(",") if s.strip()
            )

        secrets = refs(SECRETS)
        if not secrets:
            raise InvalidSpec(SECRETS, "lists no secret", f"set {SECRETS}=namespace/name,...")
        hook = env.get(APPLY_HOOK_ENV, "").strip()
        if hook and mode != "rw":
            raise InvalidSpec(APPLY_HOOK_ENV, "is set in ro mode", f"unset it ({APPLY_HOOK})")
        return cls(
            mode=mode,  # type: ignore[arg-type]
            secrets=secrets,
            ro_secrets=refs(RO_SECRETS),
            mount_path=env.get(MOUNT_PATH, "").strip() or DEFAULT_MOUNT_PATH,
            pod_name=env.get(POD_NAME, "").strip(),
            pod_namespace=ns,
            service_account=env.get(SERVICE_ACCOUNT, "").strip() or "default",
            reload=parse_reload(env.get(RELOAD, "none"), RELOAD),
            apply_hook=hook,
            metrics_port=env_int(env, METRICS_PORT, DEFAULT_METRICS_PORT, 1, 65535),
        )

    def to_env(self) -> dict[str, str]:
        """The variables, as the webhook writes them (downward-API ones are left to the caller)."""
        out = {
            MODE: self.mode,
            SECRETS: ",".join(map(str, self.secrets)),
            MOUNT_PATH: self.mount_path,
            RELOAD: str(self.reload),
            METRICS_PORT: str(self.metrics_port),
        }
        if self.ro_secrets:
            out[RO_SECRETS] = ",".join(map(str, self.ro_secrets))
        if self.apply_hook:
            out[APPLY_HOOK_ENV] = self.apply_hook
        return out
