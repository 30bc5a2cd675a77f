"""The controller running (kopf and its loops) against the strict Kubernetes emulator and a real
OpenBao: the ExternalStore Ready condition, and the fan-out held until the store holds the
committed version."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp.web
import hvac
import pytest
from prometheus_client import CollectorRegistry

from agent.files import AtomicWriter
from agent.vault import TokenLogin, VaultStore
from audit.app import make_events_app
from audit.receiver import Receiver
from controller import vaultsource
from controller.kube import path
from rotor import API
from rotor.auditwire import render_config
from rotor.external import RotorMetadata
from rotor.layout import ANN_VERSION, view_name
from rotor.names import Principal, SecretRef
from rotor.settings.audit import AuditSettings
from rotor.settings.controller import ControllerSettings
from tests.conftest import free_port
from tests.controller.conftest import Harness, eventually, running_controller
from tests.controller.test_controller import _pending as pending
from tests.controller.test_controller import commit_value, create, pod_body
from tests.kubeemu import kube_emulator
from tests.vault.conftest import start_bao

pytestmark = pytest.mark.slow  # the controller process against OpenBao

__all__ = ["kube_emulator"]

SETTINGS = ControllerSettings(acl_poll=0.3, store_check_interval=1.0, manage_certs=False)
API_SA = Principal("shop", "api")
WEB = Principal("web", "web")


@pytest.fixture
async def rotor(kube_emulator):
    async for h in running_controller(kube_emulator, SETTINGS):
        yield h


async def token_secret(h: Harness, name: str, token: str) -> None:
    await create(
        h,
        "v1",
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "shop"},
            "data": {"token": base64.b64encode(token.encode()).decode()},
        },
    )


async def external_store(h: Harness, name: str, server: str, token_secret_name: str) -> None:
    await create(
        h,
        API,
        "externalstores",
        {
            "apiVersion": API,
            "kind": "ExternalStore",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "vault": {
                    "server": server,
                    "mount": "secret",
                    "auth": {"token": {"secretRef": {"name": token_secret_name}}},
                }
            },
        },
    )


async def store_ready(h: Harness, name: str) -> dict[str, Any]:
    obj = await h.get(API, "externalstores", "shop", name) or {}
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), {})


async def events_for(h: Harness, name: str) -> list[dict[str, Any]]:
    items = await h.kube.aitems(path("v1", "events", "shop"))
    return [e for e in items if e["involvedObject"]["name"] == name]


async def test_external_store_ready_with_a_good_token_auth_failed_with_a_bad_one(rotor, bao):
    await token_secret(rotor, "good-token", bao.token)
    await token_secret(rotor, "bad-token", "s.not-a-token")
    await external_store(rotor, "vault", bao.url, "good-token")
    await external_store(rotor, "wrong", bao.url, "bad-token")
    ready = await eventually(lambda: store_ready(rotor, "vault"), what="vault Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Ready")
    bad = await eventually(lambda: store_ready(rotor, "wrong"), what="wrong Ready")
    assert (bad["status"], bad["reason"]) == ("False", "AuthFailed")
    assert "s.not-a-token" not in bad["message"]
    (event,) = await eventually(lambda: events_for(rotor, "wrong"), what="an Event")
    assert (event["reason"], event["type"]) == ("AuthFailed", "Warning")
    assert event["involvedObject"]["kind"] == "ExternalStore"
    gauge = "rotor_controller_external_store_ready"
    registry = rotor.metrics.registry
    assert registry.get_sample_value(gauge, {"namespace": "shop", "name": "vault"}) == 1
    assert registry.get_sample_value(gauge, {"namespace": "shop", "name": "wrong"}) == 0

    # the token is fixed in its Secret: the periodic re-check sees it
    await rotor.kube.apatch(
        path("v1", "secrets", "shop", "bad-token"),
        {"data": {"token": base64.b64encode(bao.token.encode()).decode()}},
    )

    async def recovered() -> bool:
        return (await store_ready(rotor, "wrong")).get("status") == "True"

    await eventually(recovered, what="Ready after the token was fixed")


async def test_fanout_held_until_the_store_holds_the_version(rotor, bao):
    kv_path = f"shop/{uuid.uuid4().hex[:8]}"
    db = SecretRef("shop", "db")
    await token_secret(rotor, "good-token", bao.token)
    await external_store(rotor, "vault", bao.url, "good-token")
    spec = {
        "keys": [{"name": "password", "generator": {"type": "password"}}],
        "externalStores": [{"storeRef": {"name": "vault"}, "path": kv_path}],
    }
    await rotor.rsec("shop", "db", spec)
    await create(rotor, "v1", "pods", pod_body("shop", "api-0", "api", {"rotor.dev/rw": "db"}))
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: pending(rotor, db, API_SA, "rw"), what="the RW request")
    await rotor.backend.approve(db, API_SA, "rw")
    await eventually(lambda: pending(rotor, db, WEB, "ro"), what="the RO request")
    await rotor.backend.approve(db, WEB, "ro")
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"), what="the source")

    state = await commit_value(rotor, db, b"value-in-kubernetes-only")

    async def synced(reason: str) -> dict[str, Any] | None:
        c = await rotor.condition("shop", "db", "ExternalStoreSynced")
        return c if c.get("reason") == reason else None

    held = await eventually(lambda: synced("StoreNotSynced"), what="held")
    assert held["status"] == "False"
    assert kv_path in held["message"]
    assert await rotor.get("v1", "secrets", "web", view_name("shop", "db")) is None

    # the writer's step 3: the store gets the committed values (as the agent writes them)
    agent = VaultStore(bao.url, "secret", TokenLogin(bao.token))
    meta = RotorMetadata(state.version, state.checksum, "shop/api-0", 0.0, "shop/db")
    await agent.write_pending(kv_path, {"password": b"value-in-kubernetes-only"}, None, meta)
    view = await eventually(
        lambda: rotor.get("v1", "secrets", "web", view_name("shop", "db")),
        what="released once the store holds the version (retried with backoff)",
    )
    assert base64.b64decode(view["data"]["password"]) == b"value-in-kubernetes-only"
    assert (await eventually(lambda: synced("InSync")))["status"] == "True"


# -- Vault as a source: a person's write -> audit receiver -> controller -> RO view --------------
AUDIT_HCL = """
audit "socket" "rotor" {{
  options {{
    address     = "127.0.0.1:{port}"
    socket_type = "tcp"
  }}
}}
"""


class AuditRig:
    """A receiver (socket listener and events API, its config file written as the kubelet
    projects the ConfigMap) that can be restarted on the same ports."""

    def __init__(self, tmp_path: Path) -> None:
        self.sock, self.events = free_port(), free_port()
        self.config = tmp_path / "config.json"
        self.config.write_text(render_config([]))
        self.settings = AuditSettings(
            host="127.0.0.1",
            socket_port=self.sock,
            events_port=self.events,
            config_file=str(self.config),
            config_poll=0.1,
        )
        self.receiver: Receiver | None = None
        self.runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> Receiver:
        self.receiver = Receiver.create(self.settings, CollectorRegistry())
        # the controller's long-poll may still be open at the end: do not wait it out
        self.runner = aiohttp.web.AppRunner(
            make_events_app(self.receiver, serve_socket=True), shutdown_timeout=0.5
        )
        await self.runner.setup()
        await aiohttp.web.TCPSite(self.runner, "127.0.0.1", self.events).start()
        return self.receiver

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def audit_setup(tmp_path, kube_emulator, monkeypatch):
    """The rig, OpenBao sending its socket audit device there, and the controller consuming the
    receiver (long-polls of 1 s, so that a restart of the in-process receiver, whose open
    long-poll is not cut as a dying process's would be, is seen by its new epoch at once)."""
    monkeypatch.setattr(vaultsource, "POLL_WAIT", 1.0)
    rig = AuditRig(tmp_path)
    await rig.start()
    bao = await asyncio.to_thread(start_bao, tmp_path, AUDIT_HCL.format(port=rig.sock))
    ctl_settings = replace(SETTINGS, audit_receiver_url=f"http://127.0.0.1:{rig.events}")
    try:
        async for h in running_controller(kube_emulator, ctl_settings):
            yield h, bao, rig
    finally:
        await asyncio.to_thread(bao.stop)
        await rig.stop()


async def secret_in_vault(rotor: Harness, bao: Any, kv_path: str) -> Any:
    """shop/db with an OpenBao store, a granted writer and RO consumer, version 1 committed and
    in the store (as the writer's agent leaves it)."""
    db = SecretRef("shop", "db")
    await token_secret(rotor, "good-token", bao.token)
    await external_store(rotor, "vault", bao.url, "good-token")
    spec = {
        "keys": [{"name": "password", "generator": {"type": "password"}}],
        "externalStores": [{"storeRef": {"name": "vault"}, "path": kv_path}],
    }
    await rotor.rsec("shop", "db", spec)
    await create(rotor, "v1", "pods", pod_body("shop", "api-0", "api", {"rotor.dev/rw": "db"}))
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: pending(rotor, db, API_SA, "rw"), what="the RW request")
    await rotor.backend.approve(db, API_SA, "rw")
    await eventually(lambda: pending(rotor, db, WEB, "ro"), what="the RO request")
    await rotor.backend.approve(db, WEB, "ro")
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"), what="the source")
    state = await commit_value(rotor, db, b"rotor-generated")
    agent = VaultStore(bao.url, "secret", TokenLogin(bao.token))
    meta = RotorMetadata(state.version, state.checksum, "shop/api-0", 0.0, "shop/db")
    await agent.write_pending(kv_path, {"password": b"rotor-generated"}, None, meta)
    return state


async def view_value(rotor: Harness) -> bytes | None:
    view = await rotor.get("v1", "secrets", "web", view_name("shop", "db"))
    return base64.b64decode(view["data"]["password"]) if view else None


async def test_a_receiver_restart_rechecks_every_path(audit_setup):
    rotor, bao, rig = audit_setup
    kv_path = "shop/db-restart"
    await secret_in_vault(rotor, bao, kv_path)
    assert await eventually(lambda: view_value(rotor)) == b"rotor-generated"
    # the receiver does not watch the path yet (its config is empty), so this write is no event
    kv = hvac.Client(url=bao.url, token=bao.token).secrets.kv.v2
    await asyncio.to_thread(kv.create_or_update_secret, kv_path, {"password": "missed"})
    receiver = rig.receiver
    assert receiver is not None
    unreferenced = receiver.metrics.entries.labels("unreferenced")
    await eventually(lambda: unreferenced._value.get() >= 1, what="the write seen and ignored")
    assert await view_value(rotor) == b"rotor-generated"
    # the receiver restarts (a new epoch): the controller re-reads every referenced path
    await rig.stop()
    await rig.start()

    async def propagated() -> bool:
        return await view_value(rotor) == b"missed"

    await eventually(propagated, what="the missed write propagated after the restart")


async def test_a_persons_write_in_vault_reaches_the_ro_agents_files(audit_setup, tmp_path):
    rotor, bao, rig = audit_setup
    receiver, config_file = rig.receiver, rig.config
    kv_path = "shop/db-audit"
    db = SecretRef("shop", "db")
    await token_secret(rotor, "good-token", bao.token)
    await external_store(rotor, "vault", bao.url, "good-token")
    spec = {
        "keys": [{"name": "password", "generator": {"type": "password"}}],
        "externalStores": [{"storeRef": {"name": "vault"}, "path": kv_path}],
    }
    await rotor.rsec("shop", "db", spec)
    await create(rotor, "v1", "pods", pod_body("shop", "api-0", "api", {"rotor.dev/rw": "db"}))
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", {"rotor.dev/ro": "shop/db"}))
    await eventually(lambda: pending(rotor, db, API_SA, "rw"), what="the RW request")
    await rotor.backend.approve(db, API_SA, "rw")
    await eventually(lambda: pending(rotor, db, WEB, "ro"), what="the RO request")
    await rotor.backend.approve(db, WEB, "ro")
    await eventually(lambda: rotor.get("v1", "secrets", "shop", "db"), what="the source")

    # the writer commits version 1 and its agent wrote the store first (step 3)
    state = await commit_value(rotor, db, b"rotor-generated")
    agent = VaultStore(bao.url, "secret", TokenLogin(bao.token))
    meta = RotorMetadata(state.version, state.checksum, "shop/api-0", 0.0, "shop/db")
    await agent.write_pending(kv_path, {"password": b"rotor-generated"}, None, meta)
    view_of = view_name("shop", "db")

    async def view_value() -> bytes | None:
        view = await rotor.get("v1", "secrets", "web", view_of)
        return base64.b64decode(view["data"]["password"]) if view else None

    assert await eventually(view_value, what="version 1 published") == b"rotor-generated"

    # an RO consumer's agent (the `rotor-agent` command, in-cluster mode, as the webhook
    # configures it) writes the view's values to its files
    agent_proc = await start_ro_agent(rotor, tmp_path)
    mount = tmp_path / "ro-mount"

    def ro_files() -> dict[str, bytes]:
        assert agent_proc.returncode is None, "the RO agent exited"
        try:
            return AtomicWriter(mount / "db").read()
        except OSError:
            return {}

    async def ro_file_is(value: bytes) -> bool:
        return ro_files().get("password") == value

    try:
        await eventually(lambda: ro_file_is(b"rotor-generated"), what="the RO agent's file")

        # the controller tells the receiver what to watch (the kubelet projects the ConfigMap)
        async def configmap() -> str | None:
            cm = await rotor.get("v1", "configmaps", "rotor-system", "rotor-audit-receiver")
            text = ((cm or {}).get("data") or {}).get("config.json", "")
            return text if f"secret/{kv_path}" in text else None

        config_file.write_text(await eventually(configmap, what="the receiver's ConfigMap"))
        await eventually(lambda: f"secret/{kv_path}" in receiver.config.paths, what="reloaded")

        # a person changes the value in OpenBao
        kv = hvac.Client(url=bao.url, token=bao.token).secrets.kv.v2
        await asyncio.to_thread(
            kv.create_or_update_secret, kv_path, {"password": "typed-by-a-person"}
        )

        async def person_value() -> bool:
            return await view_value() == b"typed-by-a-person"

        await eventually(person_value, what="the person's value in the RO view")
        source = await rotor.get("v1", "secrets", "shop", "db")
        assert source["metadata"]["annotations"][ANN_VERSION] == str(state.version + 1)
        data = {k: base64.b64decode(v) for k, v in source["data"].items()}
        assert data["password"] == b"typed-by-a-person"
        assert data["password.previous"] == b"rotor-generated"  # kept for the overlap
        reasons = [e["reason"] for e in await events_for(rotor, "db")]
        assert "Propagated" in reasons
        propagated = rotor.metrics.registry.get_sample_value(
            "rotor_controller_propagations_total", {"reason": "Propagate"}
        )
        assert propagated == 1
        # ... and the consumer's files change: an audit event -> propagation -> RO files
        await eventually(lambda: ro_file_is(b"typed-by-a-person"), what="the RO file changed")
        assert ro_files().get("password.previous") == b"rotor-generated"
    finally:
        if agent_proc.returncode is None:
            agent_proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(agent_proc.wait(), 20)
            except TimeoutError:
                agent_proc.kill()
                await agent_proc.wait()


async def start_ro_agent(h: Harness, tmp_path: Path) -> asyncio.subprocess.Process:
    exe = shutil.which("rotor-agent")
    assert exe, "the package is installed with its console scripts (pip install -e .)"
    token = tmp_path / "sa-token"
    token.write_text("sa-token\n")
    env = {
        "PATH": os.environ["PATH"],
        "ROTOR_MODE": "ro",
        "ROTOR_SECRETS": "shop/db",
        "ROTOR_POD_NAME": "web-0",
        "ROTOR_POD_NAMESPACE": "web",
        "ROTOR_SERVICE_ACCOUNT": "web",
        "ROTOR_MOUNT_PATH": str(tmp_path / "ro-mount"),
        "ROTOR_METRICS_PORT": str(free_port()),
        "ROTOR_KUBE_URL": h.emu.url,
        "ROTOR_KUBE_TOKEN_FILE": str(token),
    }
    return await asyncio.create_subprocess_exec(
        exe, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
