"""In-cluster mode: the agent in an injected pod (``rotor-agent`` or ``rotor-agent run``).

What it does per secret, from :class:`rotor.env.AgentEnv`:

* **RW, the writer** (the pod named by the RotatingSecret's ``status.writer.pod``): runs the
  rotation engine (:class:`agent.engine.SecretRotator`) on the source Secret through
  :class:`agent.kubestore.KubeSecretStore`: prepare and commit are merge patches with a
  resourceVersion precondition, a conflict re-reads and never overwrites, a rotation found
  pending at start is finished (commit) or aborted by the engine's recovery rule, and every
  change of the Secret by someone else wakes the engine to re-read it. For a RotatingSecret with
  ``externalStores``, :class:`ExternalStores` is the engine's step 3: each store (an
  ``ExternalStore`` object read from the API, a :class:`agent.vault.VaultStore`) gets the pending
  values with check-and-set before the commit, and recovery commits only if every store holds
  them (:func:`rotor.protocol.recovery`).
* **RW, not the writer** (the other replicas): follows the source Secret and writes its committed
  values to the files; it takes over the engine when the controller names it writer, and hands
  it back when the controller names another pod.
* **RO**: follows its view ``rotor.<source-namespace>.<name>`` in the pod's own namespace and
  writes the files; when the view disappears (grant revoked, secret deleted) it deletes them.
  An RW pod's ``ROTOR_RO_SECRETS`` are followed the same way.

Files are ``<mount>/<name>/<file>`` (:class:`agent.files.AtomicWriter`), then the app is told
(:class:`agent.hooks.Reloader`). ``/metrics``, ``/healthz`` and ``/readyz`` are served on
``ROTOR_METRICS_PORT`` (all addresses: probes and Prometheus reach the pod IP); ``POST /rotate``
is not served in a cluster (rotate-now is the ``rotor.dev/rotate-now`` annotation).

A reader (non-writer, RO) only mirrors what it is shown: it never decides anything about a
rotation, so it keeps no engine logic; :class:`Mirror` is the few lines that put a state into
files. The RW side (:class:`agent.writer.RwSecret`, the engine and all it needs) is imported
only when the pod has RW secrets, so a reader never loads it (about 0.7 MiB in every consumer
pod). See docs/agent-incluster.md for the API calls, RBAC and recovery rules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from agent.config import InClusterConfig
from agent.delivery import Delivery, drain_notifications
from agent.files import AtomicWriter
from agent.hooks import ApplyHook, Reloader
from agent.kube import Forbidden, KubeClient, secrets_path
from agent.metrics import AgentMetrics
from rotor.backoff import delay
from rotor.env import AgentEnv
from rotor.errors import RotorError
from rotor.layout import SecretState, view_name
from rotor.names import SecretRef
from rotor.settings.agent import AgentSettings

if TYPE_CHECKING:  # the writer's modules are loaded only by a pod with RW secrets
    from agent.engine import Clock
    from agent.writer import RwSecret, StoreFactory

log = logging.getLogger("rotor.agent")

WAIT_MAX = 30.0
"""Longest wait between retries of an API call that failed (e.g. a grant not made yet)."""
METRICS_HOST = "0.0.0.0"  # noqa: S104  (probes and Prometheus reach the pod IP)


class Mirror:
    """A reader's copy of one secret: the files follow the states it is shown, written and
    reloaded by the engine's own :class:`agent.delivery.Delivery`."""

    def __init__(
        self, name: str, files: AtomicWriter, metrics: AgentMetrics, reloader: Reloader | None
    ) -> None:
        self.name = name
        self.metrics = metrics
        self.delivery = Delivery(name, files, metrics, reloader)
        self.shown = False  # files of a committed value are in place (until remove())
        metrics.ready.labels(name).set(0)

    @property
    def ready(self) -> bool:
        return self.shown

    def show(self, state: SecretState) -> None:
        """Write the files of ``state`` if they differ from the last written ones."""
        if not state.has_value or not self.delivery.deliver(state, state.next_rotation):
            return
        self.shown = True
        self.metrics.version.labels(self.name).set(state.version)
        self.metrics.last_rotation.labels(self.name).set(state.rotated_at or 0)
        self.metrics.ready.labels(self.name).set(1)
        log.info("files written secret=%s version=%d", self.name, state.version)

    def forget(self) -> None:
        """Another writer of these files (the engine) takes over; the files stay in place."""
        self.delivery.forget()

    def remove(self) -> None:
        """Delete the files (the view is gone): the app must not keep a revoked value."""
        self.delivery.files.remove()
        if self.delivery.written:
            log.info("files removed secret=%s", self.name)
        self.delivery.reset()
        self.shown = False
        self.metrics.ready.labels(self.name).set(0)
        self.metrics.version.labels(self.name).set(0)


def container_main_pids(proc: Path = Path("/proc"), me: int | None = None) -> list[int]:
    """In a pod that shares its process namespace: the main process of every *other* container.

    Those are the processes whose parent is 0 (their parents live outside the pod's namespace),
    except PID 1 (the pause container) and the agent's own container (the agent or an ancestor).
    """
    me = os.getpid() if me is None else me

    def ppid(pid: int) -> int | None:
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
        return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None

    mine = {me}
    pid: int | None = me
    while pid and pid not in (0, 1):
        pid = ppid(pid)
        if pid:
            mine.add(pid)
    pids = (int(e.name) for e in proc.iterdir() if e.name.isdigit())
    return sorted(p for p in pids if p != 1 and p not in mine and ppid(p) == 0)


class PodReloader(Reloader):
    """A :class:`~agent.hooks.Reloader` that, for a ``signal:*`` reload with no process named
    (``ROTOR_RELOAD_PROCESS``: ``AgentSettings.reload_process``), signals the main process of
    every other container of the pod
    (the webhook sets ``shareProcessNamespace`` for signal reloads). The agent runs without
    capabilities, so the app must run as the same user for the signal to be allowed."""

    async def notify(self, secret: str, version: int, files: list[str]) -> bool:
        if self.reload.kind != "signal" or self.process or self.pid is not None:
            return await super().notify(secret, version, files)
        pids = container_main_pids()
        if not pids:
            log.warning("reload secret=%s: no other container's process is visible", secret)
            return False
        return self.signal_pids(secret, pids)


async def retrying(
    what: str,
    run: Callable[[], Awaitable[None]],
    settings: AgentSettings,
    denied: Callable[[], None] | None = None,
) -> None:
    """Run ``run`` again after each failure, with exponential backoff (never gives up).
    ``denied`` is called on each 401/403 (the agent's metric of refused API calls)."""
    failures = 0
    while True:
        try:
            await run()
            failures = 0
            continue
        except Forbidden as e:
            text = f"{e} (refused by the API: this pod's service account lacks the permission; "
            text += "an admin approves the grant with `rotor acl approve`)"
            if denied is not None:
                denied()
        except (RotorError, OSError) as e:
            text = str(e)
        except Exception as e:  # a bug must not stop the agent silently: log it, go on
            text = f"unexpected {type(e).__name__}"
            log.debug("%s failed", what, exc_info=True)
        failures += 1
        wait = delay(failures, min(settings.backoff_base, 1.0), min(settings.backoff_max, WAIT_MAX))
        log.warning("%s: %s; retrying in %.1fs", what, text, wait)
        await asyncio.sleep(wait)


class RoSecret:
    """A secret this pod reads through its RO view in the pod's namespace."""

    def __init__(
        self,
        ref: SecretRef,
        env: AgentEnv,
        settings: AgentSettings,
        kube: KubeClient,
        metrics: AgentMetrics,
        reloader: Reloader | None,
    ) -> None:
        self.ref = ref
        self.namespace = env.pod_namespace
        self.view = view_name(ref.namespace, ref.name)
        self.settings = settings
        self.kube = kube
        files = AtomicWriter(Path(env.mount_path) / ref.name, settings.file_mode)
        self.mirror = Mirror(ref.name, files, metrics, reloader)

    @property
    def ready(self) -> bool:
        return self.mirror.ready

    async def run(self) -> None:
        await retrying(
            f"follow view {self.namespace}/{self.view}",
            self._follow,
            self.settings,
            self.mirror.metrics.api_denied.labels(self.mirror.name).inc,
        )

    async def _follow(self) -> None:
        async for obj in self.kube.follow(secrets_path(self.namespace), self.view):
            if obj is None:
                self.mirror.remove()
                continue
            meta = obj.get("metadata") or {}
            self.mirror.show(SecretState.from_secret(obj.get("data"), meta.get("annotations")))


class InClusterAgent:
    """Every secret of one injected pod; the server's view (readiness)."""

    def __init__(
        self,
        env: AgentEnv,
        settings: AgentSettings,
        kube: KubeClient,
        registry: CollectorRegistry,
        *,
        clock: Clock | None = None,
        store_factory: StoreFactory | None = None,
    ) -> None:
        self.env = env
        self.kube = kube
        self.metrics = AgentMetrics(registry)
        self.apply_hook = (
            ApplyHook(env.apply_hook, settings.hook_timeout) if env.apply_hook else None
        )
        self.reloader = (
            PodReloader(env.reload, process=settings.reload_process, timeout=settings.hook_timeout)
            if env.reload.kind != "none"
            else None
        )
        self.rw: dict[str, RwSecret] = {}
        self.ro: dict[str, RoSecret] = {}
        rw_refs = env.secrets if env.mode == "rw" else ()
        ro_refs = env.ro_secrets if env.mode == "rw" else env.secrets
        if rw_refs:
            from agent.engine import SystemClock
            from agent.writer import RwSecret
        for ref in rw_refs:
            self.rw[ref.name] = RwSecret(
                ref,
                env,
                settings,
                kube,
                self.metrics,
                clock=clock or SystemClock(),
                apply_hook=self.apply_hook,
                reloader=self.reloader,
                store_factory=store_factory,
            )
        for ref in ro_refs:
            self.ro[ref.name] = RoSecret(ref, env, settings, kube, self.metrics, self.reloader)

    def readiness(self) -> dict[str, bool]:
        out = {name: s.ready for name, s in self.rw.items()}
        out.update({name: s.ready for name, s in self.ro.items()})
        return out

    def request_rotation(self, name: str | None = None) -> list[str]:
        raise KeyError(name)  # in a cluster: the rotor.dev/rotate-now annotation

    async def run(self) -> None:
        await asyncio.gather(
            *(s.run() for s in self.rw.values()), *(s.run() for s in self.ro.values())
        )

    async def close(self) -> None:
        await drain_notifications()
        if self.apply_hook is not None:
            await self.apply_hook.close()
        if self.reloader is not None:
            await self.reloader.close()


async def run(config: InClusterConfig) -> int:
    """``rotor-agent run``: until SIGTERM/SIGINT, configured as read at start."""
    from agent.server import make_app, serve

    env = config.env
    registry = CollectorRegistry()
    async with KubeClient(config.kube) as kube:
        agent = InClusterAgent(env, config.settings, kube, registry)
        app = make_app(registry, agent, allow_rotate=False, background=agent.run)
        runner = await serve(app, METRICS_HOST, env.metrics_port)
        log.info(
            "agent started mode=%s pod=%s/%s rw=%s ro=%s api=%s",
            env.mode,
            env.pod_namespace,
            env.pod_name,
            ",".join(map(str, agent.rw)) or "-",
            ",".join(map(str, agent.ro)) or "-",
            config.kube.url,
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await runner.cleanup()
            await agent.close()
    log.info("agent stopped")
    return 0
