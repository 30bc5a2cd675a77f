"""Real-world pod shapes (tests/webhook/fixtures/, modelled on rendered Helm charts) all patch
cleanly and validate, in every delivery and sidecar mode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from rotor.settings.webhook import WebhookSettings
from tests.webhook.kube import apply, containers, mutate_ok, validate
from webhook.inject import AGENT_CONTAINER, FILES_VOLUME, SA_TOKEN_DIR, TOKEN_VOLUME

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.yaml"))
VARIANTS = {
    "rw": {"rotor.dev/rw": "db-password"},
    "ro": {"rotor.dev/ro": "db-password,shared/api-key"},
    "rw+ro-signal": {
        "rotor.dev/rw": "db-password",
        "rotor.dev/ro": "shared/api-key",
        "rotor.dev/reload": "signal:HUP",
        "rotor.dev/wait": "false",
    },
    "ro-volume": {"rotor.dev/ro": "db-password", "rotor.dev/delivery": "volume"},
    "ro-env": {"rotor.dev/ro": "db-password", "rotor.dev/delivery": "env"},
}
MODES = {"native": WebhookSettings(), "classic": WebhookSettings(sidecar_mode="classic")}


def load(path: Path, annotations: dict[str, str]) -> dict:
    pod = yaml.safe_load(path.read_text())
    pod["metadata"].setdefault("annotations", {}).update(annotations)
    return pod


def test_fixtures_are_valid_pods_before_injection():
    assert len(FIXTURES) >= 5
    for path in FIXTURES:
        validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_patches_cleanly_and_validates(path, variant, mode):
    settings = MODES[mode]
    original = load(path, VARIANTS[variant])
    namespace = original["metadata"]["namespace"]
    out = apply(original, mutate_ok(original, settings, namespace))
    validate(out)
    # nothing of the original pod is lost: every container keeps its mounts, in order, first
    for key in ("initContainers", "containers"):
        before = containers(original, key)
        after = containers(out, key)
        for name, c in before.items():
            old = c.get("volumeMounts") or []
            assert (after[name].get("volumeMounts") or [])[: len(old)] == old
            assert after[name].get("env") == c.get("env")
    injected = AGENT_CONTAINER in (containers(out, "initContainers") | containers(out))
    assert injected == (variant not in ("ro-volume", "ro-env"))
    if injected:
        assert FILES_VOLUME in {v["name"] for v in out["spec"]["volumes"]}
    assert out["metadata"]["labels"]["rotor.dev/injected"] == "true"


def test_native_agent_comes_after_an_existing_native_sidecar():
    path = next(p for p in FIXTURES if p.stem == "istio-native-sidecar-app")
    original = load(path, VARIANTS["rw"])
    out = apply(original, mutate_ok(original, MODES["native"], "bookinfo"))
    names = [c["name"] for c in out["spec"]["initContainers"]]
    assert names == ["istio-init", "istio-proxy", AGENT_CONTAINER]


def test_agent_without_limits_still_validates():
    settings = replace(MODES["native"], agent_cpu_limit="", agent_memory_limit="")
    original = load(FIXTURES[0], VARIANTS["rw"])
    out = apply(original, mutate_ok(original, settings, original["metadata"]["namespace"]))
    validate(out)
    agent = containers(out, "initContainers")[AGENT_CONTAINER]
    assert "limits" not in agent["resources"]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_agent_reuses_the_automounted_token_or_gets_its_own(path):
    original = load(path, VARIANTS["rw"])
    out = apply(original, mutate_ok(original, MODES["native"], original["metadata"]["namespace"]))
    agent = containers(out, "initContainers")[AGENT_CONTAINER]
    token = [m for m in agent["volumeMounts"] if m["mountPath"] == SA_TOKEN_DIR]
    automounted = "kube-api-access" in path.read_text()
    assert len(token) == 1
    assert token[0]["name"].startswith("kube-api-access") is automounted
    assert (TOKEN_VOLUME in {v["name"] for v in out["spec"]["volumes"]}) is not automounted
