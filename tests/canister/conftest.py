"""Fixtures for the ACL canister: the Motoko compiler from npm (canister/node_modules)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.acl.canister import CanisterAclBackend
from tests.canister.ic_server import IcServer, IcServerThread
from tests.canister.wasm_host import compiled_wasm, wasm_or_skip
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
def built(moc: Moc) -> Path:
    """canister/src compiled (acl.wasm, acl.did, acl.most in canister/build), once for all the
    tests that run it; rebuilt when the sources changed (wasm_host.compiled_wasm)."""
    return compiled_wasm(require_tool("node", "apt-get install nodejs npm")).parent


@pytest.fixture(scope="session")
def interpreter_run(moc: Moc) -> subprocess.CompletedProcess[str]:
    """canister/test/AclTest.mo run once in the Motoko interpreter."""
    return moc("run", "test/AclTest.mo")


# -- the local IC server and identities ------------------------------------------------------------
ADMIN_KEY = "8f8b5ad5c5e0e9b1a7a6f2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
CONTROLLER_KEY = "1f2e3d4c5b6a79880716253443526170f1e2d3c4b5a69788796a5b4c3d2e1f00"
STRANGER_KEY = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"


def identity(key: str, kind: str = "secp256k1") -> Any:
    from ic.identity import Identity

    return Identity(privkey=key, type=kind)


@pytest.fixture
def admin_identity() -> Any:
    return identity(ADMIN_KEY)


@pytest.fixture
def controller_identity() -> Any:
    """The Rotor controller's identity (an operator of the canister); Ed25519 like newer dfx."""
    return identity(CONTROLLER_KEY, "ed25519")


@pytest.fixture(scope="session")
def canister_wasm() -> Path:
    """canister/build/acl.wasm, rebuilt when canister/src changed."""
    return wasm_or_skip()


@pytest.fixture
def ic_server(
    admin_identity: Any, controller_identity: Any, canister_wasm: Path
) -> Iterator[IcServer]:
    """The local IC server running the compiled canister; the admin installed it and made the
    controller an operator."""
    with IcServerThread(IcServer(admin_identity.sender().bytes, wasm=canister_wasm)) as server:
        server.add_operator(controller_identity.sender().bytes)
        yield server


@pytest.fixture
def model_server(admin_identity: Any, controller_identity: Any) -> Iterator[IcServer]:
    """The local IC server with the Python model of State.mo instead of the wasm: for state the
    current canister cannot hold (names stored under an older rule, an older state replayed)."""
    with IcServerThread(IcServer(admin_identity.sender().bytes)) as server:
        server.add_operator(controller_identity.sender().bytes)
        yield server


def backend_for(server: IcServer, ident: Any, **options: Any) -> CanisterAclBackend:
    return CanisterAclBackend.connect(
        host=server.url,
        canister_id=server.canister_id,
        identity=ident,
        root_key=server.root.der.hex(),
        **options,
    )
