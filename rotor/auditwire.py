"""The audit receiver's contract with the controller: the config file the controller writes
(:class:`AuditConfig`, :func:`render_config`) and the events it long-polls (:class:`AuditEvent`,
:class:`EventsPage`). Both sides import it; neither imports the other (``audit/`` and
``controller/`` talk over HTTP and a mounted ConfigMap only)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rotor.errors import InvalidSpec


@dataclass(frozen=True)
class AuditConfig:
    """Referenced KV paths (``<mount>/<path>``) and the identities Rotor writes with."""

    paths: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    display_names: frozenset[str] = frozenset()
    entity_ids: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, obj: object, origin: str = "config") -> AuditConfig:
        if not isinstance(obj, Mapping):
            raise InvalidSpec(origin, "expected a JSON object", 'write {"paths": [...]}')

        def strings(value: object, name: str) -> frozenset[str]:
            if value is None:
                return frozenset()
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidSpec(f"{origin}.{name}", "expected a list of strings", "")
            return frozenset(v.strip("/") for v in value if v.strip("/"))

        rotor = obj.get("rotor") or {}
        if not isinstance(rotor, Mapping):
            raise InvalidSpec(f"{origin}.rotor", "expected an object", "")
        return cls(
            paths=strings(obj.get("paths"), "paths"),
            roles=strings(rotor.get("roles"), "rotor.roles"),
            display_names=strings(rotor.get("displayNames"), "rotor.displayNames"),
            entity_ids=strings(rotor.get("entityIds"), "rotor.entityIds"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "paths": sorted(self.paths),
            "rotor": {
                "roles": sorted(self.roles),
                "displayNames": sorted(self.display_names),
                "entityIds": sorted(self.entity_ids),
            },
        }


def render_config(
    paths: Iterable[tuple[str, str]],
    roles: Iterable[str] = (),
    display_names: Iterable[str] = (),
    entity_ids: Iterable[str] = (),
) -> str:
    """The config file's text from ``(mount, path)`` pairs (what the controller writes)."""
    cfg = AuditConfig(
        frozenset(f"{m.strip('/')}/{p.strip('/')}" for m, p in paths),
        frozenset(roles),
        frozenset(display_names),
        frozenset(entity_ids),
    )
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class AuditEvent:
    """A write to a referenced path: no value, only where, which version, when and who."""

    path: str  # <mount>/<path>
    store_version: int | None
    time: str
    actor: str
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "path": self.path,
            "storeVersion": self.store_version,
            "time": self.time,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class EventsPage:
    epoch: str
    reset: bool
    last: int
    dropped: int
    events: tuple[AuditEvent, ...]
