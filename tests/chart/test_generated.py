"""The chart's generated files match their one source (python -m tools.generate)."""

from __future__ import annotations

import json

import yaml

from tests.chart.chartlib import CHART, ROOT, crds, with_images
from tools import generate

FIX = "run: python -m tools.generate"


def test_chart_crds_are_copies_of_crds_dir() -> None:
    sources = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sources, "crds/ holds no CRD (python -m rotor.crd --write crds)"
    shipped = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert shipped == sources, FIX
    for name in sources:
        assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), (
            f"charts/rotor/crds/{name} differs from crds/{name}; {FIX}"
        )
    assert {c["metadata"]["name"] for c in crds()} == {
        yaml.safe_load((ROOT / "crds" / n).read_text())["metadata"]["name"] for n in sources
    }


def test_values_doc_is_current() -> None:
    assert generate.VALUES_DOC.read_text() == generate.values_doc(), FIX


def test_stale_files_are_reported(tmp_path, monkeypatch) -> None:
    """The drift check can fail: a changed source makes its copy stale."""
    fake = tmp_path / "crds"
    fake.mkdir()
    for p in (ROOT / "crds").glob("*.yaml"):
        (fake / p.name).write_text(p.read_text() + "# changed\n")
    monkeypatch.setattr(generate, "SOURCE_CRDS", fake)
    stale = generate.stale_files()
    assert stale
    assert all(s.startswith("charts/rotor/crds/") for s in stale)


def test_every_value_is_described_and_documented() -> None:
    """Each key of values.yaml is in the schema with a description, and so in docs/values.md."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    doc = generate.VALUES_DOC.read_text()

    def walk(node: dict, vals: dict, path: str) -> None:
        for key, val in vals.items():
            sub = f"{path}.{key}" if path else key
            child = generate._resolve(node["properties"][key], schema)
            assert child.get("description") or path, f"{sub} has no description"
            if child.get("description"):
                assert f"`{sub}`" in doc, sub
            if generate._described(child, schema) and isinstance(val, dict):
                walk(child, val, sub)

    walk(schema, values, "")


def test_packaged_chart_ships_crds_and_renders(tmp_path) -> None:
    """`helm package` output: the CRDs and schema go along, nothing else of the repository."""
    import tarfile

    import helm_python as helm

    archive = helm.package(CHART, destination=tmp_path)
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert "rotor/values.schema.json" in names
    assert {n for n in names if n.startswith("rotor/crds/")} == {
        f"rotor/crds/{p.name}" for p in (CHART / "crds").glob("*.yaml")
    }
    assert all(n.startswith("rotor/") and "__pycache__" not in n for n in names)
    with helm.Chart.load(archive) as packaged:
        assert packaged.render(with_images({}), name="rotor", namespace="rotor-system")
