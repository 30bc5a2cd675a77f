"""Agent settings: tuning, and the logins the agent reads from its environment (the
pod-specific contract the webhook writes is :mod:`rotor.env`). Read once at start, by
:meth:`AgentSettings.from_env` (the in-cluster agent: ``agent/config.py``; standalone:
``agent/cli.py``), and passed down; nothing in the agent reads ``ROTOR_*`` elsewhere."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from rotor.errors import InvalidSpec
from rotor.settings._env import env_choice, env_duration, env_float, env_int, env_str

DEFAULT_JITTER = 0.05
"""Each interval is shortened by a random 0-5 %, so replicas and secrets do not rotate in step."""
DEFAULT_HOOK_TIMEOUT = 10.0
DEFAULT_BACKOFF_BASE = 2.0
DEFAULT_BACKOFF_MAX = 300.0
DEFAULT_FILE_MODE = 0o440
DEFAULT_API_TIMEOUT = 10.0
DEFAULT_VAULT_TIMEOUT = 10.0

ENV_RELOAD_PROCESS = "ROTOR_RELOAD_PROCESS"
"""``signal:*`` reload in a pod: signal only processes of this name (default: every other
container's main process)."""
ENV_VAULT_TOKEN = "ROTOR_VAULT_TOKEN"  # noqa: S105 - a variable name
ENV_VAULT_TOKEN_FILE = "ROTOR_VAULT_TOKEN_FILE"  # noqa: S105 - a variable name
ENV_VAULT_JWT_FILE = "ROTOR_VAULT_JWT_FILE"
ENV_VAULT_TIMEOUT = "ROTOR_VAULT_TIMEOUT"


def _file_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0o400 <= mode <= 0o777 or mode & 0o022:
        raise InvalidSpec(
            "ROTOR_FILE_MODE",
            f"{text!r} is not a usable file mode",
            "give an octal mode readable by the owner and not writable by others, e.g. 0440",
        )
    return mode


@dataclass(frozen=True)
class AgentSettings:
    jitter: float = DEFAULT_JITTER
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_max: float = DEFAULT_BACKOFF_MAX
    file_mode: int = DEFAULT_FILE_MODE
    api_timeout: float = DEFAULT_API_TIMEOUT
    log_level: str = "INFO"
    reload_process: str = ""
    vault_token: str = field(default="", repr=False)
    """A Vault token given directly (``ROTOR_VAULT_TOKEN``; prefer the file)."""
    vault_token_file: str = ""
    vault_jwt_file: str = ""
    """The service-account token for Vault's Kubernetes login ("": the pod's own)."""
    vault_timeout: float = DEFAULT_VAULT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentSettings:
        e = os.environ if env is None else env
        return cls(
            jitter=env_float(e, "ROTOR_JITTER", DEFAULT_JITTER, 0.0, 0.5),
            hook_timeout=env_duration(e, "ROTOR_HOOK_TIMEOUT", DEFAULT_HOOK_TIMEOUT),
            backoff_base=env_duration(e, "ROTOR_BACKOFF_BASE", DEFAULT_BACKOFF_BASE),
            backoff_max=env_duration(e, "ROTOR_BACKOFF_MAX", DEFAULT_BACKOFF_MAX),
            file_mode=_file_mode(env_str(e, "ROTOR_FILE_MODE", "0440")),
            api_timeout=env_duration(e, "ROTOR_API_TIMEOUT", DEFAULT_API_TIMEOUT),
            log_level=env_choice(
                e, "ROTOR_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
            reload_process=e.get(ENV_RELOAD_PROCESS, ""),
            vault_token=e.get(ENV_VAULT_TOKEN, "").strip(),
            vault_token_file=e.get(ENV_VAULT_TOKEN_FILE, "").strip(),
            vault_jwt_file=e.get(ENV_VAULT_JWT_FILE, "").strip(),
            vault_timeout=_seconds(e, ENV_VAULT_TIMEOUT, DEFAULT_VAULT_TIMEOUT),
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A plain number of seconds (``ROTOR_VAULT_TIMEOUT`` has always been one, not a duration)."""
    raw = env.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise InvalidSpec(name, f"{raw!r} is not a number", "e.g. 10") from None


__all__ = ["AgentSettings", "env_int"]
