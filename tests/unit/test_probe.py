"""The pure decisions of the probe (rotorctl.probe: which stored object is a commit, which
values a reader held that were never committed when it held them) and of the soak
(rotorctl.soak: which fault comes when, which readers are behind)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rotor.layout import SecretState
from rotorctl.probe import Commit, committed_state, uncommitted
from rotorctl.soak import behind, fault_for


def secret(version: int, phase: str = "committed", **meta: Any) -> dict[str, Any]:
    state = SecretState(version=version, current={"password": b"v%d" % version})
    ann = state.annotations() | {"rotor.dev/phase": phase}
    return {
        "kind": "Secret",
        "data": state.secret_data(),
        "metadata": {"name": "db", "namespace": "shop", "annotations": ann} | meta,
    }


@pytest.mark.parametrize(
    ("obj", "version"),
    [
        (secret(3), 3),
        (secret(3, phase="pending"), None),
        (secret(3, name="other"), None),
        (secret(3, namespace="web"), None),
        ({**secret(3), "kind": "ConfigMap"}, None),
        ({"metadata": secret(3)["metadata"]}, None),  # no data
        (secret(0), None),  # no value yet
    ],
)
def test_committed_state(obj: dict[str, Any], version: int | None) -> None:
    state = committed_state(obj, "shop", "db")
    assert (state.version if state else None) == version


COMMITS = {1: Commit(1, math.nan, "a"), 2: Commit(2, 10.0, "b")}
BY_SUM = {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("held", "flagged"),
    [
        ({"r": [(5.0, "a")]}, []),  # the value there before the probe started
        ({"r": [(5.0, "a"), (10.5, "b")]}, []),  # held after its commit was stored
        ({"r": [(9.5, "b")]}, [("r", 9.5)]),  # held before its commit was stored
        ({"r": [(11.0, "x")]}, [("r", 11.0)]),  # never committed at all
        ({"r": [(11.0, "b")], "s": [(12.0, "x")]}, [("s", 12.0)]),
    ],
)
def test_uncommitted(
    held: dict[str, list[tuple[float, str]]], flagged: list[tuple[str, float]]
) -> None:
    assert uncommitted(held, BY_SUM, COMMITS) == flagged


KINDS = ("reader", "writer", "drop")


@pytest.mark.parametrize(
    ("n", "every", "kind"),
    [
        (1, 2, None),
        (2, 2, "reader"),
        (3, 2, None),
        (4, 2, "writer"),
        (6, 2, "drop"),
        (8, 2, "reader"),
        (5, 5, "reader"),
        (10, 5, "writer"),
        (4, 0, None),  # no faults
    ],
)
def test_fault_for(n: int, every: int, kind: str | None) -> None:
    assert fault_for(n, every, KINDS) == kind


def test_fault_for_one_kind_only() -> None:
    assert [fault_for(n, 1, ("drop",)) for n in (1, 2, 3)] == ["drop"] * 3
    assert fault_for(1, 1, ()) is None


@pytest.mark.parametrize(
    ("versions", "version", "late"),
    [
        ({"a": 5, "b": 5}, 5, []),
        ({"a": 6, "b": 5}, 5, []),  # a later version is not behind
        ({"a": 4, "b": 5}, 5, ["a"]),
        ({"a": None, "b": 5}, 5, ["a"]),  # nothing, or a value never committed
    ],
)
def test_behind(versions: dict[str, int | None], version: int, late: list[str]) -> None:
    assert behind(versions, version) == late
