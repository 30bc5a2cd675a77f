"""Fixtures for the agent's in-cluster tests: a kmock Kubernetes emulator in the test's loop."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import kmock
import pytest

from tests.conftest import until as until  # the tests of this tier import it from here
from tests.kubeemu import EmulatorThread


@dataclass
class Emulator:
    k8s: Any  # kmock.KubernetesEmulator
    url: str

    def requests(self) -> list[Any]:
        return list(self.k8s)


@pytest.fixture
async def kmock_api() -> AsyncIterator[Emulator]:
    """The plain kmock emulator (no resourceVersion, no 409): enough for reads and watches."""
    async with kmock.KubernetesEmulator() as k8s, kmock.Server(k8s, host="127.0.0.1") as srv:
        with warnings.catch_warnings():  # kmock 0.8 uses importlib.resources.read_binary
            warnings.simplefilter("ignore", DeprecationWarning)
            k8s.resources.load_bundled()
        k8s.resources["rotor.dev/v1alpha1/rotatingsecrets"] = kmock.ResourceInfo(
            kind="RotatingSecret",
            namespaced=True,
            verbs={"get", "list", "watch", "create", "patch", "delete"},
            subresources={"status"},
        )
        yield Emulator(k8s, str(srv.url).rstrip("/"))


ROTATING_SECRET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rotatingsecrets.rotor.dev"},
    "spec": {
        "group": "rotor.dev",
        "scope": "Namespaced",
        "names": {
            "kind": "RotatingSecret",
            "plural": "rotatingsecrets",
            "singular": "rotatingsecret",
            "shortNames": ["rsec"],
        },
        "versions": [{"name": "v1alpha1", "served": True, "subresources": {"status": {}}}],
    },
}
"""Only what the emulator needs to serve the resource (the chart's CRD has the schema)."""

EXTERNAL_STORE_CRD: dict[str, Any] = {
    "spec": {
        "group": "rotor.dev",
        "scope": "Namespaced",
        "names": {"kind": "ExternalStore", "plural": "externalstores"},
        "versions": [{"name": "v1alpha1", "served": True}],
    },
}


@pytest.fixture
def strict_api() -> Iterator[EmulatorThread]:
    """tests/kubeemu.py's strict emulator (resourceVersion, 409 on a stale one) in a thread."""
    with EmulatorThread(crds=[ROTATING_SECRET_CRD, EXTERNAL_STORE_CRD]) as emu:
        yield emu
