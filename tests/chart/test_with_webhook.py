"""The chart and the webhook agree: a pod the webhook patches with the chart's settings is what
the chart's PodMonitor scrapes, carries the chart's agent image and resources, is valid for
Kubernetes, and the chart's own pods are never patched."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from rotor.settings.webhook import WebhookSettings
from tests.chart.chartlib import COMBINATIONS, NAMESPACE, containers, env_of, find, one, render
from webhook.inject import AGENT_CONTAINER, build_patch

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "api-",
        "namespace": "shop",
        "labels": {"app": "api"},
        "annotations": {"rotor.dev/rw": "db-password", "rotor.dev/ro": "web/session-key"},
    },
    "spec": {
        "serviceAccountName": "api",
        "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
    },
}


def webhook_settings(values: dict[str, Any]) -> WebhookSettings:
    deployments = find(render(values), "Deployment")
    (env,) = [env_of(c) for d in deployments for n, c in containers(d).items() if n == "webhook"]
    return WebhookSettings.from_env(env)


def injected(values: dict[str, Any], pod: dict[str, Any] = POD) -> dict[str, Any]:
    ops = build_patch(copy.deepcopy(pod), webhook_settings(values))
    assert ops, "the webhook injected nothing"
    return jsonpatch.apply_patch(pod, [dict(op) for op in ops])


def agent_container(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    (agent,) = [
        c
        for c in spec.get("initContainers", []) + spec["containers"]
        if c["name"] == AGENT_CONTAINER
    ]
    return agent


@pytest.mark.parametrize("combo", ["monitors", "everything"])
def test_pod_monitor_selects_injected_pods(combo: str) -> None:
    monitor = one(render(COMBINATIONS[combo]), "PodMonitor")
    pod = injected(COMBINATIONS[combo])
    labels = pod["metadata"]["labels"]
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert labels.get(key) == value, key
    ports = {p["name"] for p in agent_container(pod).get("ports", [])}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


@pytest.mark.parametrize(
    ("combo", "native"), [("defaults", True), ("classic-sidecars", False), ("everything", False)]
)
def test_sidecar_mode_from_the_chart(combo: str, native: bool) -> None:
    pod = injected(COMBINATIONS[combo])
    agent = agent_container(pod)
    in_init = agent in pod["spec"].get("initContainers", [])
    assert in_init is native
    if native:
        assert agent["restartPolicy"] == "Always"


def test_agent_image_and_resources_from_the_chart() -> None:
    values = {
        "agent": {
            "image": {
                "repository": "registry.local/rotor-agent",
                "tag": "7",
                "pullPolicy": "Always",
            },
            "resources": {
                "requests": {"cpu": "5m", "memory": "24Mi"},
                "limits": {"cpu": "200m", "memory": "48Mi"},
            },
        }
    }
    agent = agent_container(injected(values))
    assert agent["image"] == "registry.local/rotor-agent:7"
    assert agent["imagePullPolicy"] == "Always"
    assert agent["resources"] == values["agent"]["resources"]


@pytest.mark.parametrize("kube", ["1.29", "1.33"])
@pytest.mark.parametrize("combo", ["defaults", "classic-sidecars"])
def test_injected_pod_is_valid(combo: str, kube: str) -> None:
    kubernetes_validate.validate(injected(COMBINATIONS[combo]), kube, strict=True)


@pytest.mark.parametrize("combo", ["defaults", "combined"])
def test_the_charts_own_pods_are_never_patched(combo: str) -> None:
    """ROTOR_NAMESPACE and ROTOR_APP_LABEL match the labels the chart gives its pods."""
    settings = webhook_settings(COMBINATIONS[combo])
    for dep in find(render(COMBINATIONS[combo]), "Deployment"):
        template = copy.deepcopy(dep["spec"]["template"])
        template["metadata"]["namespace"] = NAMESPACE
        template["metadata"]["annotations"] = {"rotor.dev/ro": "shop/db-password"}
        pod = {"apiVersion": "v1", "kind": "Pod", **template}
        assert build_patch(pod, settings) == [], dep["metadata"]["name"]
    # the same pod elsewhere would be patched: the check above can fail
    stray = copy.deepcopy(POD)
    stray["metadata"]["labels"] = one(render({}), "Deployment", "rotor-webhook")["spec"][
        "template"
    ]["metadata"]["labels"]
    assert build_patch(stray, settings)
