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
files. See docs/agent-incluster.md for the API calls, RBAC and recovery rules.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from agent.config import InClusterConfig
from agent.delivery import Delivery, drain_notifications
from agent.engine import Clock, SecretRotator, SystemClock
from agent.files import AtomicWriter
from agent.hooks import ApplyHook, Reloader
from agent.kube import (
    Forbidden,
    KubeClient,
    rotating_secrets_path,
    secret_path,
    secrets_path,
)
from agent.kubestore import KubeSecretStore
from agent.metrics import AgentMetrics
from agent.targets import (
    R_ADMIN_CREDENTIAL,
    AdminSource,
    Target,
    TargetError,
    build_target,
    file_admin,
)
from rotor.annotations import ROTATE_NOW
from rotor.env import AgentEnv
from rotor.errors import InvalidSpec, RotorError
from rotor.external import ExternalStoreWriter, RotorMetadata, StoreRecord
from rotor.kubepaths import rotor_path
from rotor.layout import ANN_POSTGRES_ADMIN_FOR, SecretState, checksum, view_name
from rotor.logs import register_secret
from rotor.names import SecretRef
from rotor.protocol import backoff_delay, plan_store_write
from rotor.settings.agent import AgentSettings
from rotor.spec import ExternalStoreRef, ExternalStoreSpec, PostgresAdmin, RotatingSecretSpec

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


StoreFactory = Callable[[str, Mapping[str, Any]], ExternalStoreWriter]
"""``(name, ExternalStore object) -> writer``; the default (:func:`vault_stores`) builds a
VaultStore (hvac)."""


def vault_stores(settings: AgentSettings) -> StoreFactory:
    """A VaultStore per ExternalStore object, logging in as the agent's settings say."""

    def vault_store(name: str, obj: Mapping[str, Any]) -> ExternalStoreWriter:
        from agent.vault import VaultStore  # hvac is imported only by writers of such secrets

        spec = ExternalStoreSpec.from_dict(obj.get("spec"), f"ExternalStore {name}: spec")
        return VaultStore.from_spec(spec.vault, settings)

    return vault_store


def external_stores_path(namespace: str, name: str) -> str:
    return rotor_path("externalstores", namespace, name)


class ExternalStores:
    """Rotation step 3 for one secret (:class:`agent.engine.ExternalStep`): every store of
    ``spec.externalStores`` gets the pending values with check-and-set before the commit, and a
    rotation found pending is committed only if every store already holds it."""

    def __init__(
        self,
        ref: SecretRef,
        refs: tuple[ExternalStoreRef, ...],
        stores: Mapping[str, ExternalStoreWriter],
        writer: str,
    ) -> None:
        self.ref = ref
        self.refs = refs
        self.stores = stores
        self.writer = writer

    @classmethod
    async def load(
        cls,
        kube: KubeClient,
        ref: SecretRef,
        refs: tuple[ExternalStoreRef, ...],
        writer: str,
        factory: StoreFactory,
    ) -> ExternalStores:
        stores: dict[str, ExternalStoreWriter] = {}
        for r in refs:
            if r.store not in stores:
                obj = await kube.get(external_stores_path(ref.namespace, r.store))
                stores[r.store] = factory(r.store, obj)
        return cls(ref, refs, stores, writer)

    async def write(self, state: SecretState, now: float) -> None:
        digest = checksum(state.pending)
        for r in self.refs:
            store = self.stores[r.store]
            cas = plan_store_write(state, await store.read_version(r.path), r.path)
            if cas is None:
                continue  # it already holds these values (a retry)
            meta = RotorMetadata(state.version + 1, digest, self.writer, now, str(self.ref))
            await store.write_pending(r.path, state.pending, cas, meta)
            log.info(
                "external store written secret=%s store=%s path=%s version=%d",
                self.ref,
                r.store,
                r.path,
                state.version + 1,
            )

    async def records(self, state: SecretState) -> dict[str, StoreRecord | None]:
        return {
            f"{r.store}:{r.path}": await self.stores[r.store].read_version(r.path)
            for r in self.refs
        }


def kube_admin(kube: KubeClient, namespace: str, admin: PostgresAdmin) -> AdminSource:
    """The admin credential in a cluster: the Secret ``admin.secretRef`` in the secret's
    namespace (the controller grants the writer's Role ``get`` on it), read at each use;
    else ``admin.passwordFile`` (a mounted file) or no password (peer auth on a socket)."""
    if admin.secret_ref is None:
        return file_admin(admin.user, admin.password_file)
    name = admin.secret_ref

    async def read() -> tuple[str, str | None]:
        where = f"spec.target.postgres.admin.secretRef: Secret {namespace}/{name}"
        try:
            obj = await kube.get_or_none(secret_path(namespace, name))
        except Forbidden:
            raise TargetError(
                R_ADMIN_CREDENTIAL,
                f"{where} cannot be read (forbidden): the controller grants it only when the "
                f"Secret names this RotatingSecret in its annotation {ANN_POSTGRES_ADMIN_FOR}",
            ) from None
        except RotorError as e:
            raise TargetError(R_ADMIN_CREDENTIAL, f"{where} cannot be read ({e})") from None
        if obj is None:
            raise TargetError(R_ADMIN_CREDENTIAL, f"{where} does not exist; create it")
        data = obj.get("data") or {}
        if admin.password_key not in data:
            raise TargetError(R_ADMIN_CREDENTIAL, f"{where} has no key {admin.password_key!r}")
        try:
            password = base64.b64decode(data[admin.password_key]).decode()
            raw_user = data.get(admin.username_key)
            user = base64.b64decode(raw_user).decode() if raw_user else admin.user
        except (ValueError, UnicodeDecodeError):
            raise TargetError(R_ADMIN_CREDENTIAL, f"{where} does not hold UTF-8 text") from None
        register_secret(password)  # a log line that holds it is dropped (rotor.logs)
        return user, password

    return read


async def _retrying(
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
        delay = backoff_delay(
            failures, min(settings.backoff_base, 1.0), min(settings.backoff_max, WAIT_MAX)
        )
        log.warning("%s: %s; retrying in %.1fs", what, text, delay)
        await asyncio.sleep(delay)


def acts_as_writer(writer: str, pod: str, latest: SecretState | None) -> bool:
    """Whether this pod runs the rotation engine for a secret.

    The pod the controller named writer does. Besides, while *no* writer is named and the source
    Secret has no value yet (version 0), every RW replica does: the controller only names a
    Ready pod, and with ``rotor.dev/wait: true`` a pod is Ready only once its files exist, so
    someone must make the first value before any writer can be named. The replicas race with
    resourceVersion preconditions, so exactly one first value is committed; the others get 409,
    re-read, find the value and go back to mirroring.
    """
    if not pod:
        return False
    if writer:
        return writer == pod
    return latest is not None and latest.version == 0


def writer_of(rsec: Mapping[str, Any] | None) -> str:
    """The pod the controller named writer in a RotatingSecret's status (``""``: none)."""
    status = (rsec or {}).get("status") or {}
    writer = status.get("writer") or {}
    return str(writer.get("pod") or "") if isinstance(writer, Mapping) else ""


class RwSecret:
    """A secret this pod writes: the engine while the pod is the writer, a mirror otherwise."""

    def __init__(
        self,
        ref: SecretRef,
        env: AgentEnv,
        settings: AgentSettings,
        kube: KubeClient,
        metrics: AgentMetrics,
        *,
        clock: Clock,
        apply_hook: ApplyHook | None,
        reloader: Reloader | None,
        store_factory: StoreFactory | None = None,
    ) -> None:
        self.ref = ref
        self.env = env
        self.store_factory = store_factory or vault_stores(settings)
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self.apply_hook = apply_hook
        self.reloader = reloader
        self.files = AtomicWriter(Path(env.mount_path) / ref.name, settings.file_mode)
        self.store = KubeSecretStore(kube, ref.namespace, ref.name)
        self.mirror = Mirror(ref.name, self.files, metrics, reloader)
        self.rotator: SecretRotator | None = None
        self.spec: RotatingSecretSpec | None = None
        self.writer = ""
        self.latest: SecretState | None = None
        self._engine: asyncio.Task[None] | None = None

    @property
    def writing(self) -> bool:
        return self._engine is not None

    @property
    def ready(self) -> bool:
        """Files of a committed value are in place (written by the engine or the mirror)."""
        return (self.rotator is not None and self.rotator.ready) or self.mirror.ready

    async def run(self) -> None:
        try:
            await asyncio.gather(
                _retrying(
                    f"follow RotatingSecret {self.ref}",
                    self._follow_spec,
                    self.settings,
                    self.metrics.api_denied.labels(self.ref.name).inc,
                ),
                _retrying(
                    f"follow source Secret {self.ref}",
                    self._follow_source,
                    self.settings,
                    self.metrics.api_denied.labels(self.ref.name).inc,
                ),
            )
        finally:
            await self._stop_engine()

    async def _follow_spec(self) -> None:
        collection = rotating_secrets_path(self.ref.namespace)
        async for obj in self.kube.follow(collection, self.ref.name):
            spec: RotatingSecretSpec | None = None
            if obj is not None:
                try:
                    spec = RotatingSecretSpec.from_dict(obj.get("spec"))
                    spec.rotation.check_jitter(self.settings.jitter, "spec.rotation.overlap")
                except InvalidSpec as e:
                    log.error("RotatingSecret %s has an invalid spec: %s", self.ref, e)
                annotations = (obj.get("metadata") or {}).get("annotations") or {}
                self.store.rotate_now = str(annotations.get(ROTATE_NOW, ""))
            old = (self.spec.external_stores, self.spec.target) if self.spec is not None else None
            self.spec, self.writer = spec, writer_of(obj)
            if spec is not None and self.writing and (spec.external_stores, spec.target) != old:
                await self._stop_engine()  # started again below, with the new stores/target
            if spec is not None and self.rotator is not None:
                self.rotator.spec = spec
            await self._set_role()
            if self.rotator is not None:
                self.rotator.wake()

    async def _follow_source(self) -> None:
        async for obj in self.kube.follow(secrets_path(self.ref.namespace), self.ref.name):
            if obj is None:
                self.latest = None
                continue
            self.latest = self.store.decode(obj).state
            await self._set_role()
            if self.writing and self.rotator is not None:
                self.rotator.wake()  # someone may have changed it: the engine re-reads
            else:
                self.mirror.show(self.latest)

    async def _set_role(self) -> None:
        me = acts_as_writer(self.writer, self.env.pod_name, self.latest)
        if me and self.spec is not None and not self.writing:
            if self.writer:
                log.info("writer of %s: this pod (%s)", self.ref, self.env.pod_name)
            else:
                log.info("no writer named for %s and no value yet: making the first one", self.ref)
            if self.rotator is None:
                self.rotator = SecretRotator(
                    self.ref.name,
                    self.spec,
                    self.store,
                    self.files,
                    settings=self.settings,
                    metrics=self.metrics,
                    clock=self.clock,
                    writer_id=f"{self.env.pod_namespace}/{self.env.pod_name}",
                    apply_hook=self.apply_hook,
                    reloader=self.reloader,
                )
                self.store.on_request = self.rotator.request_rotation
            self.mirror.forget()
            self._engine = asyncio.ensure_future(
                _retrying(
                    f"rotate {self.ref}",
                    self._run_engine,
                    self.settings,
                    self.metrics.api_denied.labels(self.ref.name).inc,
                )
            )
        elif not (me and self.spec is not None) and self.writing:
            log.info("writer of %s: %s, not this pod", self.ref, self.writer or "none named")
            await self._stop_engine()
            if self.latest is not None:
                self.mirror.show(self.latest)

    async def _run_engine(self) -> None:
        rotator = self.rotator
        assert rotator is not None
        refs = rotator.spec.external_stores
        rotator.external = (
            await ExternalStores.load(
                self.kube, self.ref, refs, rotator.writer_id, self.store_factory
            )
            if refs
            else None
        )
        rotator.target = self._target(rotator.spec)
        try:
            await rotator.run()
        finally:
            if rotator.target is not None:
                await rotator.target.close()

    def _target(self, spec: RotatingSecretSpec) -> Target | None:
        if spec.target is None:
            return None
        pg = spec.target.postgres
        admin = kube_admin(self.kube, self.ref.namespace, pg.admin) if pg is not None else None
        return build_target(self.ref.name, spec.target, admin, self.settings.hook_timeout)

    async def _stop_engine(self) -> None:
        task, self._engine = self._engine, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


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
        await _retrying(
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
