"""Logging for every Rotor process: one line per event, ``key=value`` context, no secret values.

Rotor never passes a value to a logger; this module adds a second line of defence: a filter that
drops any record whose message contains a string registered with :func:`register_secret` (the
agent registers each value it generates) and counts it, so a test can prove nothing leaked.
"""

from __future__ import annotations

import logging
import sys
import weakref

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_secrets: dict[str, None] = {}
"""The registered values, oldest first (a dict keeps insertion order: an ordered set)."""
_redacted = 0
_filters: weakref.WeakSet[logging.Handler] = weakref.WeakSet()
MIN_REGISTERED = 8  # short strings would redact ordinary words
MAX_REGISTERED = 1024
"""The most values kept: the newest ones. A process holds at most current, previous and pending
values of each key of each of its secrets (64 secrets of a few keys fit); a value rotated out
long ago is no longer valid, so forgetting the oldest keeps the filter's cost per line bounded
(every line is searched for every value) however long the process runs."""


def register_secret(value: bytes | str) -> None:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if len(text) >= MIN_REGISTERED:
        _secrets.pop(text, None)  # registered again: it is the newest now
        _secrets[text] = None
        while len(_secrets) > MAX_REGISTERED:
            del _secrets[next(iter(_secrets))]


def forget_secret(value: bytes | str) -> None:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    _secrets.pop(text, None)


def registered_count() -> int:
    """How many values the filter searches for (bounded by :data:`MAX_REGISTERED`)."""
    return len(_secrets)


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        global _redacted
        if not _secrets:
            return True
        msg = record.getMessage()
        for s in _secrets:
            if s in msg:
                _redacted += 1
                record.msg, record.args = "[log line dropped: it contained a secret value]", ()
                break
        return True


def redacted_count() -> int:
    return _redacted


def setup(level: str = "INFO", stream: object = None) -> None:
    """Configure the root logger once: plain text lines to stderr, with the redact filter."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if h in _filters:
            root.removeHandler(h)
    _filters.add(handler)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "kubernetes.client.rest", "urllib3", "hpack", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
