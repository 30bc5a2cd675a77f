"""Fixtures for the agent's in-cluster tests: a kmock Kubernetes emulator in the test's loop."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import kmock
import pytest


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
