"""Every part under its real identity, as a user checks it: the emulator authenticates and
authorizes each request (rotorctl.kubeemu, secure), the controller and webhook hold exactly the
chart's rendered RBAC, each agent its pod's service-account token and the per-grant Roles."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotorctl import chartrbac
from rotorctl.harness import ROTOR_NAMESPACE, Api, ApiError, Pod, System
from rotorctl.tls import make_certs
from tests.system.test_flows import KEYS, NAME, NS, RO_NS, approve, holds, pair, until

VIEW = f"rotor.{NS}.{NAME}"


def refused(api: Api, *request: Any) -> str:
    """The 403 message of a GET (``api.get`` arguments), or "" when it was not refused."""
    try:
        api.get(*request)
    except ApiError as e:
        if e.code == 403:
            return str(e.status.get("message") or "")
        raise
    return ""


def denied_count(system: System, pod: Pod) -> float:
    for line in system.agent_metrics(pod).splitlines():
        if line.startswith(f'rotor_agent_api_denied_total{{secret="{NAME}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_ro_agent_is_refused_before_its_grant_and_after_the_revoke(system: System) -> None:
    api, web = pair(system)
    w, r = system.add_pod(api), system.add_pod(web)
    as_web = system.api.as_user(system.token(RO_NS, "web"))
    # Before approval the API refuses the agent's reads: its metric counts them, no files.
    until(lambda: denied_count(system, r) > 0, "the RO agent's reads refused (its metric)")
    message = refused(as_web, "v1", "secrets", RO_NS, VIEW)
    assert message == (
        f'secrets "{VIEW}" is forbidden: User "system:serviceaccount:{RO_NS}:web" cannot get '
        f'resource "secrets" in API group "" in the namespace "{RO_NS}"'
    )
    assert not r.files(NAME)
    assert r.agent is not None
    assert "lacks the permission" in r.agent.tail(20000)
    # After approval: readable, the files appear.
    approve(system)
    until(lambda: holds(r, system.current(NS, NAME)), "the RO files after approval")
    assert not refused(as_web, "v1", "secrets", RO_NS, VIEW)
    assert holds(w, system.current(NS, NAME))
    # After the revoke: refused within one ACL poll (1 s here; slack for a loaded machine),
    # and the files are gone.
    system.acl("revoke", f"{NS}/{NAME}", f"{RO_NS}/web", "ro")
    until(lambda: refused(as_web, "v1", "secrets", RO_NS, VIEW), "the view refused", 15)
    until(lambda: not r.files(NAME), "the RO files deleted after the revoke")


def test_each_identity_reaches_only_its_own_secrets(system: System) -> None:
    api, web = pair(system)
    approve(system)
    w = system.add_pod(api)
    spare = system.add_pod(api)  # a second RW replica: reads, never writes
    r = system.add_pod(web)
    until(lambda: holds(r, system.current(NS, NAME)), "the reader's first value")
    system.rotating_secret(NS, "other", KEYS, interval="1h", overlap="30m")
    system.workload(NS, "other-app", {"rotor.dev/rw": "other"})
    system.acl("approve", f"{NS}/other", f"{NS}/other-app", "rw")
    until(lambda: system.source(NS, "other"), "the other secret's source")

    as_api = system.api.as_user(system.token(NS, "api"))
    as_web = system.api.as_user(system.token(RO_NS, "web"))
    as_webhook = system.api.as_user(system.token(ROTOR_NAMESPACE, "rotor-webhook"))
    # Own secret: yes. Another secret's source or view, or a list of Secrets: no.
    assert not refused(as_api, "v1", "secrets", NS, NAME)
    assert refused(as_api, "v1", "secrets", NS, "other")
    assert refused(as_api, "v1", "secrets", NS, "")
    assert not refused(as_web, "v1", "secrets", RO_NS, VIEW)
    assert refused(as_web, "v1", "secrets", NS, NAME)  # the source, in another namespace
    assert refused(as_web, "v1", "secrets", RO_NS, f"rotor.{NS}.other")
    # A reader cannot write the source: the API refuses the patch.
    with pytest.raises(ApiError) as e:
        as_web.patch("v1", "secrets", NS, NAME, {"data": {"password": "eA=="}})
    assert e.value.code == 403
    assert 'cannot patch resource "secrets"' in e.value.status["message"]
    # The webhook's identity can read no Secret at all.
    for ns, name in ((NS, NAME), (RO_NS, VIEW), (ROTOR_NAMESPACE, "")):
        assert refused(as_webhook, "v1", "secrets", ns, name)
    with pytest.raises(ApiError) as e:
        as_webhook.request("GET", "/api/v1/secrets")
    assert e.value.code == 403
    assert "at the cluster scope" in e.value.status["message"]
    # The RW replica that is not the writer does not write: every committed version names the
    # writer pod. (Both replicas run as one ServiceAccount, so RBAC cannot tell them apart, in
    # a real cluster neither: the writer choice is the controller's status.writer.)
    until(lambda: (system.status(NS, NAME).get("writer") or {}).get("pod"), "a writer named")
    writer = system.status(NS, NAME)["writer"]["pod"]
    assert writer in (w.name, spare.name)
    before = system.version(NS, NAME)
    system.rotate_now(NS, NAME)
    until(lambda: system.version(NS, NAME) > before, "a rotation committed")
    ann = (system.source(NS, NAME) or {})["metadata"]["annotations"]
    assert ann["rotor.dev/writer"].endswith(writer)


def without_rule(resource: str) -> Any:
    def drop(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for d in docs:
            if d["kind"] == "ClusterRole" and d["metadata"]["name"] == chartrbac.CONTROLLER_SA:
                d = {**d, "rules": [r for r in d["rules"] if resource not in r["resources"]]}
            out.append(d)
        return out

    return drop


def without_verb(resource: str, verb: str) -> Any:
    def drop(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for d in docs:
            if d["kind"] == "ClusterRole" and d["metadata"]["name"] == chartrbac.CONTROLLER_SA:
                rules = [
                    {**r, "verbs": [v for v in r["verbs"] if v != verb]}
                    if resource in r["resources"]
                    else r
                    for r in d["rules"]
                ]
                d = {**d, "rules": rules}
            out.append(d)
        return out

    return drop


@pytest.fixture
def system_without_role_rights(tmp_path: Path, kube: str) -> Iterator[System]:
    with System(tmp_path / "sys", rbac_filter=without_rule("roles"), kube=kube) as s:
        yield s


@pytest.fixture
def system_without_secret_update(tmp_path: Path, kube: str) -> Iterator[System]:
    with System(tmp_path / "sys", rbac_filter=without_verb("secrets", "update"), kube=kube) as s:
        yield s


def reconcile_forbidden(system: System) -> dict[str, Any] | None:
    for c in system.status(NS, NAME).get("conditions") or []:
        if c.get("type") == "Reconciled" and c.get("reason") == "Forbidden":
            return dict(c)
    return None


def test_the_controller_cannot_grant_what_it_does_not_hold(
    system_without_secret_update: System,
) -> None:
    """The escalation rule: the controller's ClusterRole without ``update`` on Secrets, so the
    writer's Role (get, list, watch, patch, update of its Secret) grants more than it holds -
    the API refuses the Role, and the controller says so."""
    system = system_without_secret_update
    api, _web = pair(system)
    approve(system)
    system.add_pod(api)
    cond = until(lambda: reconcile_forbidden(system), "Reconciled=False/Forbidden")
    assert "attempting to grant RBAC permissions not currently held" in cond["message"]
    # the real server quotes as JSON (["update"]), the emulator as Python (['update'])
    assert re.search(r"Verbs:\[[\"']update[\"']\]", cond["message"]), cond["message"]
    roles = system.api.request("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles")
    assert not (roles or {}).get("items")


def test_controller_missing_a_chart_permission_fails_visibly(
    system_without_role_rights: System,
) -> None:
    """The rendered ClusterRole minus its Roles/RoleBindings rule: the controller cannot grant,
    and says so in a condition, an Event and its log, naming the permission."""
    system = system_without_role_rights
    rules = next(
        d
        for d in system.chart_identities
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == chartrbac.CONTROLLER_SA
    )["rules"]
    assert not any("roles" in r["resources"] for r in rules)
    api, _web = pair(system)
    approve(system)
    w = system.add_pod(api)

    cond = until(lambda: reconcile_forbidden(system), "the Reconciled=False/Forbidden condition")
    assert cond["status"] == "False"
    want = f'User "system:serviceaccount:{ROTOR_NAMESPACE}:{chartrbac.CONTROLLER_SA}" cannot '
    assert want in cond["message"]
    assert 'resource "roles" in API group "rbac.authorization.k8s.io"' in cond["message"]
    assert system.controller is not None
    assert 'resource "roles"' in system.controller.tail(50000)
    assert 'rotor_controller_errors_total{kind="forbidden"}' in system.controller_metrics()
    events = system.api.request("GET", f"/api/v1/namespaces/{NS}/events") or {}
    assert any(e.get("reason") == "Forbidden" for e in events.get("items") or [])
    assert not w.files(NAME)  # nothing granted: the writer never gets its secret


@pytest.fixture
def system_failing_closed(tmp_path: Path, kube: str) -> Iterator[System]:
    with System(tmp_path / "sys", failure_policy="Fail", kube=kube) as s:
        yield s


def test_failure_policy_fail_refuses_a_pod_while_the_webhook_is_down(
    system_failing_closed: System,
) -> None:
    """The API calls the chart's MutatingWebhookConfiguration itself: with the webhook up the
    pod is injected; down, with failurePolicy Fail, the API refuses to create the pod."""
    system = system_failing_closed
    _api, web = pair(system)
    first = system.add_pod(web)
    assert first.injected
    system.stop_webhook()
    with pytest.raises(ApiError) as e:
        system.add_pod(web)
    assert e.value.code == 500
    assert 'failed calling webhook "inject.rotor.dev"' in e.value.status["message"]
    pods = system.api.request("GET", f"/api/v1/namespaces/{RO_NS}/pods") or {}
    assert [p["metadata"]["name"] for p in pods.get("items") or []] == [first.name]


def test_the_api_verifies_the_webhook_certificate_against_the_ca_bundle(system: System) -> None:
    """A caBundle that is not the webhook's CA: the call fails TLS verification, and with
    failurePolicy Ignore the pod is created without the agent."""
    _api, web = pair(system)
    name = system.webhook_config["metadata"]["name"]
    other_ca = base64.b64encode(make_certs(system.workdir / "other-ca", "other")[0].read_bytes())
    system.api.request(
        "PATCH",
        f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
        [
            {
                "op": "replace",
                "path": "/webhooks/0/clientConfig/caBundle",
                "value": other_ca.decode(),
            }
        ],
        "application/json-patch+json",
    )
    assert not system.add_pod(web).injected
