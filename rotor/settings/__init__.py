"""Settings of each process: frozen dataclasses read from ``ROTOR_*`` environment variables.

Each process has its own module (``agent``, ``webhook``, ``controller``); the readers that name
the variable in every error live in ``_env``.
"""

from rotor.settings._env import (
    env_bool,
    env_choice,
    env_duration,
    env_float,
    env_int,
    env_str,
)

__all__ = ["env_bool", "env_choice", "env_duration", "env_float", "env_int", "env_str"]
