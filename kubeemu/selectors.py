"""Label and field selectors, as the API server parses and matches them (no Python library
parses the Kubernetes selector grammar; these are its ~60 lines).

* :func:`parse_labels`: ``a=b,c!=d,e in (x,y),f notin (z),g,!h`` (``==`` too);
* :func:`selector_matches`: a ``LabelSelector`` object (``matchLabels``, ``matchExpressions``
  with In, NotIn, Exists, DoesNotExist), as webhooks' namespaceSelector/objectSelector use it;
* :func:`parse_fields` / :func:`fields_match`: ``metadata.name=x,status.phase!=Running``;
  :func:`check_fields`: only the fields the real server lets each kind select on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector that does not parse (the message quotes it and says why)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        if self.op == "exists":
            return has
        return not has  # "!"


_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_labels(selector: str) -> list[Requirement]:
    out: list[Requirement] = []
    for part in _split(selector or ""):
        m = _EQ.match(part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            out.append(Requirement(m.group(1), op, (m.group(3),)))
            continue
        m = _SET.match(part)
        if not m:
            raise SelectorError(f"unable to parse requirement {part.strip()!r} of {selector!r}")
        neg, key, op, values = m.groups()
        if op:
            if neg:
                raise SelectorError(f"unable to parse requirement {part.strip()!r}")
            vals = tuple(v.strip() for v in values.split(",") if v.strip())
            out.append(Requirement(key, op, vals))
        else:
            out.append(Requirement(key, "!" if neg else "exists"))
    return out


def labels_match(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    return all(r.matches(labels or {}) for r in requirements)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """A LabelSelector object; ``None`` or ``{}`` matches everything."""
    if not selector:
        return True
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for e in selector.get("matchExpressions") or ():
        op = ops.get(e.get("operator", ""))
        if op is None:
            raise SelectorError(f"{e.get('operator')!r} is not a valid label selector operator")
        if not Requirement(e.get("key", ""), op, tuple(e.get("values") or ())).matches(labels):
            return False
    return True


def parse_fields(selector: str) -> list[tuple[str, str, str]]:
    """``[(path, op, value)]`` with op ``=`` or ``!=``."""
    out = []
    for part in _split(selector or ""):
        m = _EQ.match(part)
        if not m:
            raise SelectorError(f"invalid field selector {part.strip()!r} of {selector!r}")
        out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return out


def field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return "" if node is None else str(node)


def fields_match(requirements: list[tuple[str, str, str]], obj: Mapping[str, Any]) -> bool:
    for path, op, value in requirements:
        actual = field_value(obj, path)
        if (actual == value) != (op == "="):
            return False
    return True


# The fields a real server lets a field selector name, per resource (besides metadata.name and
# metadata.namespace; k8s.io/kubernetes pkg/apis/*/v1/conversion.go). Custom resources and
# every other kind: those two only.
SELECTABLE: dict[str, tuple[str, ...]] = {
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    ),
    "secrets": ("type",),
    "events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "namespaces": ("status.phase",),
    "nodes": ("spec.unschedulable",),
    "replicasets": ("status.replicas",),
    "jobs": ("status.successful",),
    "replicationcontrollers": ("status.replicas",),
}
ALWAYS = ("metadata.name", "metadata.namespace")


def check_fields(requirements: list[tuple[str, str, str]], plural: str) -> None:
    """Refuse a field the real server does not select ``plural`` by, in its words."""
    extra = SELECTABLE.get(plural)
    for path, _op, _value in requirements:
        if path in ALWAYS or path in (extra or ()):
            continue
        if extra is not None:
            raise SelectorError(f"field label not supported: {path}")
        allowed = ", ".join(f'"{f}"' for f in ALWAYS)
        raise SelectorError(f'"{path}" is not a known field selector: only {allowed}')


def watch_event(
    event: dict[str, Any], match: Any, seen: set[tuple[str, str]]
) -> dict[str, Any] | None:
    """A watch event as a watch with selectors sees it (``match``: the predicate; ``seen``: the
    objects this watch holds): one that stops matching is DELETED, one that starts ADDED."""
    if match is None:
        return event
    obj = event.get("object") or {}
    meta = obj.get("metadata") or {}
    key = (meta.get("namespace") or "", meta.get("name") or "")
    if event.get("type") == "DELETED":
        if key in seen:
            seen.discard(key)
            return event
    elif match(obj):
        kind = "MODIFIED" if key in seen else "ADDED"
        seen.add(key)
        return {**event, "type": kind}
    elif key in seen:
        seen.discard(key)
        return {**event, "type": "DELETED"}
    return None
