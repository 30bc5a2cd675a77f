"""What the API server decides about an object being written, before it stores it (pure: the
emulator passes the stored object, the one the request would produce, and the request's URL).

The real kube-apiserver never trusts the body for the fields it owns. These functions port the
parts of ``k8s.io/apiserver`` (``rest.BeforeCreate``/``BeforeUpdate``,
``EnsureObjectNamespaceMatchesRequestNamespace``, ``checkName``), of the CRD strategy (status
subresource, generation) and of RBAC's validation (``roleRef``) that matter to Rotor:

* the namespace is the URL's: a body naming another one is a 400; a cluster-scoped object has none;
* the name is the URL's on an update or a patch (a patch cannot rename or move an object, 400);
* ``uid``, ``creationTimestamp``, ``resourceVersion``, ``generation`` and ``deletionTimestamp``
  are the server's: set on create, carried over on update (a changed ``uid`` is refused);
* with a ``status`` subresource, a write to the object keeps the stored status and a write to
  ``/status`` changes nothing but the status;
* a RoleBinding's or ClusterRoleBinding's ``roleRef`` cannot change, a ClusterRoleBinding refers
  to a ClusterRole, a ``roleRef`` names a kind, an API group and a name.

Each refusal is a :class:`Refused` with the real server's code, reason and message.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the real server's (no vowels, no 0/1/3)


class Refused(Exception):
    """A write the API server refuses: HTTP ``code``, Status ``reason`` and ``message``."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Target:
    """What is written to: the kind, its API group, whether it is namespaced, whether it has a
    ``status`` subresource, and whether it is a custom resource (no unconditional update)."""

    kind: str
    group: str = ""
    namespaced: bool = True
    has_status: bool = False
    custom: bool = False

    def qualified(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


def as_dict(value: Any) -> Obj:
    """``value`` if it is a JSON object, else an empty one (bodies are not trusted)."""
    return value if isinstance(value, dict) else {}


def invalid(target: Target, name: str, detail: str) -> Refused:
    """A 422 Invalid as the real server words it: ``<Kind>.<group> "<name>" is invalid: ...``."""
    return Refused(422, "Invalid", f'{target.qualified()} "{name}" is invalid: {detail}')


NAMESPACE_MISMATCH = (
    "the namespace of the provided object does not match the namespace sent on the request"
)


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def place(obj: Obj, url_namespace: str, target: Target) -> None:
    """``EnsureObjectNamespaceMatchesRequestNamespace``: the URL's namespace, or a 400."""
    meta = _meta(obj)
    body_ns = meta.get("namespace") or ""
    if not target.namespaced:
        meta.pop("namespace", None)
    elif body_ns and body_ns != url_namespace:
        raise Refused(400, "BadRequest", NAMESPACE_MISMATCH)
    else:
        meta["namespace"] = url_namespace


def name_for_create(obj: Obj, target: Target) -> str:
    """The name of an object to create: its own, or ``generateName`` plus 5 random characters;
    neither is a 422, as the real server answers."""
    meta = _meta(obj)
    if not meta.get("name") and meta.get("generateName"):
        suffix = "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
        meta["name"] = f"{meta['generateName']}{suffix}"
    if not meta.get("name"):
        raise invalid(target, "", "metadata.name: Required value: name or generateName is required")
    return str(meta["name"])


def prepare_create(
    obj: Obj, url_namespace: str, target: Target, rv: str, now: str, *, seeding: bool = False
) -> Obj:
    """``rest.BeforeCreate``: the object as stored, whatever the client sent in the fields the
    server owns. ``seeding`` (the emulator with ``secure=False``, for test tiers whose fixtures
    write objects as a server would have stored them) keeps a client's ``creationTimestamp``
    and ``status``."""
    out = copy.deepcopy(obj)
    given = (out.get("metadata") or {}).get("creationTimestamp"), out.get("status")
    place(out, url_namespace, target)
    name_for_create(out, target)
    meta = _meta(out)
    for owned in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
        meta.pop(owned, None)
    meta["uid"] = new_uid()
    meta["creationTimestamp"] = now
    meta["resourceVersion"] = rv
    meta.pop("generation", None)
    if target.custom or (target.has_status and target.kind != "Namespace"):
        meta["generation"] = 1  # what has a spec and a status counts its spec's changes
    if target.has_status:
        out.pop("status", None)  # the status subresource's: written through /status only
    if seeding:
        meta["creationTimestamp"] = given[0] or now
        if given[1] is not None:
            out["status"] = given[1]
    check_rbac(None, out, target)
    return out


def new_uid() -> str:
    import uuid

    return str(uuid.uuid4())


def prepare_update(
    old: Obj, new: Obj, url_namespace: str, url_name: str, subresource: str, target: Target
) -> Obj:
    """``rest.BeforeUpdate`` for a PUT or a patch (``new`` is the object it would produce): the
    object as stored, or :class:`Refused`."""
    out = copy.deepcopy(new)
    place(out, url_namespace, target)
    meta, old_meta = _meta(out), _meta(old)
    if meta.get("name") != url_name:
        raise Refused(
            400,
            "BadRequest",
            f"the name of the object ({meta.get('name') or ''}) does not match the name on the "
            f"URL ({url_name})",
        )
    if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
        raise invalid(
            target, url_name, f'metadata.uid: Invalid value: "{meta["uid"]}": field is immutable'
        )
    if subresource == "status":
        out = {**copy.deepcopy(old), "status": out.get("status")}
        if out["status"] is None:
            out.pop("status")
        return out
    for owned in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
        if owned in old_meta:
            meta[owned] = old_meta[owned]
        else:
            meta.pop(owned, None)
    if target.has_status:
        out.pop("status", None)
        if "status" in old:
            out["status"] = copy.deepcopy(old["status"])
    if target.custom and _spec_changed(old, out):
        meta["generation"] = int(old_meta.get("generation") or 1) + 1
    check_rbac(old, out, target)
    return out


def _spec_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether anything but metadata and status changed (what bumps a custom resource's
    ``metadata.generation``)."""

    def body(o: Mapping[str, Any]) -> Obj:
        return {k: v for k, v in o.items() if k not in ("metadata", "status")}

    return body(old) != body(new)


def check_rbac(old: Obj | None, new: Obj, target: Target) -> None:
    """RBAC's validation of a binding: ``roleRef`` complete and valid, immutable on update."""
    if target.group != RBAC_GROUP or target.kind not in ("RoleBinding", "ClusterRoleBinding"):
        return
    name = str(_meta(new).get("name") or "")
    ref = as_dict(new.get("roleRef"))
    if old is not None and ref != (old.get("roleRef") or {}):
        raise invalid(
            target, name, f"roleRef: Invalid value: {_go_ref(ref)}: cannot change roleRef"
        )
    kinds = ["ClusterRole"] if target.kind == "ClusterRoleBinding" else ["Role", "ClusterRole"]
    if ref.get("apiGroup") != RBAC_GROUP:
        raise invalid(
            target,
            name,
            f'roleRef.apiGroup: Unsupported value: "{ref.get("apiGroup") or ""}": supported '
            f'values: "{RBAC_GROUP}"',
        )
    if ref.get("kind") not in kinds:
        supported = ", ".join(f'"{k}"' for k in kinds)
        raise invalid(
            target,
            name,
            f'roleRef.kind: Unsupported value: "{ref.get("kind") or ""}": supported values: '
            f"{supported}",
        )
    if not ref.get("name"):
        raise invalid(target, name, "roleRef.name: Required value")


def _go_ref(ref: Mapping[str, Any]) -> str:
    """A roleRef as the real server prints it in the message (Go's ``%#v``)."""
    return (
        f'rbac.RoleRef{{APIGroup:"{ref.get("apiGroup", "")}", Kind:"{ref.get("kind", "")}", '
        f'Name:"{ref.get("name", "")}"}}'
    )


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> Obj:
    """The JSON merge patch that turns ``old`` into ``new`` (what kmock's store applies)."""
    out: Obj = {k: None for k in old if k not in new}
    for k, v in new.items():
        before = old.get(k)
        if isinstance(v, dict) and isinstance(before, dict):
            sub = merge_diff(before, v)
            if sub:
                out[k] = sub
        elif k not in old or before != v:
            out[k] = copy.deepcopy(v) if not isinstance(v, dict) else merge_diff({}, v)
    return out
