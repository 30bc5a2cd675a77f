"""Durations as users write them: ``90s``, ``24h``, ``1h30m``, ``500ms``, ``7d``."""

from __future__ import annotations

import re
from collections.abc import Callable

from rotor.errors import InvalidSpec

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
"""The same grammar as a regular expression, for CRD schemas and values.schema.json."""

_FIX = "write a number with a unit, e.g. 90s, 15m, 24h or 1h30m"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _no_unit(field: str, text: object) -> InvalidSpec:
    # A bare number means nothing anywhere (flags, ROTOR_* variables, specs, config files):
    # seconds to one reader and hours to another is how a 24 h rotation becomes 24 s.
    return InvalidSpec(field, f"{text!r} has no unit", _FIX)


def parse_duration(text: object, field: str) -> float:
    """Return the duration in seconds; raise :class:`InvalidSpec` naming ``field`` otherwise."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise InvalidSpec(field, f"expected a duration string, got {type(text).__name__}", _FIX)
    if isinstance(text, int | float):
        raise _no_unit(field, text)
    s = text.strip()
    if _NUMBER.fullmatch(s):
        raise _no_unit(field, text)
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise InvalidSpec(field, f"{text!r} is not a duration", _FIX)
    return total


def format_duration(seconds: float) -> str:
    """The shortest form :func:`parse_duration` reads back (``5400`` -> ``1h30m``)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out = []
    rest = round(seconds * 1000)  # milliseconds: 1.5 s is 1s500ms, not 2s
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, rest = divmod(rest, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0s"


def duration_arg(flag: str, minimum: float = 0.0) -> Callable[[str], float]:
    """An argparse ``type=`` for a duration flag: the same grammar as every other duration,
    and a clear message for one below ``minimum`` (never silently raised to it)."""

    import argparse  # here: the in-cluster agent reads durations and never loads argparse

    def parse(text: str) -> float:
        try:
            seconds = parse_duration(text, flag)
        except InvalidSpec as e:
            raise argparse.ArgumentTypeError(f"{e.problem}; {e.fix}") from None
        if seconds < minimum:
            raise argparse.ArgumentTypeError(
                f"{text!r} is too short; use at least {format_duration(minimum)}"
            )
        return seconds

    parse.__name__ = "duration"  # argparse names the type in its messages
    return parse
