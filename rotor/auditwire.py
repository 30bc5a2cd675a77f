"""The audit receiver's contract with the controller: the config file the controller writes
(:class:`AuditConfig`, :func:`render_config`) and the events it long-polls (:class:`AuditEvent`,
:class:`EventsPage`, each encoded by ``to_dict`` and decoded by ``from_dict`` here and nowhere
else, bounded by :data:`MAX_EVENTS_PER_PAGE` and :data:`MAX_PAGE_BYTES`). Both sides import it;
neither imports the other (``audit/`` and
``controller/`` talk over HTTP and a mounted ConfigMap only)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rotor.errors import InvalidSpec, PermanentError


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


MAX_EVENTS_PER_PAGE = 1000
"""A page of the long-poll holds at most this many events (the receiver stops there; the
controller refuses a longer page)."""
MAX_PAGE_BYTES = 4 << 20
"""The controller reads at most this much of one page."""


class WireError(PermanentError):
    """An answer of the receiver that is not a page of events (another version, or a bug):
    retrying at once would get the same answer."""


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

    @classmethod
    def from_dict(cls, obj: object, where: str = "event") -> AuditEvent:
        """Decoded as :meth:`to_dict` wrote it; :class:`WireError` naming the field."""
        if not isinstance(obj, Mapping):
            raise WireError(f"{where}: expected an object")
        version = obj.get("storeVersion")
        if version is not None and not _is_int(version):
            raise WireError(f"{where}.storeVersion: expected an integer or null")
        return cls(
            _text(obj, "path", where),
            version,
            _text(obj, "time", where),
            _text(obj, "actor", where),
            _count(obj, "seq", where),
        )


@dataclass(frozen=True)
class EventsPage:
    """One answer of the long-poll ``GET /events``: the receiver's ``epoch`` (new at each
    start), whether the caller's epoch was another one (``reset``: it starts again from 0), the
    last sequence number, how many paths were ``dropped`` over the bound, and the events."""

    epoch: str
    reset: bool
    last: int
    dropped: int
    events: tuple[AuditEvent, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "reset": self.reset,
            "last": self.last,
            "dropped": self.dropped,
            "events": [e.to_dict() for e in self.events],
        }

    @classmethod
    def from_dict(cls, obj: object) -> EventsPage:
        """Decoded as :meth:`to_dict` wrote it (at most :data:`MAX_EVENTS_PER_PAGE` events);
        :class:`WireError` naming the field."""
        if not isinstance(obj, Mapping):
            raise WireError("the page: expected a JSON object")
        events = obj.get("events")
        if not isinstance(events, list):
            raise WireError("events: expected a list")
        if len(events) > MAX_EVENTS_PER_PAGE:
            raise WireError(f"events: {len(events)} in one page, over {MAX_EVENTS_PER_PAGE}")
        if not isinstance(obj.get("reset"), bool):
            raise WireError("reset: expected true or false")
        return cls(
            _text(obj, "epoch", "the page"),
            obj["reset"],
            _count(obj, "last", "the page"),
            _count(obj, "dropped", "the page"),
            tuple(AuditEvent.from_dict(e, f"events[{i}]") for i, e in enumerate(events)),
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise WireError(f"{where}.{key}: expected a string")
    return value


def _count(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WireError(f"{where}.{key}: expected a non-negative integer")
    return value
