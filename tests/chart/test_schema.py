"""values.schema.json refuses bad values with a message that names the key; helm lint --strict
passes for every documented combination."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from tests.chart.chartlib import CHART, COMBINATIONS, chart, render, with_images

BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    ({"webhook": {"failurePolicy": "Retry"}}, "/webhook/failurePolicy"),
    ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    ({"webhook": {"sidecarMode": "sidecar"}}, "/webhook/sidecarMode"),
    ({"webhook": {"matchConditions": True}}, "/webhook/matchConditions"),
    ({"webhook": {"excludeNamespaces": ["Kube_System"]}}, "/webhook/excludeNamespaces/0"),
    ({"controller": {"replicas": 0}}, "/controller/replicas"),
    ({"controller": {"leaderelection": True}}, "'leaderelection' not allowed"),
    ({"acl": {"backend": "vault"}}, "/acl/backend"),
    ({"acl": {"poll": "30"}}, "/acl/poll"),
    ({"acl": {"canister": {"id": "not-an-id"}}}, "/acl/canister/id"),
    ({"certs": {"provider": "letsencrypt"}}, "/certs/provider"),
    ({"certs": {"certManager": {"duration": "90d"}}}, "/certs/certManager/duration"),
    ({"certs": {"certManager": {"issuerRef": {"kind": "Issuer"}}}}, "/certs/certManager/issuerRef"),
    ({"agent": {"image": {"pullPolicy": "Sometimes"}}}, "/agent/image/pullPolicy"),
    ({"agent": {"resources": {"limits": {"gpu": 1}}}}, "'gpu' not allowed"),
    ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled"),
    ({"logLevel": "TRACE"}, "/logLevel"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as exc:
        render(values)
    assert where in str(exc.value)


@pytest.mark.parametrize("combo", COMBINATIONS)
def test_schema_accepts_every_documented_combination(combo: str) -> None:
    chart().validate_schema(chart().merge_values(COMBINATIONS[combo]))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"acl": {"backend": "canister"}}, "acl.canister.id is required"),
        ({"controller": {"replicas": 2, "leaderElection": False}}, "controller.leaderElection"),
        ({"auditReceiver": {"enabled": True}}, "auditReceiver.socket.allowedSources"),
        (
            {
                "auditReceiver": {
                    "enabled": True,
                    "socket": {"enabled": False},
                    "ingest": {"enabled": True},
                }
            },
            "auditReceiver.ingest.tokenSecret",
        ),
    ],
)
def test_template_checks_explain_the_fix(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as exc:
        render(values)
    assert message in str(exc.value)
    assert "set " in str(exc.value)


@pytest.mark.parametrize("kube", ["v1.27.0", "v1.29.0", "v1.30.0", "v1.33.0"])
@pytest.mark.parametrize("combo", ["defaults", "everything"])
def test_helm_lint_strict(combo: str, kube: str) -> None:
    report = helm.lint(CHART, COMBINATIONS[combo], strict=True, kube_version=kube)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [], report
    assert problems == [], report


@pytest.mark.parametrize(
    ("kube", "mode", "on"),
    [
        ("v1.29.0", "auto", False),
        ("v1.30.0", "auto", True),
        ("v1.33.0", "auto", True),
        ("v1.29.0", "always", True),
        ("v1.33.0", "never", False),
    ],
)
def test_match_conditions_follow_the_kube_version(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], kube: str, mode: str, on: bool
) -> None:
    """``webhook.matchConditions=auto`` follows .Capabilities.KubeVersion. Rendering offline has
    no way to set the version, but lint does: a copy of the chart gets a probe template that
    calls ``fail`` when the helper says yes; lint logs the message (to stderr) instead of
    failing."""
    copy = tmp_path / "rotor"
    shutil.copytree(CHART, copy)
    probe = '{{- if include "rotor.useMatchConditions" . }}{{ fail "PROBE-MATCH-ON" }}{{ end }}\n'
    (copy / "templates" / "zz-probe.yaml").write_text(probe)
    helm.lint(copy, with_images({"webhook": {"matchConditions": mode}}), kube_version=kube)
    assert ("PROBE-MATCH-ON" in capfd.readouterr().err) is on
