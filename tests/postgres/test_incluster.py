"""The in-cluster writer with a PostgreSQL target: the agent (agent/incluster.py) against the
strict Kubernetes emulator (tests/kubeemu.py) and a real PostgreSQL 15. It reads the admin
credential from the Secret ``admin.secretRef``, commits a pair that logs in to the source
Secret, and records an abort (no admin Secret) on the source Secret with nothing committed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.files import AtomicWriter
from agent.incluster import InClusterAgent
from agent.kube import KubeClient, KubeConfig, rotating_secrets_path, secret_path, secrets_path
from rotor.env import AgentEnv
from rotor.layout import LABEL_SECRET, SecretState
from rotor.settings.agent import AgentSettings
from tests.agent_k8s.conftest import EXTERNAL_STORE_CRD, ROTATING_SECRET_CRD, until
from tests.kubeemu import EmulatorThread
from tests.postgres.pgserver import ADMIN, ADMIN_PASSWORD, PgServer
from tests.postgres.test_target import login

NS, NAME, POD = "shop", "db", "pg-0"
SETTINGS = AgentSettings(backoff_base=0.05, backoff_max=0.5)


@pytest.fixture
def emu() -> Iterator[EmulatorThread]:
    with EmulatorThread(crds=[ROTATING_SECRET_CRD, EXTERNAL_STORE_CRD]) as e:
        yield e


async def seed(kube: KubeClient, pg: PgServer, role: str) -> None:
    spec = {
        "keys": [{"name": "password", "generator": {"type": "password", "length": 24}}],
        "rotation": {"interval": "1h", "overlap": "10m"},
        "target": {
            "postgres": {
                "host": "127.0.0.1",
                "port": pg.port,
                "role": role,
                "admin": {"user": "ignored", "secretRef": {"name": "pg-admin"}},
            }
        },
    }
    await kube.create(
        rotating_secrets_path(NS),
        {"apiVersion": "rotor.dev/v1alpha1", "kind": "RotatingSecret",
         "metadata": {"name": NAME, "namespace": NS}, "spec": spec},
    )  # fmt: skip
    await kube.patch(
        f"{rotating_secrets_path(NS)}/{NAME}/status",
        {"status": {"writer": {"pod": POD, "serviceAccount": "pg"}}},
    )
    empty = SecretState()
    await kube.create(
        secrets_path(NS),
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": NAME, "namespace": NS, "labels": {LABEL_SECRET: NAME},
                      "annotations": empty.annotations()},
         "data": {}},
    )  # fmt: skip


async def source(kube: KubeClient) -> SecretState:
    obj = await kube.get(secret_path(NS, NAME))
    return SecretState.from_secret(obj.get("data"), obj["metadata"].get("annotations"))


@contextlib.asynccontextmanager
async def writer(url: str, mount: Path) -> AsyncIterator[InClusterAgent]:
    env = AgentEnv.from_env(
        {"ROTOR_MODE": "rw", "ROTOR_SECRETS": f"{NS}/{NAME}", "ROTOR_POD_NAME": POD,
         "ROTOR_POD_NAMESPACE": NS, "ROTOR_MOUNT_PATH": str(mount)}
    )  # fmt: skip
    async with KubeClient(KubeConfig(url=url)) as kube:
        a = InClusterAgent(env, SETTINGS, kube, CollectorRegistry())
        task = asyncio.create_task(a.run())
        try:
            yield a
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await a.close()


async def test_the_writer_reads_the_admin_secret_and_commits_a_pair_that_logs_in(
    pg: PgServer, emu: EmulatorThread, tmp_path: Path
) -> None:
    pg.psql("CREATE TABLE IF NOT EXISTS items (id int)")
    async with KubeClient(KubeConfig(url=emu.url)) as api:
        await seed(api, pg, "app_ic")
        async with writer(emu.url, tmp_path) as a:
            # no admin Secret yet: the first rotation aborts, recorded on the source Secret
            async def aborted() -> bool:
                return (await source(api)).abort_reason == "AdminCredentialMissing"

            await until(aborted, timeout=30.0)
            state = await source(api)
            assert state.version == 0
            assert "spec.target.postgres.admin.secretRef: Secret shop/pg-admin" in (
                state.last_abort
            )
            assert not a.readiness()[NAME]
            await api.create(
                secrets_path(NS),
                {"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "pg-admin", "namespace": NS},
                 "data": {"username": base64.b64encode(ADMIN.encode()).decode(),
                          "password": base64.b64encode(ADMIN_PASSWORD.encode()).decode()}},
            )  # fmt: skip
            await until(lambda: a.readiness()[NAME], timeout=30.0)
        state = await source(api)
    assert state.version == 1
    assert state.last_abort == ""  # the commit clears the recorded abort
    assert state.current["username"] == b"app_ic_a"
    pg.psql("GRANT SELECT ON items TO app_ic_a")
    assert login(pg, state.current["username"], state.current["password"]) is None
    assert AtomicWriter(tmp_path / NAME).read()["password"] == state.current["password"]
