"""Least privilege: only the controller can read Secrets, the webhook and agents get no chart
RBAC, and the controller's rights are exactly the table in docs/install.md ("Permissions")."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.chart.chartlib import COMBINATIONS, NAMESPACE, ROOT, Doc, find, render

CONTROLLER_SA = (NAMESPACE, "rotor-controller")
WEBHOOK_SA = (NAMESPACE, "rotor-webhook")
READ_VERBS = {"list", "watch"}

Right = tuple[str, str, str, str, str]
"""(api group, resource, where: cluster | namespace, resource name or "all", verb)."""


def bound_roles(docs: list[Doc], subject: tuple[str, str]) -> list[tuple[Doc, str]]:
    """The Roles and ClusterRoles bound to a ServiceAccount, with where they apply."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    out = []
    for b in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding"):
        ns = b["metadata"].get("namespace")
        for s in b.get("subjects", []):
            if s["kind"] == "ServiceAccount" and (s["namespace"], s["name"]) == subject:
                ref = b["roleRef"]
                role_ns = None if ref["kind"] == "ClusterRole" else ns
                role = roles[(ref["kind"], role_ns, ref["name"])]
                out.append((role, "cluster" if b["kind"] == "ClusterRoleBinding" else "namespace"))
    return out


def rights(docs: list[Doc], subject: tuple[str, str]) -> set[Right]:
    out: set[Right] = set()
    for role, where in bound_roles(docs, subject):
        for rule in role.get("rules", []):
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    for name in rule.get("resourceNames") or ["all"]:
                        for verb in rule["verbs"]:
                            out.add((group, res, where, name, verb))
    return out


def can_read_all_secrets(r: set[Right]) -> bool:
    """list or watch on every Secret: with resourceNames a list/watch is limited to those."""
    return any(
        g in ("", "*") and res in ("secrets", "*") and name == "all" and v in READ_VERBS | {"*"}
        for g, res, _, name, v in r
    )


def documented_rights() -> set[Right]:
    text = (ROOT / "docs" / "install.md").read_text()
    table = text.split("## Permissions", 1)[1].split("\n\n", 2)[1]
    out: set[Right] = set()
    for line in table.splitlines()[2:]:
        subject, resources, groups, where, names, verbs = (
            c.strip() for c in line.strip("|").split("|")
        )
        assert subject == "controller", line
        for res in re.findall(r"`([^`]+)`", resources):
            for group in (g.strip().strip("`") for g in groups.split(",")):
                for verb in (v.strip() for v in verbs.split(",")):
                    out.add(
                        (
                            "" if group == "core" else group,
                            res,
                            "cluster" if where == "cluster" else "namespace",
                            names.strip("`"),
                            verb,
                        )
                    )
    return out


@pytest.mark.parametrize("combo", COMBINATIONS)
def test_only_the_controller_is_bound(combo: str) -> None:
    """The webhook's ServiceAccount and any agent get nothing from the chart."""
    docs = render(COMBINATIONS[combo])
    subjects = {
        (s["namespace"], s["name"])
        for b in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding")
        for s in b["subjects"]
    }
    assert subjects == {CONTROLLER_SA}
    assert rights(docs, WEBHOOK_SA) == set()
    assert not can_read_all_secrets(rights(docs, WEBHOOK_SA))


EVICT: Right = ("", "pods/eviction", "cluster", "all", "create")
WORKLOAD_PATCH = {
    ("apps", res, "cluster", "all", "patch")
    for res in ("deployments", "statefulsets", "daemonsets", "replicasets")
}
POD_DELETE: Right = ("", "pods", "cluster", "all", "delete")
WEBHOOK_CONFIG = {
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "cluster", "rotor-webhook", v)
    for v in ("get", "patch")
}
WRITE_VERBS = {"create", "patch", "update", "delete", "deletecollection", "*"}
MAY_WRITE = {
    ("", "secrets"),  # sources and RO views
    ("rbac.authorization.k8s.io", "roles"),  # the per-grant Roles and RoleBindings
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("", "events"),
    ("events.k8s.io", "events"),
    ("", "configmaps"),  # the ACL, in the release namespace
    ("coordination.k8s.io", "leases"),
    ("", "pods"),  # restarts
    ("", "pods/eviction"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    *(
        ("rotor.dev", r)
        for r in (
            "rotatingsecrets",
            "rotatingsecrets/status",
            "rotatingsecrets/finalizers",
            "externalstores",
            "externalstores/status",
            "externalstores/finalizers",
        )
    ),
}
"""Everything the controller may change, in any mode; anything else is a new power to review."""


def test_controller_rights_are_the_documented_ones() -> None:
    """The defaults are exactly the table of docs/install.md ("Permissions")."""
    assert rights(render({}), CONTROLLER_SA) == documented_rights()


@pytest.mark.parametrize("combo", COMBINATIONS)
def test_controller_rights_are_bounded(combo: str) -> None:
    """In every documented combination: no more than the table (plus eviction), write rights on
    a fixed list of resources only, no escalation verb, and the webhook configuration by name."""
    r = rights(render(COMBINATIONS[combo]), CONTROLLER_SA)
    assert r <= documented_rights() | {EVICT}
    written = {(g, res) for g, res, _, _, v in r if v in WRITE_VERBS}
    assert written <= MAY_WRITE, written - MAY_WRITE
    assert not {v for *_, v in r} & {"bind", "escalate", "impersonate", "*"}
    assert not {g for g, *_ in r} & {"*"}
    assert not {res for _, res, *_ in r} & {"*", "serviceaccounts/token", "nodes", "pods/exec"}
    assert {name for _, res, _, name, _ in r if res == "mutatingwebhookconfigurations"} <= {
        "rotor-webhook"
    }


@pytest.mark.parametrize(
    ("values", "patch_workloads", "delete_pods", "evict", "webhook_config"),
    [
        ({}, True, True, False, True),
        ({"controller": {"restartMethod": "evict"}}, False, False, True, True),
        # env consumers are still restarted (the template patch)
        ({"controller": {"restartUninjected": False}}, True, True, False, True),
        ({"controller": {"restartEnvConsumers": False}}, True, True, False, True),
        (
            {"controller": {"restartUninjected": False, "restartEnvConsumers": False}},
            False,
            False,
            False,
            True,
        ),
        (
            {
                "controller": {"restartUninjected": False, "restartEnvConsumers": False},
                "certs": {"provider": "cert-manager"},
            },
            False,
            False,
            False,
            False,
        ),
    ],
)
def test_least_privilege_modes_drop_the_broad_rights(
    values: dict[str, Any],
    patch_workloads: bool,
    delete_pods: bool,
    evict: bool,
    webhook_config: bool,
) -> None:
    """Patch on every workload (close to running anything) and the webhook configuration are
    held only when the feature that needs them is on."""
    r = rights(render(values), CONTROLLER_SA)
    assert (r >= WORKLOAD_PATCH) is patch_workloads
    assert not (WORKLOAD_PATCH & r) or patch_workloads
    assert (POD_DELETE in r) is delete_pods
    assert (EVICT in r) is evict
    assert (r >= WEBHOOK_CONFIG) is webhook_config
    assert not (WEBHOOK_CONFIG & r) or webhook_config
    env = {
        e["name"]: e.get("value")
        for d in find(render(values), "Deployment")
        if d["metadata"]["name"] == "rotor-controller"
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    }
    assert env["ROTOR_RESTART_METHOD"] == (values.get("controller") or {}).get(
        "restartMethod", "template"
    )


def test_controller_secret_rights() -> None:
    r = rights(render({}), CONTROLLER_SA)
    secrets = {
        v
        for g, res, where, name, v in r
        if (g, res, where, name) == ("", "secrets", "cluster", "all")
    }
    # bounded, not pinned: what it needs to write sources and views, and nothing broader
    assert secrets <= {"get", "list", "watch", "create", "patch", "update", "delete"}
    assert can_read_all_secrets(r)  # it reads every source: the reason it is the trust root
    # what it grants agents per grant, it holds itself, so it needs neither bind nor escalate
    assert {"get", "list", "watch", "patch", "update"} <= secrets


def test_webhook_configuration_right_is_name_scoped() -> None:
    r = rights(render({}), CONTROLLER_SA)
    names = {name for _, res, _, name, _ in r if res == "mutatingwebhookconfigurations"}
    assert names == {"rotor-webhook"}


@pytest.mark.parametrize(
    "rule",
    [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["watch", "get"]},
    ],
)
def test_the_check_catches_a_secret_reader(rule: dict[str, Any]) -> None:
    """Bind a reader to the webhook's ServiceAccount: the check must see it."""
    docs = render({})
    docs.append({"kind": "ClusterRole", "metadata": {"name": "oops"}, "rules": [rule]})
    docs.append(
        {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "oops"},
            "roleRef": {"kind": "ClusterRole", "name": "oops"},
            "subjects": [
                {"kind": "ServiceAccount", "namespace": WEBHOOK_SA[0], "name": WEBHOOK_SA[1]}
            ],
        }
    )
    assert can_read_all_secrets(rights(docs, WEBHOOK_SA))


def test_name_scoped_secret_rights_are_not_a_reader() -> None:
    r: set[Right] = {("", "secrets", "namespace", "rotor.shop.db", "watch")}
    assert not can_read_all_secrets(r)


def covered(rule: dict[str, Any], held: set[Right]) -> bool:
    """Whether a namespaced Role rule is within cluster-wide rights (RBAC escalation check)."""
    return all(
        (g, res, "cluster", "all", v) in held or (g, res, "cluster", name, v) in held
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for name in rule.get("resourceNames") or ["all"]
        for v in rule["verbs"]
    )


def test_controller_holds_every_right_it_grants() -> None:
    """The per-grant Roles the controller creates are within its own rights, so Kubernetes lets
    it create and bind them without the escalate or bind verbs."""
    from controller.decide import desired_rbac
    from rotor.acl import Grant
    from rotor.names import Principal, SecretRef

    secret = SecretRef.parse("shop/db-password", "shop", "f")
    grants = [
        Grant(secret, Principal.parse("shop/api"), "rw"),
        Grant(secret, Principal.parse("web/frontend"), "ro"),
    ]
    objects = desired_rbac(secret, grants, ["vault"])  # with an ExternalStore rule
    roles = [o for o in objects if o["kind"] == "Role"]
    assert len(roles) == 2
    held = rights(render({}), CONTROLLER_SA)
    for role in roles:
        for rule in role["rules"]:
            assert covered(rule, held), rule
    assert not covered({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}, held)


def test_the_controller_may_not_write_the_acl_grants() -> None:
    """Issue 24: it wrote the one ACL ConfigMap (requests and grants), so its token could grant.
    Now it changes only the requests ConfigMap; the grants one it may read."""
    mine = rights(render({}), CONTROLLER_SA)
    writes = {r for r in mine if r[1] == "configmaps" and r[4] in WRITE_VERBS - {"create"}}
    assert writes == {
        ("", "configmaps", "namespace", "rotor-acl-requests", v) for v in ("patch", "update")
    }
    assert ("", "configmaps", "namespace", "all", "get") in mine
