"""Both ACL backends pass the conformance suite (tests/acl/conformance.py): the ConfigMap on the
strict Kubernetes emulator, the compiled canister on wasmtime behind the local IC server
(tests/canister/ic_server.py, wasm_host.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from controller.acl.configmap import ConfigMapAclBackend
from tests.acl.conformance import CHECKS, AclHarness
from tests.canister.conftest import ADMIN_KEY, CONTROLLER_KEY, backend_for, identity
from tests.canister.ic_server import IcServer, IcServerThread
from tests.canister.wasm_host import wasm_or_skip
from tests.kubeemu import EmulatorThread


@pytest.fixture(params=["configmap", "canister"])
def harness(request: pytest.FixtureRequest) -> Iterator[AclHarness]:
    if request.param == "configmap":
        with EmulatorThread() as emu, emu.api_client() as api:
            backend = ConfigMapAclBackend(client.CoreV1Api(api), "rotor-system", "rotor-acl")
            yield AclHarness(operator=backend, admin=backend)
        return
    admin, controller = identity(ADMIN_KEY), identity(CONTROLLER_KEY, "ed25519")
    wasm = wasm_or_skip()  # the compiled canister, on wasmtime
    with IcServerThread(IcServer(admin.sender().bytes, delegated=True, wasm=wasm)) as server:
        server.add_operator(controller.sender().bytes)
        yield AclHarness(operator=backend_for(server, controller), admin=backend_for(server, admin))


@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_conformance(harness: AclHarness, name: str) -> None:
    await CHECKS[name](harness)
