"""The controller's one ``metav1.LabelSelector`` (pure): read from a workload's ``spec.selector``,
as the query string the API server takes in ``labelSelector`` (:meth:`LabelSelector.query`, to
list a workload's pods) and matched against a pod's labels (:meth:`LabelSelector.matches`, the
owner chain checked before a restart, :mod:`controller.ownerchain`).

An empty selector, or one this module cannot read (an unknown operator, ``In`` without values),
is None: it selects nothing here. The API server refuses such selectors on apps/v1 and batch/v1
workloads, and an empty one would select every pod of the namespace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    @classmethod
    def parse(cls, obj: object) -> Requirement | None:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("key"), str):
            return None
        op, values = obj.get("operator"), obj.get("values") or []
        if op not in OPERATORS or not isinstance(values, list):
            return None
        if (op in ("In", "NotIn")) != bool(values):
            return None  # In/NotIn need values; Exists/DoesNotExist take none
        return cls(obj["key"], str(op), tuple(sorted(str(v) for v in values)))

    def query(self) -> str:
        listed = ",".join(self.values)
        return {
            "In": f"{self.key} in ({listed})",
            "NotIn": f"{self.key} notin ({listed})",
            "Exists": self.key,
            "DoesNotExist": f"!{self.key}",
        }[self.operator]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        return (self.key in labels) == (self.operator == "Exists")


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...]
    expressions: tuple[Requirement, ...]

    @classmethod
    def parse(cls, obj: object) -> LabelSelector | None:
        """The selector, or None when it is empty or not one."""
        if not isinstance(obj, Mapping):
            return None
        labels = obj.get("matchLabels") or {}
        raw = obj.get("matchExpressions") or []
        if not isinstance(labels, Mapping) or not isinstance(raw, list):
            return None
        expressions = [Requirement.parse(e) for e in raw]
        if not (labels or expressions) or None in expressions:
            return None
        return cls(
            tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            tuple(e for e in expressions if e is not None),
        )

    def query(self) -> str:
        """As the API server takes it in ``labelSelector``."""
        parts = [f"{k}={v}" for k, v in self.match_labels]
        return ",".join(parts + [e.query() for e in self.expressions])

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            e.matches(labels) for e in self.expressions
        )
