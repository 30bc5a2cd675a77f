"""Fixtures for the ACL canister: the Motoko compiler from npm (canister/node_modules)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tool

CANISTER = Path(__file__).resolve().parents[2] / "canister"
MOC_SCRIPT = CANISTER / "scripts" / "moc.mjs"

Moc = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def moc() -> Moc:
    """Run ``node canister/scripts/moc.mjs ARGS`` in the canister folder."""
    node = require_tool("node", "apt-get install nodejs npm")
    if not (CANISTER / "node_modules" / "motoko").is_dir():
        message = "the Motoko compiler is not installed (npm ci --prefix canister)"
        if IN_CI:
            pytest.fail(message + "; CI installs it through `make setup-dev`")
        pytest.skip(message)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [node, str(MOC_SCRIPT), *args],
            cwd=CANISTER,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def built(moc: Moc, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """canister/src compiled once per session: acl.wasm, acl.did, acl.most."""
    out = tmp_path_factory.mktemp("canister-build")
    result = moc("build", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def interpreter_run(moc: Moc) -> subprocess.CompletedProcess[str]:
    """canister/test/AclTest.mo run once in the Motoko interpreter."""
    return moc("run", "test/AclTest.mo")
