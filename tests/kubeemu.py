"""The strict Kubernetes emulator for tests: the product's :mod:`kubeemu.emulator` (kmock's
KubernetesEmulator plus uid/resourceVersion/409, and with ``secure=True`` tokens, RBAC,
admission, GC; see its docstring), re-exported here with a pytest fixture so tests import it
from one place. ``kube_emulator`` is not secure: it serves tiers that test no permission;
tests/system uses the secure one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeemu.emulator import (
    STARTUP_TIMEOUT,
    EmulatorThread,
    StrictEmulator,
    iter_items,
    register_crds,
)
from kubeemu.emulator import crd_documents as _crd_documents

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "crds"

__all__ = [
    "CRD_DIR",
    "ROOT",
    "STARTUP_TIMEOUT",
    "EmulatorThread",
    "StrictEmulator",
    "crd_documents",
    "iter_items",
    "kube_emulator",
    "register_crds",
]


def crd_documents(directory: Path = CRD_DIR) -> list[dict[str, object]]:
    """The CRD manifests shipped in ``crds/`` (what a user applies)."""
    return _crd_documents(directory)


@pytest.fixture
def kube_emulator() -> Iterator[EmulatorThread]:
    """The strict emulator with Rotor's CRDs registered; import it into a conftest to use it."""
    with EmulatorThread(crd_documents()) as emu:
        yield emu
