"""Is a pod really one of its workload's? The owner chain checked before a restart: pure.

A pod admitted without the agent is restarted through its owner (the Deployment's template is
patched, which rolls every pod of it). Whoever can create a pod writes its ``ownerReferences``
and labels, so the controller believes neither: each link of pod -> ReplicaSet -> Deployment (or
pod -> StatefulSet / DaemonSet) must name the owner by its current **UID**, and the owner's
**selector** must match the pod's labels, as the workload controllers themselves require before
they adopt a pod. A pod labelled ``rotor.dev/inject: "false"`` opted out of the webhook and is
never a reason to restart anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rotor.annotations import INJECT

OPT_OUT_VALUES = ("false", "no", "0")


def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``ownerReferences`` entry with ``controller: true``, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return ref
    return None


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, Mapping) else {}


def opted_out(pod: Mapping[str, Any]) -> bool:
    """Labelled ``rotor.dev/inject: "false"``: the webhook's objectSelector skips it."""
    return str(labels_of(pod).get(INJECT, "")).strip().lower() in OPT_OUT_VALUES


def selector_matches(selector: object, labels: Mapping[str, str]) -> bool:
    """A ``LabelSelector`` (``matchLabels`` and ``matchExpressions``) against labels. An empty
    or missing selector matches nothing here (apps/v1 workloads always have one)."""
    if not isinstance(selector, Mapping):
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for e in expressions:
        if not isinstance(e, Mapping):
            return False
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(str(key)) not in values:
            return False
        if op == "NotIn" and key in labels and labels[str(key)] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def link_problem(
    child: Mapping[str, Any],
    owner: Mapping[str, Any] | None,
    kind: str,
    pod_labels: Mapping[str, str],
) -> str:
    """Why ``owner`` (of ``kind``) is not the controller of ``child``; "" when it is."""
    ref = controller_ref(child)
    child_name = (child.get("metadata") or {}).get("name", "")
    if ref is None or ref.get("kind") != kind:
        return f"{child_name} has no {kind} controller"
    if owner is None:
        return f"its {kind} {ref.get('name')} does not exist"
    meta = owner.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    if not uid or str(ref.get("uid") or "") != uid:
        return (
            f"the ownerReference of {child_name} does not carry the UID of {kind} "
            f"{meta.get('name')}"
        )
    if not selector_matches((owner.get("spec") or {}).get("selector"), pod_labels):
        return f"the selector of {kind} {meta.get('name')} does not match the pod's labels"
    return ""
