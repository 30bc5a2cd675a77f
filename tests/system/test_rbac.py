"""The emulator's authentication and RBAC, against cases from the Kubernetes RBAC documentation
(https://kubernetes.io/docs/reference/access-authn-authz/rbac/): each case is a real HTTP
request as that user (403 or not), and the same question through the real ``kubectl auth
can-i`` (a SelfSubjectAccessReview). With ``--kube=real`` the same table runs against the real
control plane (users by client certificate, service accounts by TokenRequest), which is what
the emulator's answers are held to."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotorctl import kubepki
from rotorctl.harness import wait_for
from rotorctl.kubeemu import EmulatorThread
from rotorctl.realkube import ControlPlane

RBAC = "rbac.authorization.k8s.io/v1"

# The example objects of the RBAC documentation.
OBJECTS: list[dict[str, Any]] = [
    {
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"namespace": "default", "name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]}],
    },
    {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "read-pods", "namespace": "default"},
        "subjects": [{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {"kind": "Role", "name": "pod-reader", "apiGroup": "rbac.authorization.k8s.io"},
    },
    {
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": "secret-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}],
    },
    {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "read-secrets", "namespace": "development"},
        "subjects": [{"kind": "User", "name": "dave", "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {
            "kind": "ClusterRole",
            "name": "secret-reader",
            "apiGroup": "rbac.authorization.k8s.io",
        },
    },
    {
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "read-secrets-global"},
        "subjects": [{"kind": "Group", "name": "manager", "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {
            "kind": "ClusterRole",
            "name": "secret-reader",
            "apiGroup": "rbac.authorization.k8s.io",
        },
    },
    {  # "Referring to resources": subresources
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"namespace": "default", "name": "pod-and-pod-logs-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}],
    },
    {  # resourceNames
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"namespace": "default", "name": "configmap-updater"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["my-configmap"],
                "verbs": ["update", "get", "list", "watch"],
            }
        ],
    },
    {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "logs-and-cm", "namespace": "default"},
        "subjects": [{"kind": "User", "name": "lena", "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {
            "kind": "Role",
            "name": "pod-and-pod-logs-reader",
            "apiGroup": "rbac.authorization.k8s.io",
        },
    },
    {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "cm", "namespace": "default"},
        "subjects": [{"kind": "User", "name": "lena", "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {
            "kind": "Role",
            "name": "configmap-updater",
            "apiGroup": "rbac.authorization.k8s.io",
        },
    },
    {  # "Role binding examples": every service account of a namespace, a wildcard apiGroup
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": "deployments-everything"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments", "*/scale"], "verbs": ["*"]}],
    },
    {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "qa-deployers", "namespace": "qa"},
        "subjects": [
            {
                "kind": "Group",
                "name": "system:serviceaccounts:qa",
                "apiGroup": "rbac.authorization.k8s.io",
            }
        ],
        "roleRef": {
            "kind": "ClusterRole",
            "name": "deployments-everything",
            "apiGroup": "rbac.authorization.k8s.io",
        },
    },
    {  # a ServiceAccount subject without a namespace: the binding's
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "robot-pods", "namespace": "default"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot"}],
        "roleRef": {"kind": "Role", "name": "pod-reader", "apiGroup": "rbac.authorization.k8s.io"},
    },
]

# (who, verb, resource, namespace, name, extra query, allowed)
CASES: list[tuple[str, str, str, str, str, str, bool]] = [
    ("jane", "get", "pods", "default", "web-1", "", True),
    ("jane", "list", "pods", "default", "", "", True),
    ("jane", "delete", "pods", "default", "web-1", "", False),
    ("jane", "get", "pods", "kube-system", "web-1", "", False),
    ("jane", "get", "secrets", "default", "db", "", False),
    ("dave", "get", "secrets", "development", "db", "", True),
    ("dave", "get", "secrets", "default", "db", "", False),
    ("dave", "list", "secrets", "", "", "", False),  # a RoleBinding never grants cluster scope
    ("manager-user", "list", "secrets", "", "", "", True),
    ("manager-user", "get", "secrets", "kube-system", "db", "", True),
    ("manager-user", "delete", "secrets", "kube-system", "db", "", False),
    ("lena", "get", "pods/log", "default", "web-1", "", True),
    ("lena", "get", "pods/status", "default", "web-1", "", False),
    ("lena", "get", "configmaps", "default", "my-configmap", "", True),
    ("lena", "get", "configmaps", "default", "other", "", False),
    ("lena", "list", "configmaps", "default", "", "", False),  # resourceNames: no plain list
    (
        "lena",
        "list",
        "configmaps",
        "default",
        "",
        "fieldSelector=metadata.name%3Dmy-configmap",
        True,
    ),
    (
        "lena",
        "watch",
        "configmaps",
        "default",
        "",
        "fieldSelector=metadata.name%3Dmy-configmap",
        True,
    ),
    ("lena", "list", "configmaps", "default", "", "fieldSelector=metadata.name%3Dother", False),
    ("sa:qa:deployer", "list", "apps/deployments", "qa", "", "", True),
    ("sa:qa:deployer", "get", "apps/deployments/scale", "qa", "web", "", True),
    ("sa:qa:deployer", "list", "apps/deployments", "default", "", "", False),
    ("sa:default:deployer", "list", "apps/deployments", "qa", "", "", False),
    ("sa:default:robot", "get", "pods", "default", "web-1", "", True),
    ("sa:other:robot", "get", "pods", "default", "web-1", "", False),
    ("nobody", "get", "pods", "default", "web-1", "", False),
]

VERB_METHOD = {"get": "GET", "list": "GET", "watch": "GET", "delete": "DELETE", "update": "PUT"}


class RealCluster:
    """The real control plane behind the emulator's calls used here: a user's "token" names
    its client certificate (``cert:<user>``), a service account's is a TokenRequest token."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.url = cp.url
        self.certs = {"cert:admin": cp.admin}
        self.admin_token = "cert:admin"

    def ssl_context(self, token: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cp.ca_file))
        if token in self.certs:
            ctx.load_cert_chain(str(self.certs[token].cert), str(self.certs[token].key))
        return ctx

    def add_user(self, name: str, groups: list[str] | tuple[str, ...] = ()) -> str:
        self.certs[f"cert:{name}"] = self.cp.client(f"user-{name}", name, groups)
        return f"cert:{name}"

    def issue_token(self, namespace: str, name: str) -> str:
        api = self.cp.api()
        for obj in (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": name, "namespace": namespace}},
        ):  # fmt: skip
            api.ensure(obj)
        return api.token_for(namespace, name, 600)

    def write_kubeconfig(self, path: Path, token: str | None = None, user: str = "u") -> Path:
        if token in self.certs:
            creds = self.certs[token]
            return kubepki.kubeconfig(path, self.url, self.cp.ca_file, user, client=creds)
        return self.cp.write_kubeconfig(path, token, user)


Cluster = EmulatorThread | RealCluster


@pytest.fixture(scope="module")
def emu(kube: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if kube == "real":
        with ControlPlane(tmp_path_factory.mktemp("kube")) as cp:
            real = RealCluster(cp)
            for ns in ("development", "qa", "esc", "other"):
                obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                assert call(real, real.admin_token, "POST", "/api/v1/namespaces", obj)[0] == 201
            for obj in OBJECTS:
                status, body = call(real, real.admin_token, "POST", collection_path(obj), obj)
                assert status == 201 or status == 200, body
            yield real
        return
    with EmulatorThread(secure=True) as e:
        for obj in OBJECTS:
            status, body = call(e, e.admin_token, "POST", collection_path(obj), obj)
            assert status == 201 or status == 200, body
        yield e


def collection_path(obj: dict[str, Any]) -> str:
    ns = obj["metadata"].get("namespace")
    plural = obj["kind"].lower() + "s"
    return f"/apis/{RBAC}/" + (f"namespaces/{ns}/" if ns else "") + plural


def call(
    emu: Cluster, token: str | None, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    # a PATCH must say which kind (the real server answers 415 to application/json)
    kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
    headers = {"Content-Type": kind}
    if token is not None and not token.startswith("cert:"):
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(emu.url + path, data=data, method=method, headers=headers)
    context = emu.ssl_context(token) if isinstance(emu, RealCluster) else emu.ssl_context()
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            if "watch=" in path:
                return r.status, {}
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def token_of(emu: Cluster, who: str) -> str:
    if who.startswith("sa:"):
        _, ns, name = who.split(":")
        return emu.issue_token(ns, name)
    groups = ["manager"] if who == "manager-user" else []
    return emu.add_user(who, groups)


def resource_path(resource: str, namespace: str, name: str) -> str:
    parts = resource.split("/")
    if len(parts) >= 2 and parts[0] == "apps":
        base, plural, sub = "/apis/apps/v1", parts[1], "/".join(parts[2:])
    else:
        base, plural, sub = "/api/v1", parts[0], "/".join(parts[1:])
    path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        path += f"/{name}"
    return path + (f"/{sub}" if sub else "")


@pytest.mark.parametrize(("who", "verb", "resource", "ns", "name", "query", "allowed"), CASES)
def test_rbac_documentation_cases(
    emu: Cluster,
    who: str,
    verb: str,
    resource: str,
    ns: str,
    name: str,
    query: str,
    allowed: bool,
) -> None:
    path = resource_path(resource, ns, name)
    params = [q for q in (query, "watch=true" if verb == "watch" else "") if q]
    if params:
        path += "?" + "&".join(params)
    status, body = call(emu, token_of(emu, who), VERB_METHOD[verb], path)
    if allowed:
        assert status != 403, body
    else:
        assert status == 403, (status, body)
        assert body["kind"] == "Status"
        assert body["reason"] == "Forbidden"
        user = who if not who.startswith("sa:") else "system:serviceaccount:" + who[3:]
        msg = body["message"]
        assert f'User "{user}" cannot {verb} resource' in msg
        group = "apps" if resource.startswith("apps/") else ""
        assert f'in API group "{group}"' in msg
        assert (f'in the namespace "{ns}"' if ns else "at the cluster scope") in msg


def test_no_token_or_unknown_token_is_401(emu: Cluster) -> None:
    """An unknown token is 401. No credentials at all: 401 from the emulator; the real server
    (anonymous authentication on, its default and kubeadm's) takes the request as
    ``system:anonymous`` and RBAC refuses it with 403."""
    real = isinstance(emu, RealCluster)
    status, body = call(emu, None, "GET", "/api/v1/namespaces/default/pods")
    if real:
        assert status == 403
        assert 'User "system:anonymous" cannot list resource "pods"' in body["message"]
    tokens = ["not-a-token"] if real else [None, "not-a-token"]
    for token in tokens:
        status, body = call(emu, token, "GET", "/api/v1/namespaces/default/pods")
        assert status == 401
        assert {k: v for k, v in body.items() if k != "details"} == {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }


def test_service_account_identity_and_groups(emu: Cluster) -> None:
    """A TokenRequest needs the ServiceAccount to exist and yields its real username/groups."""
    admin = emu.admin_token
    status, _ = call(
        emu, admin, "POST", "/api/v1/namespaces/qa/serviceaccounts/ghost/token", {"spec": {}}
    )
    assert status == 404
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "bot", "namespace": "qa"},
    }
    assert call(emu, admin, "POST", "/api/v1/namespaces/qa/serviceaccounts", sa)[0] in (200, 201)
    status, tr = call(
        emu, admin, "POST", "/api/v1/namespaces/qa/serviceaccounts/bot/token", {"spec": {}}
    )
    assert status == 201
    token = tr["status"]["token"]
    # system:serviceaccounts:qa is bound to deployments-everything in qa
    status, _ = call(emu, token, "GET", "/apis/apps/v1/namespaces/qa/deployments")
    assert status == 200
    status, body = call(emu, token, "GET", "/api/v1/namespaces/qa/secrets")
    assert status == 403
    assert body["message"] == (
        'secrets is forbidden: User "system:serviceaccount:qa:bot" cannot list resource '
        '"secrets" in API group "" in the namespace "qa"'
    )
    # Only the admin (or who may create serviceaccounts/token) gets tokens.
    status, _ = call(
        emu, token, "POST", "/api/v1/namespaces/qa/serviceaccounts/bot/token", {"spec": {}}
    )
    assert status == 403


def role(ns: str, name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"namespace": ns, "name": name},
        "rules": rules,
    }


def test_escalation_is_refused_without_escalate_or_bind(emu: Cluster) -> None:
    """ "Privilege escalation prevention and bootstrapping": a user who may create Roles and
    RoleBindings cannot grant or bind what it does not hold, unless it has escalate / bind."""
    admin = emu.admin_token
    ns = "esc"
    rbac_admin = [
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["roles", "rolebindings"],
            "verbs": ["create", "patch", "update", "get"],
        },
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
    ]
    for obj in (
        role(ns, "role-admin", rbac_admin),
        role(ns, "secrets", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        {
            "apiVersion": RBAC,
            "kind": "RoleBinding",
            "metadata": {"name": "role-admin", "namespace": ns},
            "subjects": [{"kind": "User", "name": "erin"}],
            "roleRef": {
                "kind": "Role",
                "name": "role-admin",
                "apiGroup": "rbac.authorization.k8s.io",
            },
        },
    ):
        assert call(emu, admin, "POST", collection_path(obj), obj)[0] in (200, 201)
    erin = emu.add_user("erin")
    # Within what erin holds: allowed.
    ok = role(ns, "cm-reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])
    assert call(emu, erin, "POST", collection_path(ok), ok)[0] == 201
    # Granting secrets: refused, the message names the missing rule.
    bad = role(ns, "steal", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])
    status, body = call(emu, erin, "POST", collection_path(bad), bad)
    assert status == 403
    assert "attempting to grant RBAC permissions not currently held" in body["message"]
    assert re.search(r"Resources:\[[\"']secrets[\"']\]", body["message"]), body["message"]
    # Widening an allowed Role by a patch: refused too.
    status, body = call(
        emu,
        erin,
        "PATCH",
        collection_path(ok) + "/cm-reader",
        {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
    )
    assert status == 403, body
    # Binding herself to the secrets Role: refused (she does not hold its rights).
    binding = {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "me-secrets", "namespace": ns},
        "subjects": [{"kind": "User", "name": "erin"}],
        "roleRef": {"kind": "Role", "name": "secrets", "apiGroup": "rbac.authorization.k8s.io"},
    }
    status, body = call(emu, erin, "POST", collection_path(binding), binding)
    assert status == 403
    assert "not currently held" in body["message"]
    assert call(emu, erin, "GET", f"/api/v1/namespaces/{ns}/secrets/x")[0] == 403
    # With escalate and bind (granted by the admin) both go through.
    extra = role(
        ns,
        "escalator",
        [
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["roles"],
                "verbs": ["escalate", "bind"],
            }
        ],
    )
    extra_binding = {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "escalator", "namespace": ns},
        "subjects": [{"kind": "User", "name": "erin"}],
        "roleRef": {"kind": "Role", "name": "escalator", "apiGroup": "rbac.authorization.k8s.io"},
    }
    for obj in (extra, extra_binding):
        assert call(emu, admin, "POST", collection_path(obj), obj)[0] in (200, 201)
    assert call(emu, erin, "POST", collection_path(bad), bad)[0] == 201
    assert call(emu, erin, "POST", collection_path(binding), binding)[0] == 201
    assert call(emu, erin, "GET", f"/api/v1/namespaces/{ns}/secrets/x")[0] == 404  # allowed now


def kubectl_binaries() -> list[str]:
    found = shutil.which("kubectl")
    if not found:
        return []
    folder = Path(found).resolve().parent
    versioned = sorted(str(p) for p in folder.glob("kubectl.1.*"))
    return versioned or [found]


@pytest.mark.skipif(not kubectl_binaries(), reason="kubectl is not installed")
@pytest.mark.parametrize(
    "kubectl", [kubectl_binaries()[0], kubectl_binaries()[-1]] if kubectl_binaries() else []
)
def test_kubectl_auth_can_i_agrees(emu: Cluster, kubectl: str, tmp_path: Path) -> None:
    """The same table through the real ``kubectl auth can-i`` (oldest and newest here)."""
    for who, verb, resource, ns, name, query, allowed in CASES:
        if query:  # can-i has no field selector: the resourceNames case is the named one
            continue
        cfg = emu.write_kubeconfig(tmp_path / f"{who}.kubeconfig", token_of(emu, who))
        parts = resource.split("/")
        if parts[0] == "apps":
            parts = parts[1:]
            res = f"{parts[0]}.apps"
        else:
            res = parts[0]
        target = res + (f"/{name}" if name else "")
        argv = [kubectl, "--kubeconfig", str(cfg), "auth", "can-i", verb, target]
        if len(parts) > 1:
            argv.append(f"--subresource={parts[1]}")
        argv += [f"--namespace={ns}"] if ns else ["--all-namespaces"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        answer = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
        assert answer == ("yes" if allowed else "no"), (argv, out.stdout, out.stderr)


def test_a_token_stops_authenticating_when_it_expires(emu: Cluster) -> None:
    if not isinstance(emu, EmulatorThread):
        pytest.skip("emulator only: a real TokenRequest lives at least 10 minutes")
    admin = emu.admin_token
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "t", "namespace": "qa"},
    }
    call(emu, admin, "POST", "/api/v1/namespaces/qa/serviceaccounts", sa)
    status, body = call(
        emu,
        admin,
        "POST",
        "/api/v1/namespaces/qa/serviceaccounts/t/token",
        {"spec": {"expirationSeconds": 60}},
    )
    assert status == 422
    assert "spec.expirationSeconds" in body["message"]
    short = emu.call(lambda k8s: k8s.issue_token("qa", "t", 0.5))
    assert call(emu, short, "GET", "/apis/apps/v1/namespaces/qa/deployments")[0] == 200
    wait_for(
        lambda: call(emu, short, "GET", "/apis/apps/v1/namespaces/qa/deployments")[0] == 401,
        "the token expired",
        10,
    )
