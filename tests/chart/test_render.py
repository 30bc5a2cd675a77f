"""The chart renders, for the defaults and every documented combination of values, into objects
that Kubernetes 1.29 and 1.33 accept (kubernetes-validate --strict), and each switch does what
docs/install.md says."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.chart.chartlib import (
    CANISTER_ID,
    COMBINATIONS,
    NAMESPACE,
    Doc,
    chart,
    containers,
    crds,
    env_of,
    find,
    one,
    pod_specs,
    render,
    render_files,
)
from tests.chart.custom_schemas import SCHEMAS

KUBE_VERSIONS = ("1.29", "1.33")


def validate(doc: Doc, kube: str) -> None:
    """kubernetes-validate --strict for built-in kinds, our own schema for third-party CRs."""
    key = (doc["apiVersion"], doc["kind"])
    where = f"{doc['kind']}/{doc['metadata']['name']} on Kubernetes {kube}"
    if key in SCHEMAS:
        try:
            jsonschema.validate(doc, SCHEMAS[key])
        except jsonschema.ValidationError as e:
            pytest.fail(f"{where}: {e.message} at {e.json_path}")
        return
    try:
        kubernetes_validate.validate(doc, kube, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{where}: {e.message} at {'/'.join(map(str, e.path))}")
    except kubernetes_validate.SchemaNotFoundError:
        pytest.fail(f"{where}: kind unknown to Kubernetes and not in custom_schemas.SCHEMAS")


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("combo", COMBINATIONS)
def test_every_rendered_document_is_valid(combo: str, kube: str) -> None:
    docs = render(COMBINATIONS[combo])
    assert docs
    for doc in docs:
        validate(doc, kube)


@pytest.mark.parametrize("combo", ["classic-sidecars", "everything"])
def test_classic_mode_is_valid_on_the_oldest_supported_kubernetes(combo: str) -> None:
    """Chart.yaml's kubeVersion allows 1.27, where classic sidecars are the way."""
    assert chart().metadata["kubeVersion"] == ">=1.27.0-0"
    for doc in render(COMBINATIONS[combo]):
        validate(doc, "1.27")


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_shipped_crds_are_valid(kube: str) -> None:
    shipped = crds()
    assert {c["spec"]["names"]["kind"] for c in shipped} >= {"RotatingSecret", "ExternalStore"}
    for crd in shipped:
        validate(crd, kube)


def test_validator_catches_a_misplaced_field() -> None:
    """The check above can fail: a field in the wrong place is refused, built-in or custom."""
    bad = render({})
    svc = one(bad, "Service", "rotor-webhook")
    svc["spec"]["port"] = 443
    with pytest.raises(pytest.fail.Exception, match="port"):
        validate(svc, "1.33")
    monitor = one(render(COMBINATIONS["monitors"]), "PodMonitor")
    monitor["spec"]["endpoints"] = []
    with pytest.raises(pytest.fail.Exception, match="endpoints"):
        validate(monitor, "1.33")


RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
"""Volume types the "restricted" Pod Security Standard allows."""


@pytest.mark.parametrize("combo", COMBINATIONS)
def test_every_pod_is_hardened(combo: str) -> None:
    """Every pod meets the restricted Pod Security Standard (and a read-only root)."""
    for name, spec in pod_specs(render(COMBINATIONS[combo])):
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), (name, key)
        for vol in spec["volumes"]:
            assert set(vol) - {"name"} <= RESTRICTED_VOLUMES, (name, vol)
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert sc["runAsUser"] == 65532, (name, c["name"])
            assert c["resources"]["requests"], (name, c["name"])


def _webhook_pod(docs: list[Doc]) -> tuple[Doc, dict[str, Doc]]:
    deployments = {d["metadata"]["name"]: d for d in find(docs, "Deployment")}
    dep = deployments.get("rotor-webhook") or deployments["rotor-controller"]
    return dep, containers(dep)


def test_defaults_separate_webhook_with_no_token() -> None:
    docs = render({})
    assert {d["metadata"]["name"] for d in find(docs, "Deployment")} == {
        "rotor-controller",
        "rotor-webhook",
    }
    webhook = one(docs, "Deployment", "rotor-webhook")
    spec = webhook["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "rotor-webhook"
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert not any(m.startswith("/var/run/secrets/kubernetes.io") for m in mounts)
    assert {v["name"] for v in spec["volumes"]} == {"tls", "tmp"}
    svc = one(docs, "Service", "rotor-webhook")
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "webhook"
    assert find(docs, "PodDisruptionBudget") == []  # one replica must not block a drain
    for kind in ("ServiceMonitor", "PodMonitor", "NetworkPolicy", "Certificate", "Issuer"):
        assert find(docs, kind) == [], kind


def test_combined_runs_both_in_the_controller_pod() -> None:
    docs = render(COMBINATIONS["combined"])
    assert [d["metadata"]["name"] for d in find(docs, "Deployment")] == ["rotor-controller"]
    dep = one(docs, "Deployment", "rotor-controller")
    cs = containers(dep)
    assert set(cs) == {"controller", "webhook"}
    assert cs["webhook"]["command"] == ["rotor-webhook"]
    assert cs["controller"]["command"] == ["rotor-controller"]
    # the API token goes to the controller container only
    token = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert token in {m["mountPath"] for m in cs["controller"]["volumeMounts"]}
    assert token not in {m["mountPath"] for m in cs["webhook"]["volumeMounts"]}
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    svc = one(docs, "Service", "rotor-webhook")
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "controller"
    assert find(docs, "ServiceAccount", "rotor-webhook") == []
    # the controller in this pod writes the certificate Secret: the volume cannot wait for it
    (tls,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["optional"] is True


def test_mutating_webhook_defaults() -> None:
    cfg = one(render({}), "MutatingWebhookConfiguration", "rotor-webhook")
    (hook,) = cfg["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 10
    assert hook["sideEffects"] == "None"
    assert hook["clientConfig"]["service"] == {
        "name": "rotor-webhook",
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": 443,
    }
    assert "caBundle" not in hook["clientConfig"]  # the controller patches it
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["rules"][0]["resources"] == ["pods"]
    names, optout = hook["namespaceSelector"]["matchExpressions"]
    assert names["key"] == "kubernetes.io/metadata.name"
    assert names["operator"] == "NotIn"
    assert set(names["values"]) == {"kube-system", "kube-node-lease", "kube-public", NAMESPACE}
    assert optout == {"key": "rotor.dev/inject", "operator": "NotIn", "values": ["false"]}
    assert hook["objectSelector"]["matchExpressions"] == [optout]
    (cond,) = hook["matchConditions"]
    assert "'rotor.dev/rw' in object.metadata.annotations" in cond["expression"]
    assert "'rotor.dev/ro' in object.metadata.annotations" in cond["expression"]


def test_release_namespace_is_always_excluded() -> None:
    cfg = one(
        render({"webhook": {"excludeNamespaces": []}}, namespace="secrets-infra"),
        "MutatingWebhookConfiguration",
    )
    names = cfg["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]
    assert names["values"] == ["secrets-infra"]


def test_match_conditions_can_be_turned_off() -> None:
    cfg = one(render(COMBINATIONS["no-match-conditions"]), "MutatingWebhookConfiguration")
    assert "matchConditions" not in cfg["webhooks"][0]
    cfg = one(render({"webhook": {"matchConditions": "always"}}), "MutatingWebhookConfiguration")
    assert cfg["webhooks"][0]["matchConditions"]


def test_failure_policy_and_timeout_are_values() -> None:
    cfg = one(render(COMBINATIONS["failure-ignore"]), "MutatingWebhookConfiguration")
    assert cfg["webhooks"][0]["failurePolicy"] == "Ignore"
    assert cfg["webhooks"][0]["timeoutSeconds"] == 5


@pytest.mark.parametrize("combo", ["cert-manager", "cert-manager-issuer"])
def test_cert_manager(combo: str) -> None:
    docs = render(COMBINATIONS[combo])
    cert = one(docs, "Certificate", "rotor-webhook")
    assert cert["spec"]["secretName"] == "rotor-webhook-tls"
    assert "rotor-webhook.rotor-system.svc" in cert["spec"]["dnsNames"]
    cfg = one(docs, "MutatingWebhookConfiguration")
    assert cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "rotor-system/rotor-webhook"
    )
    controller = containers(one(docs, "Deployment", "rotor-controller"))["controller"]
    assert env_of(controller)["ROTOR_MANAGE_CERTS"] == "false"
    tls = one(docs, "Deployment", "rotor-webhook")["spec"]["template"]["spec"]["volumes"][0]
    assert tls["secret"]["secretName"] == cert["spec"]["secretName"]
    if combo == "cert-manager":
        issuer = one(docs, "Issuer")
        assert issuer["spec"] == {"selfSigned": {}}
        assert cert["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    else:
        assert find(docs, "Issuer") == []
        assert cert["spec"]["issuerRef"] == {
            "name": "corp-ca",
            "kind": "ClusterIssuer",
            "group": "cert-manager.io",
        }


def test_controller_manages_certs_by_default() -> None:
    docs = render({})
    env = env_of(containers(one(docs, "Deployment", "rotor-controller"))["controller"])
    assert env["ROTOR_MANAGE_CERTS"] == "true"
    assert env["ROTOR_WEBHOOK_CERT_SECRET"] == "rotor-webhook-tls"
    assert (
        env["ROTOR_WEBHOOK_CONFIG_NAME"]
        == one(docs, "MutatingWebhookConfiguration")["metadata"]["name"]
    )
    vol = one(docs, "Deployment", "rotor-webhook")["spec"]["template"]["spec"]["volumes"][0]
    assert vol["secret"]["secretName"] == "rotor-webhook-tls"
    assert "optional" not in vol["secret"]  # the pod waits for the controller's Secret


def test_canister_backend() -> None:
    docs = render(COMBINATIONS["canister"])
    env = env_of(containers(one(docs, "Deployment", "rotor-controller"))["controller"])
    assert env["ROTOR_ACL_BACKEND"] == "canister"
    assert env["ROTOR_CANISTER_ID"] == CANISTER_ID
    assert env["ROTOR_CANISTER_HOST"] == "https://icp-api.io"
    assert env["ROTOR_CANISTER_IDENTITY_SECRET"] == "rotor-canister-identity"
    assert "ROTOR_ACL_CONFIGMAP" not in env


def test_sidecar_mode_and_agent_settings_reach_the_webhook() -> None:
    values: dict[str, Any] = {
        "webhook": {"sidecarMode": "classic"},
        "agent": {
            "image": {"repository": "registry.local/agent", "tag": "e2e", "pullPolicy": "Never"},
            "resources": {"limits": {"cpu": "100m", "memory": ""}},
        },
    }
    _, cs = _webhook_pod(render(values))
    env = env_of(cs["webhook"])
    assert env["ROTOR_SIDECAR_MODE"] == "classic"
    assert env["ROTOR_AGENT_IMAGE"] == "registry.local/agent:e2e"
    assert env["ROTOR_AGENT_PULL_POLICY"] == "Never"
    assert env["ROTOR_AGENT_CPU_LIMIT"] == "100m"
    assert env["ROTOR_AGENT_MEMORY_LIMIT"] == ""
    assert env["ROTOR_AGENT_MEMORY_REQUEST"] == "36Mi"


def test_monitors() -> None:
    docs = render(COMBINATIONS["monitors"])
    monitors = {d["metadata"]["name"]: d for d in find(docs, "ServiceMonitor")}
    assert set(monitors) == {"rotor-controller", "rotor-webhook"}
    for component, monitor in (
        ("controller", monitors["rotor-controller"]),
        ("webhook", monitors["rotor-webhook"]),
    ):
        selected = [
            s
            for s in find(docs, "Service")
            if all(
                s["metadata"]["labels"].get(k) == v
                for k, v in monitor["spec"]["selector"]["matchLabels"].items()
            )
        ]
        assert len(selected) == 1, component
        ports = {p["name"] for p in selected[0]["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports
    pod_monitor = one(docs, "PodMonitor")
    assert pod_monitor["spec"]["selector"] == {"matchLabels": {"rotor.dev/injected": "true"}}
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "rotor-metrics"


@pytest.mark.parametrize("combo", ["networkpolicy", "networkpolicy-combined"])
def test_network_policies_cover_every_pod_port(combo: str) -> None:
    docs = render(COMBINATIONS[combo])
    policies = find(docs, "NetworkPolicy")
    for dep in find(docs, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        (policy,) = [
            p
            for p in policies
            if all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
        ]
        allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        declared = {p["name"] for c in containers(dep).values() for p in c.get("ports", [])}
        assert allowed == declared, dep["metadata"]["name"]
    if combo == "networkpolicy":
        webhook = one(docs, "NetworkPolicy", "rotor-webhook")
        assert webhook["spec"]["egress"] == []  # the webhook opens no connection


def test_replicas_and_disruption_budgets() -> None:
    docs = render(COMBINATIONS["replicas-2"])
    assert one(docs, "Deployment", "rotor-controller")["spec"]["replicas"] == 2
    assert one(docs, "Deployment", "rotor-webhook")["spec"]["replicas"] == 2
    budgets = {d["metadata"]["name"]: d for d in find(docs, "PodDisruptionBudget")}
    assert set(budgets) == {"rotor-controller", "rotor-webhook"}
    for name, pdb in budgets.items():
        dep = one(docs, "Deployment", name)
        assert pdb["spec"]["selector"] == dep["spec"]["selector"]
        assert pdb["spec"]["minAvailable"] == 1
    env = env_of(containers(one(docs, "Deployment", "rotor-controller"))["controller"])
    assert env["ROTOR_LEADER_ELECTION"] == "true"


def test_scheduling_values_reach_the_pods() -> None:
    docs = render(COMBINATIONS["scheduling"])
    for name in ("rotor-controller", "rotor-webhook"):
        dep = one(docs, "Deployment", name)
        spec = dep["spec"]["template"]["spec"]
        meta = dep["spec"]["template"]["metadata"]
        assert meta["annotations"] == {"example.com/team": "secrets"}
        assert meta["labels"]["example.com/tier"] == "infra"
        assert dep["spec"]["selector"]["matchLabels"].items() <= meta["labels"].items()
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]
        assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert spec["tolerations"][0]["key"] == "infra"
        assert spec["priorityClassName"] == "system-cluster-critical"
        assert "podAntiAffinity" in spec["affinity"]
        sa = one(docs, "ServiceAccount", spec["serviceAccountName"])
        assert sa["metadata"]["annotations"] == {"example.com/role": name.split("-")[1]}


def test_every_service_selects_a_pod_port() -> None:
    for combo in COMBINATIONS.values():
        docs = render(combo)
        for svc in find(docs, "Service"):
            sel = svc["spec"]["selector"]
            pods = [
                d
                for d in find(docs, "Deployment")
                if all(
                    d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items()
                )
            ]
            assert pods, svc["metadata"]["name"]
            names = {p["name"] for c in containers(pods[0]).values() for p in c.get("ports", [])}
            for port in svc["spec"]["ports"]:
                assert port["targetPort"] in names, (svc["metadata"]["name"], port)


def test_notes_tell_the_next_step() -> None:
    notes = render_files({})["rotor/templates/NOTES.txt"]
    assert "kubectl -n rotor-system rollout status deploy/rotor-controller" in notes
    assert "rotor.dev/rw" in notes
    assert "rotor.dev/ro" in notes
    assert "rotor acl approve" in notes
    assert "docs/install.md" in notes
    canister = render_files(COMBINATIONS["canister"])["rotor/templates/NOTES.txt"]
    assert CANISTER_ID in canister


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({}, "image.repository"),
        ({"image": {"repository": "registry.example/rotor-controller"}}, "agent.image.repository"),
    ],
)
def test_without_images_the_chart_says_how_to_build_them(values: dict, field: str) -> None:
    """No registry publishes the images: the defaults fail at render, naming the fix."""
    import helm_python as helm

    with pytest.raises(helm.errors.HelmError) as e:
        render_files(values, images=False)
    assert f"{field} is not set" in str(e.value)
    assert "make images IMAGE_PREFIX=REGISTRY/" in str(e.value)
    assert "--set agent.image.repository=REGISTRY/rotor-agent" in str(e.value)
