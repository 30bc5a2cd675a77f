"""Agent settings (tuning; the pod-specific contract is :mod:`rotor.env`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rotor.errors import InvalidSpec
from rotor.settings._env import env_choice, env_duration, env_float, env_int, env_str

DEFAULT_JITTER = 0.05
"""Each interval is shortened by a random 0-5 %, so replicas and secrets do not rotate in step."""
DEFAULT_HOOK_TIMEOUT = 10.0
DEFAULT_BACKOFF_BASE = 2.0
DEFAULT_BACKOFF_MAX = 300.0
DEFAULT_FILE_MODE = 0o440
DEFAULT_API_TIMEOUT = 10.0


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
        )


__all__ = ["AgentSettings", "env_int"]
