"""The writer's side of in-cluster mode: :class:`RwSecret` (the rotation engine on the source
Secret, with its external stores and target), loaded by :mod:`agent.incluster` only for a pod
that has RW secrets.

An RO pod (most pods: every consumer) only mirrors its views, so it never imports this module,
nor the engine, the generators, the spec types, the targets or the store protocol behind it:
about 0.7 MiB of resident memory in every reader (bench/agent_kube_client.py;
tests/agent/test_footprint.py keeps it so). See :mod:`agent.incluster` for what the writer does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.engine import Clock, SecretRotator
from agent.files import AtomicWriter
from agent.hooks import ApplyHook, Reloader
from agent.incluster import Mirror, retrying
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
from rotor.layout import ANN_POSTGRES_ADMIN_FOR, SecretState, checksum
from rotor.logs import register_secret
from rotor.names import SecretRef
from rotor.protocol import plan_store_write
from rotor.settings.agent import AgentSettings
from rotor.spec import ExternalStoreRef, ExternalStoreSpec, PostgresAdmin, RotatingSecretSpec

log = logging.getLogger("rotor.agent")


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
                retrying(
                    f"follow RotatingSecret {self.ref}",
                    self._follow_spec,
                    self.settings,
                    self.metrics.api_denied.labels(self.ref.name).inc,
                ),
                retrying(
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
                retrying(
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
