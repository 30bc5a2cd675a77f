"""Kubernetes RBAC, as the real API server evaluates it, for the emulator (:mod:`kubeemu.emulator`).

A port of the parts of ``k8s.io/kubernetes/pkg/apis/rbac/v1/evaluation_helpers.go`` and
``plugin/pkg/auth/authorizer/rbac`` the emulator needs (no library implements RBAC in Python):

* :func:`rule_allows`: a PolicyRule against request attributes - apiGroups, resources with
  ``resource/subresource`` and ``*/subresource``, verbs, ``*``, resourceNames (which can only
  match a request that names an object; a list or watch names one only through a
  ``metadata.name`` field selector), nonResourceURLs with a trailing ``*``;
* :meth:`Policy.authorize`: the rules of every ClusterRoleBinding and (in the request's
  namespace) RoleBinding whose subjects apply to the user - User, Group, ServiceAccount (a
  binding's namespace is the default of a ServiceAccount subject's), looked up by subject;
* :func:`uncovered`: the escalation check (``ConfirmNoEscalation``): the rules a requester would
  grant but does not hold itself;
* :func:`forbidden_message`: the 403 text the real server writes.

Impersonation is checked with these rules (:mod:`kubeemu.authn`). Not implemented: aggregated
ClusterRoles (``aggregationRule``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

RBAC_GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class User:
    """An authenticated identity: the username and groups the real server would give it."""

    name: str
    groups: tuple[str, ...] = (AUTHENTICATED,)
    uid: str = ""

    @classmethod
    def service_account(cls, namespace: str, name: str, uid: str = "") -> User:
        return cls(
            f"{SA_PREFIX}{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
            uid,
        )


@dataclass(frozen=True)
class Attributes:
    """What a request asks for (``authorizer.Attributes``); ``path`` is set for non-resource
    requests (``/version``, ``/apis``), ``api_group``/``resource`` for resource ones."""

    user: User
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return not self.path


def _has(values: Sequence[str] | None, wanted: str) -> bool:
    vals = values or ()
    return "*" in vals or wanted in vals


def resource_matches(rule: Mapping[str, Any], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule.get("resources") or ():
        if r in ("*", combined):
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def _url_matches(rule: Mapping[str, Any], path: str) -> bool:
    for u in rule.get("nonResourceURLs") or ():
        if u == "*" or u == path or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(rule: Mapping[str, Any], a: Attributes) -> bool:
    """``RuleAllows``: does this PolicyRule allow the request?"""
    if not _has(rule.get("verbs"), a.verb):
        return False
    if not a.is_resource:
        return _url_matches(rule, a.path)
    if not _has(rule.get("apiGroups"), a.api_group):
        return False
    if not resource_matches(rule, a.resource, a.subresource):
        return False
    names = rule.get("resourceNames") or ()
    return not names or (bool(a.name) and a.name in names)


@dataclass
class Policy:
    """The RBAC objects stored in the API server, indexed for authorization."""

    cluster_roles: dict[str, Obj] = field(default_factory=dict)
    roles: dict[tuple[str, str], Obj] = field(default_factory=dict)
    cluster_role_bindings: list[Obj] = field(default_factory=list)
    role_bindings: dict[str, list[Obj]] = field(default_factory=dict)
    _by_subject: dict[tuple[str, str, str], list[Obj]] = field(default_factory=dict)
    """(binding namespace or "", subject kind, user or group name) -> bindings: the lookup a
    request makes, instead of a scan of every binding (6.1x -> 1.2x the cost of an unauthenticated
    GET at 500 RoleBindings in a namespace; bench/kubeemu_auth.py)."""

    @classmethod
    def of(cls, objects: Iterable[Mapping[str, Any]]) -> Policy:
        p = cls()
        for obj in objects:
            kind = obj.get("kind")
            m = obj.get("metadata") or {}
            name, ns = m.get("name", ""), m.get("namespace", "")
            if kind == "ClusterRole":
                p.cluster_roles[name] = dict(obj)
            elif kind == "Role":
                p.roles[(ns, name)] = dict(obj)
            elif kind == "ClusterRoleBinding":
                p.cluster_role_bindings.append(dict(obj))
            elif kind == "RoleBinding":
                p.role_bindings.setdefault(ns, []).append(dict(obj))
        for b in p.cluster_role_bindings:
            p._index(b, "")
        for ns, bindings in p.role_bindings.items():
            for b in bindings:
                p._index(b, ns)
        return p

    def _index(self, binding: Obj, namespace: str) -> None:
        for s in binding.get("subjects") or ():
            kind, name = s.get("kind", ""), s.get("name", "")
            if kind == "ServiceAccount":
                sa_ns = s.get("namespace") or namespace
                if not sa_ns:
                    continue
                kind, name = "User", f"{SA_PREFIX}{sa_ns}:{name}"
            elif kind not in ("User", "Group"):
                continue
            found = self._by_subject.setdefault((namespace, kind, name), [])
            if not any(f is binding for f in found):
                found.append(binding)

    def _bindings(self, user: User, namespace: str) -> list[Obj]:
        out: list[Obj] = []
        keys = [(namespace, "User", user.name)]
        keys += [(namespace, "Group", g) for g in user.groups]
        for key in keys:
            for b in self._by_subject.get(key, ()):
                if not any(o is b for o in out):
                    out.append(b)
        return out

    def _role_rules(self, ref: Mapping[str, Any], namespace: str) -> list[Obj]:
        if ref.get("kind") == "ClusterRole":
            role = self.cluster_roles.get(ref.get("name", ""))
        else:
            role = self.roles.get((namespace, ref.get("name", "")))
        return list((role or {}).get("rules") or [])

    def rules_for(self, user: User, namespace: str) -> Iterator[Obj]:
        """Every rule that applies to ``user`` in ``namespace`` ("" = cluster scope only)."""
        for b in self._bindings(user, ""):
            yield from self._role_rules(b.get("roleRef") or {}, "")
        if namespace:
            for b in self._bindings(user, namespace):
                yield from self._role_rules(b.get("roleRef") or {}, namespace)

    def authorize(self, a: Attributes) -> bool:
        return any(rule_allows(r, a) for r in self.rules_for(a.user, a.namespace))

    def role_exists(self, ref: Mapping[str, Any], namespace: str) -> bool:
        """Whether the role a binding's ``roleRef`` names is stored (a RoleBinding's Role in
        its own namespace)."""
        if ref.get("kind") == "ClusterRole":
            return ref.get("name", "") in self.cluster_roles
        return (namespace, ref.get("name", "")) in self.roles

    def referenced_rules(self, binding: Mapping[str, Any]) -> list[Obj]:
        ns = (binding.get("metadata") or {}).get("namespace", "")
        return self._role_rules(binding.get("roleRef") or {}, ns)


def _atoms(rule: Mapping[str, Any]) -> Iterator[Obj]:
    """A rule broken into one-group, one-resource, one-verb, one-name rules (``BreakdownRule``)."""
    verbs = rule.get("verbs") or ()
    for group in rule.get("apiGroups") or ():
        for resource in rule.get("resources") or ():
            for verb in verbs:
                for name in rule.get("resourceNames") or [""]:
                    yield {"g": group, "r": resource, "v": verb, "n": name}
    for url in rule.get("nonResourceURLs") or ():
        for verb in verbs:
            yield {"u": url, "v": verb}


def _resource_covers(owner: str, wanted: str) -> bool:
    """``resourceCoversAll``: ``*``, the same resource, or ``*/<subresource>`` for a
    subresource. ``pods/*`` covers nothing but ``pods/*`` itself: the real server does not read
    it as a wildcard (so holding ``pods/*`` does not let one grant ``pods/log``)."""
    if owner in ("*", wanted):
        return True
    _, _, w_sub = wanted.partition("/")
    return bool(w_sub) and owner == f"*/{w_sub}"


def _covers(owner: Mapping[str, Any], atom: Mapping[str, str]) -> bool:
    if not _has(owner.get("verbs"), atom["v"]):
        return False
    if "u" in atom:
        return any(
            u == "*" or u == atom["u"] or (u.endswith("*") and atom["u"].startswith(u[:-1]))
            for u in owner.get("nonResourceURLs") or ()
        )
    if not _has(owner.get("apiGroups"), atom["g"]):
        return False
    if not any(_resource_covers(r, atom["r"]) for r in owner.get("resources") or ()):
        return False
    names = owner.get("resourceNames") or ()
    return not names or (bool(atom["n"]) and atom["n"] in names)


def uncovered(
    owner_rules: Iterable[Mapping[str, Any]], wanted: Iterable[Mapping[str, Any]]
) -> list[Obj]:
    """The parts of ``wanted`` that no rule of ``owner_rules`` covers (``[]``: no escalation)."""
    owned = list(owner_rules)
    missing: list[Obj] = []
    for rule in wanted:
        for atom in _atoms(rule):
            if not any(_covers(o, atom) for o in owned):
                missing.append(atom)
    return missing


def describe_atoms(atoms: Iterable[Mapping[str, str]]) -> str:
    out = []
    for a in atoms:
        if "u" in a:
            out.append(f"{{NonResourceURLs:[{a['u']}], Verbs:[{a['v']}]}}")
        else:
            names = f", ResourceNames:[{a['n']}]" if a["n"] else ""
            out.append(
                f"{{APIGroups:[{a['g']!r}], Resources:[{a['r']!r}]{names}, Verbs:[{a['v']!r}]}}"
            )
    return ", ".join(out)


def qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def forbidden_message(a: Attributes, reason: str = "") -> str:
    """The real server's text: ``secrets "db" is forbidden: User "..." cannot get resource
    "secrets" in API group "" in the namespace "shop"``."""
    who = f'User "{a.user.name}"'
    if not a.is_resource:
        return f'forbidden: {who} cannot {a.verb} path "{a.path}"' + (
            f": {reason}" if reason else ""
        )
    res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    head = qualified(res, a.api_group)
    head = f'{head} "{a.name}" is forbidden' if a.name else f"{head} is forbidden"
    where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    text = f'{head}: {who} cannot {a.verb} resource "{res}" in API group "{a.api_group}" {where}'
    return text + (f": {reason}" if reason else "")


# The roles every cluster is bootstrapped with that Rotor's parts and a kubectl user rely on
# (from the real server's bootstrap policy, trimmed to what is emulated).
BOOTSTRAP: list[Obj] = [
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "cluster-admin"},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-admin"},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": MASTERS}],
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:discovery"},
        "rules": [
            {
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                "verbs": ["get"],
            }
        ],
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:discovery"},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "system:discovery"},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": AUTHENTICATED}],
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:public-info-viewer"},
        "rules": [
            {
                "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                "verbs": ["get"],
            }
        ],
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:public-info-viewer"},
        "roleRef": {
            "apiGroup": RBAC_GROUP,
            "kind": "ClusterRole",
            "name": "system:public-info-viewer",
        },
        "subjects": [
            {"apiGroup": RBAC_GROUP, "kind": "Group", "name": AUTHENTICATED},
            {"apiGroup": RBAC_GROUP, "kind": "Group", "name": "system:unauthenticated"},
        ],
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:basic-user"},
        "rules": [
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            },
        ],
    },
    {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:basic-user"},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "system:basic-user"},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": AUTHENTICATED}],
    },
]
