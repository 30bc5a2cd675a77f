"""Audit lines and ingest bodies into entries (one JSON object each; ``None`` for a bad one)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def parse_line(line: bytes | str) -> Mapping[str, Any] | None:
    """One audit entry from a line (a ``prefix`` set on the device is skipped); None if bad."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj = json.loads(text[start:])
    except (ValueError, RecursionError):  # broken, or nested deeper than the parser goes
        return None
    return obj if isinstance(obj, Mapping) else None


def entries(body: bytes) -> Iterable[Mapping[str, Any] | None]:
    """NDJSON, a JSON array, or one object; a record with a ``log`` string is unwrapped."""
    text = body.decode("utf-8", "replace").strip()
    records: Sequence[object]
    try:
        whole = json.loads(text) if text.startswith(("[", "{")) else None
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, list):
        records = whole
    elif isinstance(whole, Mapping):
        records = [whole]
    else:
        records = [parse_line(line) for line in text.splitlines() if line.strip()]
    for rec in records:
        if isinstance(rec, Mapping) and "type" not in rec and isinstance(rec.get("log"), str):
            yield parse_line(rec["log"])
        else:
            yield rec if isinstance(rec, Mapping) else None
