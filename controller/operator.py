"""The controller: shared state (settings, the API edge, the ACL backend, metrics, the clock and
the index) and one collaborator per concern, wired here. Every decision is a call into
:mod:`controller.decide`.

Flow: kopf ``on.event`` handlers only update the index (:class:`~controller.index.ObjectIntake`,
:class:`~controller.intake.Intake`) and mark the affected RotatingSecrets dirty; the worker
(:class:`~controller.queue.WorkQueue`) reconciles dirty secrets concurrently, one at a time per
secret (:class:`~controller.reconcile.Reconciler`); the ACL loop (:class:`~controller.aclsync.
AclSync`) reads the ACL every ``acl_poll`` (sooner when a workload asks for something new),
records new requests, and marks every secret dirty (a periodic resync).

=============== =========================================== ==================================
attribute       concern                                     module
=============== =========================================== ==================================
``index``       what is known of the cluster                :mod:`controller.index`
``objects``     RotatingSecrets, ExternalStores, Secrets in :mod:`controller.index`
``intake``      pods and workloads in, uninjected pods      :mod:`controller.intake`
``queue``       dirty secrets, workers, every requeue       :mod:`controller.queue`
``aclsync``     the ACL in use, its staleness, requests     :mod:`controller.aclsync`
``stores``      ExternalStore checks and the publish hold   :mod:`controller.stores`
``reconciler``  one RotatingSecret                          :mod:`controller.reconcile`
``rbac``        Roles and RoleBindings                      :mod:`controller.rbac`
``views``       RO views (the fan-out)                      :mod:`controller.views`
``status``      the status and failure Events               :mod:`controller.statuswriter`
``events``      core/v1 Events                              :mod:`controller.events`
``restarter``   pods admitted without injection             :mod:`controller.restart`
``env_restarts`` workloads reading a changed secret as env  :mod:`controller.envrestart`
=============== =========================================== ==================================

The methods below are the controller's face to kopf's handlers, the runner and tests; each is
one call into the collaborator that owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from controller import certsync, gauges
from controller.aclsync import AclSync
from controller.decide import Staleness
from controller.envrestart import EnvRestarts
from controller.events import EventRecorder
from controller.index import Index, ObjectIntake
from controller.kube import Kube
from controller.metrics import Metrics
from controller.model import PodInfo, RotatingSecretObs, Want
from controller.queue import DEFAULT_CONCURRENCY, Requeue, WorkQueue
from controller.rbac import RbacWriter
from controller.reconcile import Reconciler
from controller.restart import Restarter
from controller.statuswriter import StatusWriter
from controller.stores import StoreChecks
from controller.views import ViewWriter
from rotor.acl import AclBackend, AclSnapshot
from rotor.names import SecretRef
from rotor.settings.controller import ControllerSettings

if TYPE_CHECKING:
    from controller.intake import Intake


class Controller:
    def __init__(
        self,
        settings: ControllerSettings,
        kube: Kube,
        backend: AclBackend,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.backend = backend
        self.metrics = metrics
        self.clock = clock
        self.index = Index()
        self.queue = WorkQueue(concurrency)
        self.objects = ObjectIntake(self)
        self.aclsync = AclSync(self)
        self.stores = StoreChecks(self)
        self.reconciler = Reconciler(self)
        self.rbac = RbacWriter(self)
        self.views = ViewWriter(self)
        self.status = StatusWriter(self)
        self.events = EventRecorder(self)
        self.restarter = Restarter(self)
        self.env_restarts = EnvRestarts(self)
        self.vault_source: Any = None
        """The audit-receiver client (:class:`controller.vaultsource.VaultSource`), if on."""
        self.intake: Intake | None = None
        """Pods and workloads in, and the finder of uninjected pods (set by the runner)."""

    # -- intake (kopf event handlers call these; no I/O) -----------------------------------------
    def mark(self, refs: Iterable[SecretRef]) -> None:
        self.queue.mark(refs)

    def on_rotating_secret(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        self.objects.on_rotating_secret(kind, obj)

    def on_external_store(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        self.objects.on_external_store(kind, obj)

    def on_secret(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        self.objects.on_secret(kind, obj)

    def set_wants(self, key: tuple[str, str, str], wants: tuple[Want, ...]) -> None:
        self.objects.set_wants(key, wants)

    # -- the ACL -------------------------------------------------------------------------------
    @property
    def acl(self) -> AclSnapshot | None:
        return self.aclsync.acl

    @property
    def acl_failing(self) -> bool:
        return self.aclsync.acl_failing

    @property
    def acl_error(self) -> str:
        return self.aclsync.acl_error

    def staleness(self) -> Staleness:
        return self.aclsync.staleness()

    async def sync_acl(self) -> None:
        await self.aclsync.sync_acl()

    # -- work ------------------------------------------------------------------------------------
    def spawn(self, coro: Any) -> None:
        self.queue.spawn(coro)

    async def reconcile(self, ref: SecretRef) -> Requeue | None:
        return await self.reconciler.reconcile(ref)

    async def seed_rbac(self) -> None:
        await self.rbac.seed()

    async def event(
        self, obs: RotatingSecretObs, reason: str, message: str, type_: str = "Warning"
    ) -> None:
        await self.events.event(obs, reason, message, type_)

    async def restart_uninjected(self, pod: PodInfo) -> None:
        await self.restarter.restart_uninjected(pod)

    # -- loops (the runner starts them while this replica leads) ---------------------------------
    async def worker(self) -> None:
        await self.queue.worker(self.reconciler.run_one)

    async def acl_loop(self) -> None:
        await self.aclsync.loop()

    async def store_loop(self) -> None:
        await self.stores.loop()

    async def gauge_loop(self, every: float = 5.0) -> None:
        await gauges.gauge_loop(self.index, self.metrics, every)

    async def cert_loop(self, every: float = certsync.CERT_POLL) -> None:
        await certsync.cert_loop(self.kube, self.settings, self.clock, self.metrics, every)

    async def close(self) -> None:
        await self.queue.close()
