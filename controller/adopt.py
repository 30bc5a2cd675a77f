"""The source Secret's metadata (pure): the body the controller creates, its ownerReference, and
whether an existing Secret of that name may be adopted and with which patch.

An existing Secret is adopted only when no other owner controls it: the controller's
ownerReference is added (the others are kept) with the labels, and the patch carries the
resourceVersion read, so a change made meanwhile is never lost (the caller re-reads on a 409).
A Secret another controller owns is left alone and reported (:class:`SourceNotOwned`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.model import RotatingSecretObs, meta
from rotor import API
from rotor.errors import PermanentError
from rotor.layout import (
    ANN_PHASE,
    ANN_ROTATE_REQUESTED,
    ANN_VERSION,
    LABEL_MANAGED_BY,
    LABEL_SECRET,
    MANAGED_BY,
)

Obj = dict[str, Any]


class SourceNotOwned(PermanentError):
    """A Secret of the source's name exists and another owner controls it."""


def owner_reference(obs: RotatingSecretObs) -> Obj:
    return {
        "apiVersion": API,
        "kind": "RotatingSecret",
        "name": obs.ref.name,
        "uid": obs.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def source_labels(obs: RotatingSecretObs) -> dict[str, str]:
    return {LABEL_SECRET: obs.ref.name, LABEL_MANAGED_BY: MANAGED_BY}


def source_body(obs: RotatingSecretObs) -> Obj:
    """A new source Secret: owned, labelled, version 0, no value (the writer makes the first)."""
    annotations = {ANN_VERSION: "0", ANN_PHASE: "committed"}
    if obs.rotate_now:
        annotations[ANN_ROTATE_REQUESTED] = obs.rotate_now
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": obs.ref.name,
            "namespace": obs.ref.namespace,
            "labels": source_labels(obs),
            "annotations": annotations,
            "ownerReferences": [owner_reference(obs)],
        },
    }


@dataclass(frozen=True)
class Adoption:
    patch: Obj | None = None
    """The merge patch that adopts the Secret (None: nothing to change)."""
    problem: str = ""
    """Why it is not adopted (another owner controls it)."""


def _owner_text(ref: Mapping[str, Any]) -> str:
    return f"{ref.get('kind', '?')} {ref.get('name', '?')} (uid {ref.get('uid', '?')})"


def adoption(obj: Mapping[str, Any], obs: RotatingSecretObs) -> Adoption:
    """How to adopt the existing Secret ``obj`` as the source of ``obs``."""
    m = meta(obj)
    owners = [o for o in m.get("ownerReferences") or [] if isinstance(o, Mapping)]
    mine = owner_reference(obs)
    other = next((o for o in owners if o.get("controller") and o.get("uid") != obs.uid), None)
    if other is not None:
        return Adoption(
            problem=f"the Secret {obs.ref} exists and is controlled by {_owner_text(other)}; "
            "Rotor does not take it over: delete it (Rotor then creates its own source Secret) "
            "or give the RotatingSecret another name"
        )
    wanted = [dict(o) for o in owners if o.get("uid") != obs.uid] + [mine]
    labels = source_labels(obs)
    have = m.get("labels") or {}
    patch_meta: Obj = {}
    if wanted != owners:
        patch_meta["ownerReferences"] = wanted
    if any(have.get(k) != v for k, v in labels.items()):
        patch_meta["labels"] = labels
    if not patch_meta:
        return Adoption()
    if m.get("resourceVersion"):
        patch_meta["resourceVersion"] = str(m["resourceVersion"])
    return Adoption(patch={"metadata": patch_meta})
