"""The RBAC storage's own checks of a write of a Role, ClusterRole or binding, for the strict
emulator (``ConfirmNoEscalation`` and ``BindingAuthorized`` of the real server): a role may
grant only what its writer holds (or ``escalate``), a binding may bind only a role whose rules
its writer holds (or ``bind`` on it); without ``bind``, a binding to a missing role is a 404,
as the real server answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import kmock

from kubeemu import rbac, writes
from kubeemu.rbac import Attributes
from kubeemu.writes import Refused

if TYPE_CHECKING:
    from kubeemu.server import StrictEmulator

RBAC_KINDS = {
    "roles": "Role",
    "clusterroles": "ClusterRole",
    "rolebindings": "RoleBinding",
    "clusterrolebindings": "ClusterRoleBinding",
}


def check(emu: StrictEmulator, request: kmock.Request, a: Attributes) -> None:
    """``ConfirmNoEscalation`` and the ``bind`` check of the real RBAC storage."""
    kind = RBAC_KINDS.get(a.resource) if a.api_group == rbac.RBAC_GROUP else None
    if kind is None or a.subresource or a.verb not in ("create", "update", "patch"):
        return
    new = emu._result(request)
    if new is None:
        return
    ns = a.namespace
    name = a.name or ((new.get("metadata") or {}).get("name") or "")
    policy = emu.policy()
    if kind in ("Role", "ClusterRole"):
        if emu.allowed(Attributes(a.user, "escalate", rbac.RBAC_GROUP, a.resource, "", ns, name)):
            return
        wanted = list(new.get("rules") or [])
    else:
        ref = writes.as_dict(new.get("roleRef"))
        ref_res = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
        bind_ns = ns if kind == "RoleBinding" else ""
        bind = Attributes(
            a.user, "bind", rbac.RBAC_GROUP, ref_res, "", bind_ns, ref.get("name", "")
        )
        if emu.allowed(bind):
            return
        if not policy.role_exists(ref, bind_ns):  # a 404 worded as the real server's
            absent = f'{a.resource}.{rbac.RBAC_GROUP} "{ref.get("name", "")}" not found'
            raise Refused(404, "NotFound", absent)
        wanted = policy.referenced_rules({**new, "metadata": {"namespace": bind_ns}})
    missing = rbac.uncovered(
        policy.rules_for(a.user, ns if kind in ("Role", "RoleBinding") else ""), wanted
    )
    if missing:
        what = "grant" if kind in ("Role", "ClusterRole") else "bind to a role that grants"
        emu.check(
            Attributes(a.user, a.verb, a.api_group, a.resource, "", ns, name),
            f"user {a.user.name!r} is attempting to {what} RBAC permissions not currently "
            f"held: {rbac.describe_atoms(missing)}",
        )
