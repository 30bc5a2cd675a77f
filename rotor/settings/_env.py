"""Typed readers of ``ROTOR_*`` environment variables; every error names the variable."""

from __future__ import annotations

from collections.abc import Mapping

from rotor.durations import parse_duration
from rotor.errors import InvalidSpec

Env = Mapping[str, str]


def env_str(env: Env, name: str, default: str) -> str:
    return env.get(name, default).strip() or default


def env_int(env: Env, name: str, default: int, lo: int = 0, hi: int = 2**31) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSpec(
            name, f"{raw!r} is not an integer", f"set e.g. {name}={default}"
        ) from None
    if not lo <= value <= hi:
        raise InvalidSpec(name, f"{value} is out of range", f"use {lo} to {hi}")
    return value


def env_float(env: Env, name: str, default: float, lo: float = 0.0, hi: float = 1e12) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidSpec(name, f"{raw!r} is not a number", f"set e.g. {name}={default}") from None
    if not lo <= value <= hi:
        raise InvalidSpec(name, f"{value} is out of range", f"use {lo} to {hi}")
    return value


def env_bool(env: Env, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise InvalidSpec(name, f"{raw!r} is not a boolean", f"set {name}=true or {name}=false")


def env_duration(env: Env, name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    return parse_duration(raw, name) if raw else default


def env_choice(env: Env, name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or default
    if raw not in choices:
        raise InvalidSpec(name, f"{raw!r} is not supported", f"use one of {', '.join(choices)}")
    return raw
