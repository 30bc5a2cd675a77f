"""The in-cluster agent against tests/kubeemu.py's strict emulator (resourceVersion, 409).

The test plays the controller: it creates the RotatingSecret (with ``status.writer``) and the
empty source Secret, and copies committed values into RO views. The agents run in-process, each
with its own API client, pod name and mount folder, as separate pods would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.engine import SecretRotator, SystemClock
from agent.files import METADATA, AtomicWriter
from agent.incluster import InClusterAgent
from agent.kube import (
    KubeClient,
    KubeConfig,
    rotating_secret_path,
    rotating_secrets_path,
    secret_path,
    secrets_path,
)
from agent.kubestore import KubeSecretStore
from agent.metrics import AgentMetrics
from rotor.annotations import ROTATE_NOW
from rotor.env import AgentEnv
from rotor.layout import (
    ANN_CHECKSUM,
    ANN_NEXT_ROTATION,
    ANN_PREVIOUS_EXPIRES,
    ANN_ROTATE_HANDLED,
    ANN_ROTATED_AT,
    ANN_VERSION,
    LABEL_SECRET,
    SecretState,
    view_name,
)
from rotor.protocol import commit, prepare
from rotor.settings.agent import AgentSettings
from rotor.spec import RotatingSecretSpec
from tests.agent.fakes import app_server
from tests.agent_k8s.conftest import until
from tests.doubles import MemoryKVStore
from tests.kubeemu import EmulatorThread

NS, RO_NS, NAME = "shop", "web", "db"
SPEC: dict[str, Any] = {
    "keys": [{"name": "password", "generator": {"type": "password", "length": 16}}],
    "rotation": {"interval": "1h", "overlap": "10m"},
}
SETTINGS = AgentSettings(backoff_base=0.05, backoff_max=0.5)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
async def api(strict_api: EmulatorThread) -> AsyncIterator[KubeClient]:
    """The test's own client, acting as the controller and as a user."""
    async with KubeClient(KubeConfig(url=strict_api.url)) as kube:
        yield kube


async def seed(kube: KubeClient, writer: str, state: SecretState | None = None) -> None:
    """What the controller does: the RotatingSecret with a writer, the source Secret."""
    await kube.create(
        rotating_secrets_path(NS),
        {
            "apiVersion": "rotor.dev/v1alpha1",
            "kind": "RotatingSecret",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": SPEC,
        },
    )
    await set_writer(kube, writer)
    state = state or SecretState()
    await kube.create(
        secrets_path(NS),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": NAME,
                "namespace": NS,
                "labels": {LABEL_SECRET: NAME},
                "annotations": state.annotations(),
            },
            "data": state.secret_data(),
        },
    )


async def set_writer(kube: KubeClient, pod: str) -> None:
    path = rotating_secret_path(NS, NAME) + "/status"
    await kube.patch(path, {"status": {"writer": {"pod": pod, "serviceAccount": "api"}}})


async def source(kube: KubeClient) -> SecretState:
    obj = await kube.get(secret_path(NS, NAME))
    return SecretState.from_secret(obj.get("data"), obj["metadata"].get("annotations"))


VIEW_ANNOTATIONS = (
    ANN_VERSION, ANN_CHECKSUM, ANN_ROTATED_AT, ANN_PREVIOUS_EXPIRES, ANN_NEXT_ROTATION
)  # fmt: skip


async def publish_view(kube: KubeClient, state: SecretState | None = None) -> SecretState:
    """What the controller does after a commit: the RO view in the consumer's namespace (of
    the source Secret's state, or of ``state``)."""
    state = state or await source(kube)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": view_name(NS, NAME),
            "namespace": RO_NS,
            "annotations": {
                k: v
                for k, v in state.annotations().items()
                if k
                in (
                    ANN_VERSION,
                    ANN_CHECKSUM,
                    ANN_ROTATED_AT,
                    ANN_PREVIOUS_EXPIRES,
                    ANN_NEXT_ROTATION,
                )
            },
        },
        "data": state.view_data(),
    }
    existing = await kube.get_or_none(secret_path(RO_NS, view_name(NS, NAME)))
    if existing is None:
        await kube.create(secrets_path(RO_NS), body)
    else:
        stale = {k: None for k in existing.get("data") or {}}
        body["data"] = {**stale, **body["data"]}
        await kube.patch(secret_path(RO_NS, view_name(NS, NAME)), body)
    return state


def env_of(pod: str, mode: str, mount: Path, reload: str = "none") -> AgentEnv:
    return AgentEnv.from_env(
        {
            "ROTOR_MODE": mode,
            "ROTOR_SECRETS": f"{NS}/{NAME}",
            "ROTOR_POD_NAME": pod,
            "ROTOR_POD_NAMESPACE": NS if mode == "rw" else RO_NS,
            "ROTOR_MOUNT_PATH": str(mount),
            "ROTOR_RELOAD": reload,
        }
    )


@contextlib.asynccontextmanager
async def agent(
    url: str,
    pod: str,
    mode: str,
    mount: Path,
    reload: str = "none",
    settings: AgentSettings = SETTINGS,
) -> AsyncIterator[InClusterAgent]:
    async with KubeClient(KubeConfig(url=url)) as kube:
        a = InClusterAgent(env_of(pod, mode, mount, reload), settings, kube, CollectorRegistry())
        task = asyncio.create_task(a.run())
        try:
            yield a
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await a.close()


def files(mount: Path) -> dict[str, bytes]:
    """The value files (the metadata file ``.rotor.json`` is checked by :func:`meta`)."""
    return {k: v for k, v in AtomicWriter(mount / NAME).read().items() if k != METADATA}


def meta(mount: Path) -> dict[str, Any]:
    return dict(json.loads(AtomicWriter(mount / NAME).read()[METADATA]))


def history(emu: EmulatorThread) -> list[dict[str, Any]]:
    """Every stored version of the source Secret, oldest first (read in the emulator's loop)."""
    k8s, loop = emu.k8s, emu._loop  # the fixture's own loop: the only safe place to read it
    assert k8s is not None
    assert loop is not None

    async def grab() -> list[dict[str, Any]]:
        for (res, ns, name), obj in k8s.objects.items():
            if res.plural == "secrets" and (ns, name) == (NS, NAME):
                return [copy.deepcopy(v.raw) for v in obj.history if v is not None]
        return []

    return asyncio.run_coroutine_threadsafe(grab(), loop).result(10)


def decode(obj: dict[str, Any]) -> SecretState:
    return SecretState.from_secret(obj.get("data"), obj["metadata"].get("annotations"))


# -- the writer --------------------------------------------------------------------------------
async def test_writer_prepares_then_commits_with_resource_version_preconditions(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    await seed(api, writer="api-a")
    async with agent(strict_api.url, "api-a", "rw", tmp_path) as a:
        await until(lambda: a.readiness() == {NAME: True})
    state = await source(api)
    assert (state.version, state.phase, state.pending) == (1, "committed", {})
    assert state.writer == f"{NS}/api-a"
    assert files(tmp_path) == {"password": state.current["password"]}
    assert len(state.current["password"]) == 16
    stored = history(strict_api)
    assert [(decode(o).version, decode(o).phase) for o in stored] == [
        (0, "committed"),
        (0, "pending"),  # prepare: only <key>.pending is added
        (1, "committed"),  # commit: pending became current, <key>.pending is gone
    ]
    assert set(stored[1]["data"]) == {"password.pending"}
    assert set(stored[2]["data"]) == {"password"}
    assert decode(stored[1]).pending == decode(stored[2]).current
    rvs = [o["metadata"]["resourceVersion"] for o in stored]
    assert len(set(rvs)) == 3  # each write made a new version (the emulator refuses stale ones)


async def test_two_writers_racing_lose_and_duplicate_no_version(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    """Split brain (two pods both think they write): every version is committed once, from the
    pending value of the writer that won its prepare; a loser re-reads, never overwrites."""
    await seed(api, writer="api-a")
    spec = RotatingSecretSpec.from_dict(SPEC)
    rotators: list[SecretRotator] = []
    async with (
        KubeClient(KubeConfig(url=strict_api.url)) as ka,
        KubeClient(KubeConfig(url=strict_api.url)) as kb,
    ):
        for pod, kube in (("api-a", ka), ("api-b", kb)):
            rotators.append(
                SecretRotator(
                    NAME,
                    spec,
                    KubeSecretStore(kube, NS, NAME),
                    AtomicWriter(tmp_path / pod / NAME),
                    settings=SETTINGS,
                    metrics=AgentMetrics(CollectorRegistry()),
                    clock=SystemClock(),
                    writer_id=f"{NS}/{pod}",
                )
            )
        for _ in range(8):
            for r in rotators:
                r.request_rotation()
                r.retry_at = None
            await asyncio.gather(*(r.step() for r in rotators))
    states = [decode(o) for o in history(strict_api)]
    committed = [s for s in states if s.phase == "committed" and s.version > 0]
    assert [s.version for s in committed] == list(range(1, len(committed) + 1))
    assert len(committed) >= 8  # each round commits at least once
    for before, after in itertools.pairwise(states):
        if after.version != before.version:  # a commit: the pending value of that writer
            assert before.phase == "pending"
            assert after.version == before.version + 1
            assert after.current == before.pending
            assert after.writer == before.writer
    values = [s.current["password"] for s in committed]
    assert len(set(values)) == len(values)


async def test_replicas_make_exactly_one_first_value_before_a_writer_is_named(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    """The controller names only a Ready pod, and a pod is Ready once its files exist: with no
    writer named and no value yet, the RW replicas race for the first value; one wins."""
    await seed(api, writer="")
    url = strict_api.url
    async with (
        agent(url, "api-a", "rw", tmp_path / "a") as a,
        agent(url, "api-b", "rw", tmp_path / "b") as b,
    ):
        await until(lambda: a.readiness()[NAME] and b.readiness()[NAME])
        await until(lambda: not a.rw[NAME].writing and not b.rw[NAME].writing)
        assert files(tmp_path / "a") == files(tmp_path / "b")
    states = [decode(o) for o in history(strict_api)]
    assert max(s.version for s in states) == 1  # exactly one first value
    state = await source(api)
    assert files(tmp_path / "a") == {"password": state.current["password"]}


async def test_a_half_done_rotation_is_committed_on_start(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    """No external store disagrees and no apply hook: the pending values are complete in the
    Secret (and may already be in use by the app), so the new writer finishes the commit."""
    half = SecretState(
        version=3,
        phase="pending",
        current={"password": b"old-value-000000"},
        pending={"password": b"new-value-111111"},
        rotated_at=1.0e9,
        writer=f"{NS}/api-gone",
        pending_since=1.0e9,
    )
    await seed(api, writer="api-a", state=half)
    async with agent(strict_api.url, "api-a", "rw", tmp_path) as a:
        await until(lambda: a.readiness() == {NAME: True})
    state = await source(api)
    assert (state.version, state.phase, state.pending) == (4, "committed", {})
    assert state.current == {"password": b"new-value-111111"}
    assert state.previous == {"password": b"old-value-000000"}
    assert files(tmp_path)["password"] == b"new-value-111111"


async def test_pending_values_that_do_not_fit_the_spec_are_aborted_on_start(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    import time

    half = SecretState(
        version=3,
        phase="pending",
        current={"password": b"old-value-000000"},
        pending={"token": b"from-an-older-spec"},
        rotated_at=time.time(),
        pending_since=time.time(),
    )
    await seed(api, writer="api-a", state=half)
    async with agent(strict_api.url, "api-a", "rw", tmp_path) as a:
        await until(lambda: a.readiness() == {NAME: True})
    state = await source(api)
    assert (state.version, state.phase, state.pending) == (3, "committed", {})
    assert files(tmp_path) == {"password": b"old-value-000000"}


# -- readers, views, rotate-now ----------------------------------------------------------------
async def test_replicas_and_ro_consumers_write_what_the_writer_committed(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    await seed(api, writer="api-a")
    a_dir, b_dir, c_dir = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    url = strict_api.url
    async with (
        agent(url, "api-a", "rw", a_dir) as a,
        agent(url, "api-b", "rw", b_dir) as b,
        agent(url, "web-1", "ro", c_dir) as c,
    ):
        await until(lambda: a.readiness()[NAME] and b.readiness()[NAME])
        v1 = await publish_view(api)
        await until(lambda: c.readiness()[NAME])
        want = {"password": v1.current["password"]}
        assert files(a_dir) == files(b_dir) == files(c_dir) == want
        # writer, replica and RO consumer hold the same metadata of that version
        assert meta(a_dir) == meta(b_dir) == meta(c_dir)
        assert meta(c_dir)["version"] == v1.version
        assert meta(c_dir)["nextRotation"] is not None

        # rotate-now: one rotation, seen by all three (the controller republishes the view).
        await api.patch(
            rotating_secret_path(NS, NAME), {"metadata": {"annotations": {ROTATE_NOW: "r1"}}}
        )

        async def at_v2() -> bool:
            return (await source(api)).version == 2

        await until(at_v2)
        v2 = await publish_view(api)
        want = {
            "password": v2.current["password"],
            "password.previous": v1.current["password"],
        }
        await until(lambda: files(a_dir) == files(b_dir) == files(c_dir) == want)
        obj = await api.get(secret_path(NS, NAME))
        assert obj["metadata"]["annotations"][ANN_ROTATE_HANDLED] == "r1"

        # The view goes (grant revoked): the RO agent deletes its files; RW files stay.
        await api.request("DELETE", secret_path(RO_NS, view_name(NS, NAME)))
        await until(lambda: files(c_dir) == {} and not c.readiness()[NAME])
        assert not [p for p in (c_dir / NAME).iterdir() if not p.name.startswith("..")]
        assert files(a_dir) == want

        # The controller names the replica writer: it takes over and answers the next request.
        await set_writer(api, "api-b")
        await until(lambda: b.rw[NAME].writing and not a.rw[NAME].writing)
        await api.patch(
            rotating_secret_path(NS, NAME), {"metadata": {"annotations": {ROTATE_NOW: "r2"}}}
        )

        async def at_v3() -> bool:
            return (await source(api)).version == 3

        await until(at_v3)
        v3 = await source(api)
        assert v3.writer == f"{NS}/api-b"
        await until(lambda: files(a_dir) == files(b_dir))
        assert files(a_dir)["password"] == v3.current["password"]

    # A restarted writer does not answer the same request twice.
    async with agent(url, "api-b", "rw", b_dir) as b2:
        await until(lambda: b2.readiness()[NAME])
        assert (await source(api)).version == 3


async def test_an_ro_agent_counts_its_reloads_and_their_failures(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    """An RO consumer tells its app of each new version (not of the first) and its /metrics
    count each reload and each failed one, as a writer's do."""
    from prometheus_client import generate_latest

    def committed(state: SecretState, value: bytes, now: float) -> SecretState:
        return commit(prepare(state, {"password": value}, now, f"{NS}/api-a"), now, 600)

    def reloads(a: InClusterAgent, result: str) -> bool:
        text = generate_latest(a.metrics.registry).decode()
        line = "rotor_agent_reload_notifications_total"
        return f'{line}{{method="http",result="{result}",secret="{NAME}"}} 1.0' in text

    v1 = committed(SecretState(), b"one", 1_700_000_000.0)
    await publish_view(api, v1)
    async with (
        app_server() as app,
        agent(strict_api.url, "web-1", "ro", tmp_path, reload=f"{app.url}/reload") as c,
    ):
        await until(lambda: c.readiness()[NAME])
        v2 = committed(v1, b"two", 1_700_000_100.0)
        await publish_view(api, v2)
        await until(lambda: reloads(c, "success"))
        app.reload_status = 500
        await publish_view(api, committed(v2, b"three", 1_700_000_200.0))
        await until(lambda: reloads(c, "failure"))
    assert [r["version"] for r in app.reloads] == [2, 3]
    assert files(tmp_path)["password"] == b"three"


# -- the command -------------------------------------------------------------------------------
async def test_rotor_agent_run_in_a_pod_like_environment(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    """``rotor-agent`` with no subcommand, configured only by env vars (what the webhook sets),
    serves /readyz once the files exist and stops cleanly on SIGTERM."""
    import os
    import shutil
    import signal

    import aiohttp

    from tests.conftest import free_port

    exe = shutil.which("rotor-agent")
    assert exe, "the package is installed with its console scripts (pip install -e .)"
    await seed(api, writer="api-a")
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "ROTOR_MODE": "rw",
        "ROTOR_SECRETS": f"{NS}/{NAME}",
        "ROTOR_POD_NAME": "api-a",
        "ROTOR_POD_NAMESPACE": NS,
        "ROTOR_MOUNT_PATH": str(tmp_path / "mnt"),
        "ROTOR_METRICS_PORT": str(port),
        "ROTOR_KUBE_URL": strict_api.url,
        "ROTOR_KUBE_TOKEN_FILE": str(token),
    }
    proc = await asyncio.create_subprocess_exec(
        exe, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                assert proc.returncode is None, "the agent exited"
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready)
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                metrics = await r.text()
        assert 'rotor_agent_secret_version{secret="db"} 1.0' in metrics
        state = await source(api)
        assert files(tmp_path / "mnt") == {"password": state.current["password"]}
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, out.decode()
        assert state.current["password"].decode() not in out.decode()  # no value in the logs
        assert "agent stopped" in out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_writer_waits_for_the_source_secret_and_honours_the_apply_hook(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    """The controller creates the source Secret after the pod started; the app's apply hook
    refuses the first value (abort: nothing committed, no file), then accepts the next one."""
    from aiohttp import web

    answers = [500]
    posted: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        posted.append(await request.json())
        return web.Response(status=answers[0])

    app = web.Application()
    app.router.add_post("/apply", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await api.create(
        rotating_secrets_path(NS),
        {
            "apiVersion": "rotor.dev/v1alpha1",
            "kind": "RotatingSecret",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": SPEC,
        },
    )
    await set_writer(api, "api-a")
    env = AgentEnv.from_env(
        {
            "ROTOR_MODE": "rw",
            "ROTOR_SECRETS": f"{NS}/{NAME}",
            "ROTOR_POD_NAME": "api-a",
            "ROTOR_POD_NAMESPACE": NS,
            "ROTOR_MOUNT_PATH": str(tmp_path),
            "ROTOR_APPLY_HOOK": f"http://127.0.0.1:{port}/apply",
        }
    )
    try:
        async with KubeClient(KubeConfig(url=strict_api.url)) as kube:
            a = InClusterAgent(env, SETTINGS, kube, CollectorRegistry())
            task = asyncio.create_task(a.run())
            try:
                await api.create(  # the controller's part, a little late
                    secrets_path(NS),
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": NAME}},
                )
                await until(lambda: len(posted) >= 1)

                async def aborted() -> bool:
                    s = await source(api)
                    return s.phase == "committed" and s.version == 0 and not s.pending

                await until(aborted)
                assert files(tmp_path) == {}
                assert not a.readiness()[NAME]
                answers[0] = 200  # the app can apply values now; the engine retries after backoff
                await until(lambda: a.readiness()[NAME])
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await a.close()
    finally:
        await runner.cleanup()
    state = await source(api)
    assert state.version == 1
    assert posted[-1]["values"] == {"password": state.current["password"].decode()}
    assert files(tmp_path) == {"password": state.current["password"]}


def test_signal_reload_targets_the_main_process_of_every_other_container(tmp_path: Path) -> None:
    """A pod sharing its process namespace, as /proc shows it to the agent (pid 40)."""
    from agent.incluster import container_main_pids

    procs = {
        1: "1 (pause) S 0",  # the pause container
        7: "7 (tini) S 0",  # the agent's container: tini, then the agent
        40: "40 (rotor-agent) S 7",
        12: "12 (my app (main)) S 0",  # the app: parent outside the namespace
        13: "13 (worker) S 12",  # the app's child: not signalled directly
        20: "20 (other-sidecar) S 0",
    }
    for pid, stat in procs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat + " 1 1 0 -1\n")
    (tmp_path / "self").mkdir()
    assert container_main_pids(tmp_path, me=40) == [12, 20]


async def test_pod_reloader_signals_those_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import agent.incluster
    from agent.incluster import PodReloader
    from rotor.annotations import parse_reload

    app = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import signal, sys, time\n"
        "signal.signal(signal.SIGHUP, lambda *a: sys.exit(7))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert app.stdout is not None
        assert await asyncio.wait_for(app.stdout.readline(), 20) == b"ready\n"
        monkeypatch.setattr(agent.incluster, "container_main_pids", lambda: [app.pid])
        reloader = PodReloader(parse_reload("signal:HUP", "ROTOR_RELOAD"))
        assert await reloader.notify("db", 2, ["password"])
        assert await asyncio.wait_for(app.wait(), 20) == 7
    finally:
        if app.returncode is None:
            app.kill()
            await app.wait()


# -- external stores (rotation step 3), with tests.doubles.MemoryKVStore (Vault's semantics) -------
EXTERNAL_SPEC: dict[str, Any] = {
    **SPEC,
    "externalStores": [{"storeRef": {"name": "vault"}, "path": "shop/db"}],
}


async def seed_external(kube: KubeClient, state: SecretState | None = None) -> None:
    await kube.create(
        f"/apis/rotor.dev/v1alpha1/namespaces/{NS}/externalstores",
        {
            "apiVersion": "rotor.dev/v1alpha1",
            "kind": "ExternalStore",
            "metadata": {"name": "vault", "namespace": NS},
            "spec": {
                "vault": {"server": "http://vault:8200", "auth": {"kubernetes": {"role": "r"}}}
            },
        },
    )
    await seed(kube, writer="api-a", state=state)
    await kube.patch(rotating_secret_path(NS, NAME), {"spec": EXTERNAL_SPEC})


@contextlib.asynccontextmanager
async def writer_with_store(
    url: str, mount: Path, store: MemoryKVStore
) -> AsyncIterator[InClusterAgent]:
    built: list[str] = []

    def factory(name: str, obj: Any) -> MemoryKVStore:
        built.append(obj["spec"]["vault"]["server"])  # the ExternalStore object was read
        return store

    async with KubeClient(KubeConfig(url=url)) as kube:
        a = InClusterAgent(
            env_of("api-a", "rw", mount), SETTINGS, kube, CollectorRegistry(), store_factory=factory
        )
        task = asyncio.create_task(a.run())
        try:
            yield a
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await a.close()
    assert built == ["http://vault:8200"] * len(built)


async def test_the_writer_puts_each_value_in_the_external_store_before_committing(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    store = MemoryKVStore()
    store.unavailable = True  # first the store is down: nothing may be committed
    await seed_external(api)
    async with writer_with_store(strict_api.url, tmp_path, store) as a:
        await until(lambda: a.rw[NAME].writing)

        async def aborted_once() -> bool:
            s = await source(api)
            return any(decode(o).phase == "pending" for o in history(strict_api)) and (
                s.phase == "committed" and s.version == 0
            )

        await until(aborted_once)
        assert files(tmp_path) == {}
        store.unavailable = False
        await until(lambda: a.readiness()[NAME])
    state = await source(api)
    assert state.version == 1
    held = await store.read_values("shop/db")
    assert held.values == state.current  # the committed value is in the store
    assert held.record is not None
    assert held.record.rotor_version == 1


@pytest.mark.parametrize("store_has_it", [True, False])
async def test_recovery_commits_only_if_every_store_holds_the_pending_values(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path, store_has_it: bool
) -> None:
    import time

    half = SecretState(
        version=3,
        phase="pending",
        current={"password": b"old-value-000000"},
        pending={"password": b"new-value-111111"},
        rotated_at=time.time(),
        pending_since=time.time(),
    )
    store = MemoryKVStore()
    store.put("shop/db", {"password": b"old-value-000000"})
    if store_has_it:  # the old writer got as far as step 3
        store.put("shop/db", {"password": b"new-value-111111"})
    await seed_external(api, state=half)
    async with writer_with_store(strict_api.url, tmp_path, store) as a:
        await until(lambda: a.readiness()[NAME])
    state = await source(api)
    assert (state.phase, state.pending) == ("committed", {})
    if store_has_it:
        assert (state.version, state.current) == (4, {"password": b"new-value-111111"})
    else:
        assert (state.version, state.current) == (3, {"password": b"old-value-000000"})
    assert files(tmp_path)["password"] == state.current["password"]


async def test_the_writer_writes_a_real_openbao_kv_v2_store(
    strict_api: EmulatorThread, api: KubeClient, tmp_path: Path
) -> None:
    """The default store factory (agent.vault.VaultStore from the ExternalStore object) against
    a real OpenBao dev server; the token comes from the agent's env, as docs/external-stores.md
    describes."""
    from dataclasses import replace

    import hvac

    from tests.vault.conftest import start_bao

    (tmp_path / "bao").mkdir()
    server = start_bao(tmp_path / "bao")
    try:
        env_settings = AgentSettings.from_env({"ROTOR_VAULT_TOKEN": server.token})
        settings = replace(SETTINGS, vault_token=env_settings.vault_token)
        await api.create(
            f"/apis/rotor.dev/v1alpha1/namespaces/{NS}/externalstores",
            {
                "apiVersion": "rotor.dev/v1alpha1",
                "kind": "ExternalStore",
                "metadata": {"name": "vault", "namespace": NS},
                "spec": {
                    "vault": {
                        "server": server.url,
                        "mount": "secret",
                        "auth": {"token": {"secretRef": {"name": "vault-token"}}},
                    }
                },
            },
        )
        await seed(api, writer="api-a")
        await api.patch(rotating_secret_path(NS, NAME), {"spec": EXTERNAL_SPEC})
        async with agent(strict_api.url, "api-a", "rw", tmp_path / "mnt", settings=settings) as a:
            await until(lambda: a.readiness()[NAME])
        state = await source(api)
        client = hvac.Client(url=server.url, token=server.token)
        got = await asyncio.to_thread(
            client.secrets.kv.v2.read_secret_version,
            path="shop/db",
            mount_point="secret",
            raise_on_deleted_version=True,
        )
        assert got["data"]["data"] == {"password": state.current["password"].decode()}
        assert state.version == 1
    finally:
        server.stop()
