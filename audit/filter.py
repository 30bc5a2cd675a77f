"""Which audit entries are events (pure): a person's successful write to a referenced KV v2
path, not Rotor's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rotor.auditwire import AuditConfig, AuditEvent

WRITE_OPERATIONS = frozenset({"create", "update", "patch"})


def _kv_path(request: Mapping[str, Any]) -> str | None:
    """``<mount>/<path>`` of a KV v2 data request, or None."""
    path = str(request.get("path") or "")
    mount = str(request.get("mount_point") or "")
    if mount and path.startswith(mount):
        rest = path[len(mount) :]
        if not rest.startswith("data/"):
            return None
        inner = rest[len("data/") :].strip("/")
        return f"{mount.strip('/')}/{inner}" if inner else None
    head, sep, inner = path.partition("/data/")  # an entry without mount_point (older servers)
    return f"{head}/{inner.strip('/')}" if sep and head and inner.strip("/") else None


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def classify(entry: Mapping[str, Any], config: AuditConfig) -> AuditEvent | str:
    """An event for a person's successful write to a referenced path; else why not (a label)."""
    if entry.get("type") != "response":
        return "request"  # logged before the operation, which may still fail
    if entry.get("error"):
        return "failed"
    request = entry.get("request")
    if not isinstance(request, Mapping):
        return "malformed"
    if request.get("operation") not in WRITE_OPERATIONS:
        return "not_a_write"
    mount_type = request.get("mount_type")
    if mount_type not in (None, "kv"):
        return "not_kv"
    path = _kv_path(request)
    if path is None:
        return "not_kv"
    if path not in config.paths:
        return "unreferenced"
    auth = _obj(entry.get("auth"))
    meta = _obj(auth.get("metadata"))
    display = str(auth.get("display_name") or "")
    if (
        (meta.get("role") and meta.get("role") in config.roles)
        or (display and display in config.display_names)
        or (auth.get("entity_id") and auth.get("entity_id") in config.entity_ids)
    ):
        return "rotor"
    data = _obj(_obj(entry.get("response")).get("data"))
    version = data.get("version")
    return AuditEvent(
        path,
        version if isinstance(version, int) and not isinstance(version, bool) else None,
        str(entry.get("time") or ""),
        display,
    )
