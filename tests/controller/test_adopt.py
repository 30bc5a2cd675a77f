"""controller.adopt: whether an existing Secret becomes the source, and the patch (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from controller import adopt
from controller.model import read_rotating_secret
from rotor import API
from rotor.layout import LABEL_MANAGED_BY, LABEL_SECRET, MANAGED_BY

RSEC = read_rotating_secret(
    {
        "apiVersion": API,
        "kind": "RotatingSecret",
        "metadata": {"name": "db", "namespace": "shop", "uid": "rs-1"},
        "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
    }
)
MINE = adopt.owner_reference(RSEC)
LABELS = {LABEL_SECRET: "db", LABEL_MANAGED_BY: MANAGED_BY}
CM = {"apiVersion": "v1", "kind": "ConfigMap", "name": "bundle", "uid": "cm-1"}
CTRL = {
    "apiVersion": "x/v1",
    "kind": "SealedSecret",
    "name": "db",
    "uid": "ss-1",
    "controller": True,
}
OLD_RSEC = {**MINE, "uid": "rs-0"}  # a RotatingSecret of that name deleted before


def secret(owners: list[Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta = {"name": "db", "namespace": "shop", "resourceVersion": "7", "ownerReferences": owners}
    if labels is not None:
        meta["labels"] = labels
    return {"metadata": meta}


CASES = [
    # (what, existing Secret, patch metadata or None, problem names)
    ("no owner, no labels", secret([]), {"ownerReferences": [MINE], "labels": LABELS}, ""),
    ("another owner is kept", secret([CM]), {"ownerReferences": [CM, MINE], "labels": LABELS}, ""),
    ("already ours", secret([MINE], LABELS), None, ""),
    ("ours, labels lost", secret([MINE], {"app": "x"}), {"labels": LABELS}, ""),
    (
        "ours, not as controller",
        secret([{**MINE, "controller": False}], LABELS),
        {"ownerReferences": [MINE]},
        "",
    ),
    ("controlled by another", secret([CTRL]), None, "SealedSecret db (uid ss-1)"),
    ("controlled by an older RotatingSecret", secret([OLD_RSEC], LABELS), None, "uid rs-0"),
]


@pytest.mark.parametrize(("what", "obj", "patch", "problem"), CASES, ids=[c[0] for c in CASES])
def test_adoption(what: str, obj: Any, patch: Any, problem: str) -> None:
    got = adopt.adoption(obj, RSEC)
    if problem:
        assert got.patch is None
        assert problem in got.problem
        assert "delete it" in got.problem
        return
    assert got.problem == ""
    if patch is None:
        assert got.patch is None
    else:
        assert got.patch == {"metadata": {**patch, "resourceVersion": "7"}}


def test_a_new_source_is_owned_labelled_and_empty() -> None:
    body = adopt.source_body(RSEC)
    assert body["metadata"]["ownerReferences"] == [MINE]
    assert body["metadata"]["labels"] == LABELS
    assert "data" not in body
