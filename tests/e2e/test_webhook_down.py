"""A pod created while the webhook was down (``webhook.failurePolicy=Ignore``, set with
``helm upgrade --reuse-values`` as docs/install.md's "Common choices" say) comes up without an
agent; once the webhook is back the controller finds it and restarts it through its owner, and
the new pod is injected. Last of the suite: it changes the release."""

from __future__ import annotations

import json

import pytest

from tests.e2e.clusters import NAMESPACE, Cluster
from tests.e2e.test_e2e import APP_NS, SECRET, first_pod, poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def late(app_image: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: late, namespace: {APP_NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: late}}}}
  template:
    metadata:
      labels: {{app: late}}
      annotations: {{rotor.dev/ro: {SECRET}, rotor.dev/wait: "false"}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: app
          image: {app_image}
          imagePullPolicy: IfNotPresent
          command: [sleep, "36000"]
"""


def test_pod_admitted_while_the_webhook_was_down_is_restarted_injected(release: Cluster) -> None:
    c = release
    c.run("helm", "upgrade", "rotor", "charts/rotor", "--namespace", NAMESPACE, "--reuse-values",
          "--set", "webhook.failurePolicy=Ignore,controller.uninjectedSweep=5s")  # fmt: skip
    c.kubectl("-n", NAMESPACE, "rollout", "status", "deploy/rotor-controller", "--timeout=300s")
    c.kubectl("create", "namespace", APP_NS, check=False)
    c.kubectl("-n", NAMESPACE, "scale", "deploy/rotor-webhook", "--replicas=0")

    def no_webhook() -> bool | None:
        pods = json.loads(c.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json"))["items"]
        return not any(p["metadata"]["name"].startswith("rotor-webhook") for p in pods) or None

    poll("the webhook's pods gone", no_webhook, c, 120)
    c.kubectl("apply", "-f", "-", stdin=late(c.app_image))
    first = poll("a pod of late", lambda: first_pod(c, "late"), c, 120)
    assert "rotor.dev/injected" not in first["metadata"].get("labels", {}), "webhook was up"
    c.kubectl("-n", NAMESPACE, "scale", "deploy/rotor-webhook", "--replicas=1")
    c.kubectl("-n", NAMESPACE, "rollout", "status", "deploy/rotor-webhook", "--timeout=300s")

    def injected() -> dict | None:
        pod = first_pod(c, "late")
        labels = (pod or {}).get("metadata", {}).get("labels", {})
        return pod if labels.get("rotor.dev/injected") == "true" else None

    pod = poll("the controller's restart through the Deployment", injected, c, 240)
    assert pod["metadata"]["name"] != first["metadata"]["name"]
    names = [x["name"] for x in pod["spec"]["initContainers"]]
    assert "rotor-agent" in names, names
