"""The kind suite's manifests are valid here, where the suite itself cannot run: built-in kinds
with kubernetes-validate --strict, the RotatingSecret against its CRD's openAPIV3Schema."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.chartlib import ROOT
from tests.e2e.test_e2e import APP_NS, SECRET, WORKLOADS


def crd_schema(kind: str) -> dict:
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
            return version["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind} in crds/")


@pytest.mark.parametrize("kube", ["1.29", "1.33"])
def test_e2e_manifests_are_valid(kube: str) -> None:
    docs = [d for d in yaml.safe_load_all(WORKLOADS) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == 3
    for doc in docs:
        if doc["apiVersion"].startswith("rotor.dev/"):
            jsonschema.validate(doc, crd_schema(doc["kind"]))
        else:
            kubernetes_validate.validate(doc, kube, strict=True)


def test_e2e_workloads_ask_for_the_secret() -> None:
    """The writer and reader annotate their pod templates; the third does not."""
    from rotor.annotations import parse_pod

    deployments = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all(WORKLOADS) if d["kind"] == "Deployment"
    }
    requests = {
        name: parse_pod(dep["spec"]["template"]["metadata"].get("annotations"), APP_NS)
        for name, dep in deployments.items()
    }
    api, web = requests["api"], requests["web"]
    assert api is not None
    assert web is not None
    assert [str(r) for r in api.rw] == [f"{APP_NS}/{SECRET}"]
    assert [str(r) for r in web.ro] == [f"{APP_NS}/{SECRET}"]
    assert requests["plain"] is None
