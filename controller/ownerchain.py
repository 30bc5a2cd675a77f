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

from controller.selector import LabelSelector
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
    selector = LabelSelector.parse((owner.get("spec") or {}).get("selector"))
    if selector is None or not selector.matches(pod_labels):
        return f"the selector of {kind} {meta.get('name')} does not match the pod's labels"
    return ""
