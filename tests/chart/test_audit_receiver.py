"""The chart's audit receiver (auditReceiver.enabled): no API access, reachable only as documented,
and the controller pointed at it."""

from __future__ import annotations

from tests.chart.chartlib import COMBINATIONS, NAMESPACE, containers, env_of, find, one, render

NAME = "rotor-audit-receiver"


def docs_on() -> list[dict]:
    return render(COMBINATIONS["audit-receiver"])


def test_off_by_default_and_the_controller_is_not_pointed_anywhere() -> None:
    docs = render({})
    assert [d for d in docs if d["metadata"]["name"] == NAME] == []
    controller = containers(one(docs, "Deployment", "rotor-controller"))["controller"]
    assert "ROTOR_AUDIT_RECEIVER_URL" not in env_of(controller)


def test_the_receiver_has_no_kubernetes_api_access() -> None:
    docs = docs_on()
    sa = one(docs, "ServiceAccount", NAME)
    assert sa["automountServiceAccountToken"] is False
    pod = one(docs, "Deployment", NAME)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == NAME
    assert not any("projected" in v for v in pod["volumes"])  # no token projected either
    bound = {
        s["name"]
        for b in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding")
        for s in b["subjects"]
    }
    assert NAME not in bound


def test_controller_env_and_receiver_settings() -> None:
    docs = docs_on()
    controller = containers(one(docs, "Deployment", "rotor-controller"))["controller"]
    env = env_of(controller)
    assert env["ROTOR_AUDIT_RECEIVER_URL"] == f"http://{NAME}.{NAMESPACE}.svc:9762"
    assert env["ROTOR_AUDIT_CONFIGMAP"] == NAME
    receiver = containers(one(docs, "Deployment", NAME))["audit-receiver"]
    renv = env_of(receiver)
    assert renv["ROTOR_AUDIT_ALLOWED_SOURCES"] == "10.42.0.0/16"
    assert renv["ROTOR_AUDIT_INGEST_TOKEN_FILE"] == "/etc/rotor/ingest/token"
    # the settings the receiver reads accept what the chart sets
    from rotor.settings.audit import AuditSettings

    settings = AuditSettings.from_env(renv)
    assert (settings.socket_port, settings.ingest_port, settings.events_port) == (9760, 9761, 9762)
    volumes = {
        v["name"]: v for v in one(docs, "Deployment", NAME)["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["config"]["configMap"] == {"name": NAME, "optional": True}
    assert volumes["ingest-token"]["secret"]["secretName"] == "rotor-audit-ingest"


def test_network_policy_events_only_from_the_controller_and_no_egress() -> None:
    np = one(docs_on(), "NetworkPolicy", NAME)["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    assert np["egress"] == []
    events, senders = np["ingress"]
    assert events["ports"] == [{"port": "events", "protocol": "TCP"}]
    (peer,) = events["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"
    assert {p["port"] for p in senders["ports"]} == {"audit-socket", "audit-ingest"}
    assert senders["from"] == COMBINATIONS["audit-receiver"]["auditReceiver"]["from"]
