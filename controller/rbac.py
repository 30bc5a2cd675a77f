"""The RBAC writer: the resourceNames-scoped Roles and RoleBindings of each secret's grants
(:func:`controller.decide.desired_rbac`), applied when they change, and those made by an earlier
leader learnt at start so grants revoked meanwhile are removed too."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from controller import decide
from controller.kube import ForbiddenError, Obj, path
from controller.model import LABEL_SOURCE, is_managed, meta, source_label
from rotor.acl import Grant
from rotor.layout import LABEL_MANAGED_BY, MANAGED_BY
from rotor.names import SecretRef
from rotor.spec import RotatingSecretSpec

if TYPE_CHECKING:
    from controller.operator import Controller

log = logging.getLogger("rotor.controller")

RBAC = "rbac.authorization.k8s.io/v1"
RbacKey = tuple[str, str, str]
"""(kind, namespace, name) of a Role or RoleBinding."""


def _plural(kind: str) -> str:
    return "roles" if kind == "Role" else "rolebindings"


class RbacWriter:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.applied: dict[str, dict[RbacKey, str]] = {}
        """source label -> (kind, namespace, name) -> digest of what was applied."""
        self._inputs: dict[SecretRef, tuple[frozenset[Grant], frozenset[str], frozenset[str]]] = {}
        """The grants and external store names whose RBAC was last applied, per secret."""

    async def sync(
        self, ref: SecretRef, spec: RotatingSecretSpec, grants: frozenset[Grant]
    ) -> frozenset[Grant]:
        """Apply the RBAC of ``ref``'s grants among ``grants`` (when they changed); returns
        them."""
        mine = frozenset(g for g in grants if g.secret == ref)
        names = frozenset(x.store for x in spec.external_stores)
        admins = await self._admin_secrets(ref, spec)
        if self._inputs.get(ref) != (mine, names, admins):  # RBAC depends on these only
            await self.apply(ref, decide.desired_rbac(ref, mine, names, admins))
            self._inputs[ref] = (mine, names, admins)
        return mine

    async def _admin_secrets(self, ref: SecretRef, spec: RotatingSecretSpec) -> frozenset[str]:
        """The admin Secrets of ``spec`` that opted in to ``ref`` (read at each sync, so removing
        the annotation removes the grant); the others are refused, logged."""
        allowed = set()
        for name in sorted(decide.admin_secrets(spec)):
            try:
                obj = await self.ctl.kube.aget(path("v1", "secrets", ref.namespace, name))
            except ForbiddenError:
                obj = None
            problem = decide.admin_secret_problem(ref, name, obj)
            if problem:
                log.warning("%s: the writer gets no access: %s", ref, problem)
            else:
                allowed.add(name)
        return frozenset(allowed)

    async def remove(self, ref: SecretRef) -> None:
        await self.apply(ref, [])
        self._inputs.pop(ref, None)

    async def apply(self, ref: SecretRef, desired: list[Obj]) -> None:
        kube = self.ctl.kube
        applied = self.applied.setdefault(source_label(ref), {})
        want: dict[RbacKey, Obj] = {}
        for obj in desired:
            m = obj["metadata"]
            want[(obj["kind"], m["namespace"], m["name"])] = obj
        for key, obj in want.items():
            digest = json.dumps(obj, sort_keys=True)
            if applied.get(key) == digest:
                continue
            await kube.aapply(path(RBAC, _plural(key[0]), key[1]), obj)
            applied[key] = digest
        for key in [k for k in applied if k not in want]:
            await kube.adelete(path(RBAC, _plural(key[0]), key[1], key[2]))
            del applied[key]

    async def seed(self) -> None:
        """Learn the Roles and RoleBindings made before (by an earlier leader), so grants revoked
        meanwhile are removed too. Filtered on the client side as well. Refused (the ClusterRole
        lacks the right): logged and counted, and the controller goes on - each reconcile then
        reports the missing permission on its RotatingSecret."""
        for kind, plural in (("Role", "roles"), ("RoleBinding", "rolebindings")):
            try:
                found = await self.ctl.kube.aitems(
                    path(RBAC, plural), f"{LABEL_MANAGED_BY}={MANAGED_BY}"
                )
            except ForbiddenError as e:
                self.ctl.metrics.errors.labels("forbidden").inc()
                log.error("cannot learn the %s made before: %s", plural, e)
                continue
            for obj in found:
                if not is_managed(obj):
                    continue
                m = meta(obj)
                label = str((m.get("labels") or {}).get(LABEL_SOURCE, ""))
                if label:
                    key = (kind, str(m.get("namespace")), str(m.get("name")))
                    self.applied.setdefault(label, {})[key] = ""
