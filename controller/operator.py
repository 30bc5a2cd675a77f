"""The controller's I/O: an in-memory index fed by kopf watch events, a reconcile worker, the ACL
sync loop and the restarter. Every decision is a call into :mod:`controller.decide`.

Flow: kopf ``on.event`` handlers only update the index (:class:`Index`) and mark the affected
RotatingSecrets dirty; the worker reconciles dirty secrets concurrently (one at a time per
secret); the ACL loop reads the ACL every ``acl_poll`` (sooner when a workload asks for something
new), records new requests, and marks every secret dirty (a periodic resync).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from controller import aclrequests, decide, ownerchain
from controller.certsync import CERT_POLL, sync_certs
from controller.kube import ForbiddenError, Kube, Obj, path
from controller.metrics import Metrics
from controller.model import (
    FINALIZER,
    LABEL_SOURCE,
    OwnerRef,
    PodInfo,
    RotatingSecretObs,
    SourceObs,
    ViewObs,
    Want,
    controller_owner,
    is_managed,
    meta,
    read_pod,
    read_rotating_secret,
    read_source,
    read_view,
    source_label,
    status_digest,
)
from rotor import API, backoff
from rotor import status as st
from rotor.acl import AclBackend, AclSnapshot, Grant, SkippedEntry
from rotor.errors import (
    ConflictError,
    InvalidSpec,
    LoginFailed,
    NotFoundError,
    RetryableError,
    RotorError,
)
from rotor.external import StoreCheck
from rotor.layout import (
    ANN_PHASE,
    ANN_ROTATE_REQUESTED,
    ANN_VERSION,
    LABEL_MANAGED_BY,
    LABEL_SECRET,
    LABEL_VIEW_OF,
    MANAGED_BY,
    format_time,
)
from rotor.names import SecretRef
from rotor.settings.controller import ControllerSettings
from rotor.spec import ExternalStoreSpec

if TYPE_CHECKING:
    from controller.intake import Intake

log = logging.getLogger("rotor.controller")

RBAC = "rbac.authorization.k8s.io/v1"
RETRY_DELAY = 2.0
FORBIDDEN_DELAY = 30.0  # a missing permission is fixed by a person: no tight retry loop
CONFLICT_DELAY = 0.5
HOLD_RETRY_MIN = 1.0
HOLD_RETRY_MAX = 60.0
DEFAULT_CONCURRENCY = 64
COMPONENT = "rotor-controller"


def _older(resource_version: str, than: RotatingSecretObs) -> bool:
    """resourceVersions are opaque to clients, but every API server today hands out etcd
    revisions (integers); when both are integers an older one is not applied over a newer."""
    return _older_rv(resource_version, than.resource_version)


def _older_rv(resource_version: str, than: str) -> bool:
    if resource_version.isdigit() and than.isdigit():
        return int(resource_version) < int(than)
    return False


@dataclass
class Index:
    """What the controller knows of the cluster, kept small (records, not bodies)."""

    rsecs: dict[SecretRef, RotatingSecretObs] = field(default_factory=dict)
    sources: dict[SecretRef, SourceObs] = field(default_factory=dict)
    source_keys: dict[SecretRef, tuple[str, ...]] = field(default_factory=dict)
    views: dict[str, dict[str, ViewObs]] = field(default_factory=dict)
    """source label -> consumer namespace -> view."""
    view_keys: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    pods: dict[tuple[str, str], PodInfo] = field(default_factory=dict)
    wants: dict[tuple[str, str, str], tuple[Want, ...]] = field(default_factory=dict)
    """(kind, namespace, name) of a workload or pod -> what it asks for."""
    wants_by_secret: dict[SecretRef, set[tuple[str, str, str]]] = field(default_factory=dict)
    stores: dict[tuple[str, str], ExternalStoreSpec | InvalidSpec] = field(default_factory=dict)
    """(namespace, name) of an ExternalStore -> its spec, or why it is invalid."""

    def all_wants(self) -> set[Want]:
        return {w for ws in self.wants.values() for w in ws}

    def wants_for(self, ref: SecretRef) -> set[Want]:
        out: set[Want] = set()
        for key in self.wants_by_secret.get(ref, ()):
            out.update(w for w in self.wants.get(key, ()) if w.secret == ref)
        return out


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
        self.acl: AclSnapshot | None = None
        self.acl_ok_at: float | None = None
        self.acl_failing = False
        self.acl_error = ""
        self._skipped_reported: set[SkippedEntry] = set()  # warned about and Evented once
        self.rbac: dict[str, dict[tuple[str, str, str], str]] = {}
        """source label -> (kind, namespace, name) -> digest of what was applied."""
        self.dirty: set[SecretRef] = set()
        self.inflight: set[SecretRef] = set()
        self.last_restart: dict[tuple[str, str, str], float] = {}
        self.reported: dict[SecretRef, set[tuple[str, str, str]]] = {}
        """Failures already reported by an Event (watch events may lag behind our writes)."""
        self._secret_rvs: dict[tuple[str, str], tuple[str, str]] = {}
        """(namespace, name) of a source Secret or view -> (uid, resourceVersion) last applied."""
        self.concurrency = concurrency
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._acl_wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self._readers: dict[tuple[str, str], Any] = {}
        self._rbac_grants: dict[
            SecretRef, tuple[frozenset[Grant], frozenset[str], frozenset[str]]
        ] = {}
        """The grants and external store names whose RBAC was last applied, per secret."""
        self._synced: dict[SecretRef, str] = {}
        """The checksum every external store of a secret was last seen to hold."""
        self._held_reported: tuple[str, ...] = ()
        """The principals whose asks a cap held back, as last logged."""
        self._expiry_timer: dict[SecretRef, float | None] = {}
        """The previous-value expiry a reconcile is already scheduled for, per secret."""
        self._hold_backoff: dict[SecretRef, int] = {}  # holds in a row
        """The next retry delay of a fan-out held by an external store (doubles up to a cap)."""
        self._store_meta: dict[tuple[str, str], tuple[str, str, list[Any]]] = {}
        """ExternalStore -> (uid, spec digest, observed conditions)."""
        self._store_checked: dict[tuple[str, str], tuple[str, float]] = {}
        """ExternalStore -> (spec digest checked, when)."""
        self._store_ready: dict[tuple[str, str], StoreCheck] = {}
        self._store_wake = asyncio.Event()
        self.vault_source: Any = None
        """The audit-receiver client (:class:`controller.vaultsource.VaultSource`), if on."""
        self.intake: Intake | None = None
        """Pods and workloads in, and the finder of uninjected pods (set by the runner)."""

    # -- intake (kopf event handlers call these; no I/O) -----------------------------------------
    def mark(self, refs: Iterable[SecretRef]) -> None:
        self.dirty.update(refs)
        self._wake.set()

    def on_rotating_secret(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        m = meta(obj)
        ref = SecretRef(str(m.get("namespace", "")), str(m.get("name", "")))
        if kind == "DELETED":
            self.index.rsecs.pop(ref, None)
            self.reported.pop(ref, None)
        else:
            new = read_rotating_secret(obj)
            old = self.index.rsecs.get(ref)
            if old is not None and old.uid == new.uid and _older(new.resource_version, old):
                return  # a watch event older than what this controller just wrote
            self.index.rsecs[ref] = new
            if old is None and new.spec is not None:
                self._acl_wake.set()  # register the new secret with the ACL soon
        self.mark([ref])

    def on_external_store(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        m = meta(obj)
        key = (str(m.get("namespace", "")), str(m.get("name", "")))
        if kind == "DELETED":
            self._readers.pop(key, None)
            self.index.stores.pop(key, None)
            self._store_meta.pop(key, None)
            self._store_checked.pop(key, None)
            self._store_ready.pop(key, None)
            with contextlib.suppress(KeyError):
                self.metrics.store_ready.remove(*key)
        else:
            spec_digest = json.dumps(obj.get("spec"), sort_keys=True)
            status = obj.get("status") or {}
            before = self._store_meta.get(key)
            if before is not None and before[1] != spec_digest:
                self._readers.pop(key, None)  # a changed spec; our status writes keep it
            self._store_meta[key] = (
                str(m.get("uid") or ""),
                spec_digest,
                list(status.get("conditions") or []),
            )
            if self._store_checked.get(key, ("", 0.0))[0] != spec_digest:
                self._store_wake.set()  # a new or changed store: check it now
            try:
                self.index.stores[key] = ExternalStoreSpec.from_dict(obj.get("spec"))
            except InvalidSpec as e:
                self.index.stores[key] = e
        self.mark(
            r
            for r, o in self.index.rsecs.items()
            if o.spec and any((r.namespace, x.store) == key for x in o.spec.external_stores)
        )

    def on_secret(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        if not is_managed(obj):
            return
        m = meta(obj)
        labels = m.get("labels") or {}
        ns, name = str(m.get("namespace", "")), str(m.get("name", ""))
        # The answer to this controller's own patch (applied here too) can arrive after the watch
        # has brought a newer version (e.g. the writer's commit): applying it would roll the
        # index back, and with no further event nothing would be fanned out until the next
        # change. The soak (bench/soak.py) found such rotations held until the next one.
        seen = self._secret_rvs.get((ns, name))
        uid, rv = str(m.get("uid") or ""), str(m.get("resourceVersion") or "")
        if kind == "DELETED":
            self._secret_rvs.pop((ns, name), None)
        elif seen is not None and seen[0] == uid and _older_rv(rv, seen[1]):
            return
        else:
            self._secret_rvs[(ns, name)] = (uid, rv)
        if labels.get(LABEL_VIEW_OF):
            label = str(labels.get(LABEL_SOURCE) or labels[LABEL_VIEW_OF])
            views = self.index.views.setdefault(label, {})
            if kind == "DELETED":
                views.pop(ns, None)
                self.index.view_keys.pop((label, ns), None)
            else:
                views[ns] = read_view(obj)
                self.index.view_keys[(label, ns)] = tuple((obj.get("data") or {}).keys())
            self.mark(r for r in self.index.rsecs if source_label(r) == label)
        elif labels.get(LABEL_SECRET):
            ref = SecretRef(ns, name)
            if kind == "DELETED":
                self.index.sources.pop(ref, None)
                self.index.source_keys.pop(ref, None)
            else:
                owner = self.index.rsecs.get(ref)
                self.index.sources[ref] = read_source(obj, owner.uid if owner else None)
                self.index.source_keys[ref] = tuple((obj.get("data") or {}).keys())
            self.mark([ref])

    def set_wants(self, key: tuple[str, str, str], wants: tuple[Want, ...]) -> None:
        """What a workload or pod asks for (pods and workloads come in through
        :class:`controller.intake.Intake`)."""
        old = self.index.wants.get(key, ())
        if wants:
            self.index.wants[key] = wants
        else:
            self.index.wants.pop(key, None)
        for w in old:
            self.index.wants_by_secret.get(w.secret, set()).discard(key)
        for w in wants:
            self.index.wants_by_secret.setdefault(w.secret, set()).add(key)
        if set(wants) - set(old):
            self._acl_wake.set()  # record the new request soon
        self.mark({w.secret for w in (*old, *wants)})

    # -- loops -----------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retry_later(self, ref: SecretRef, delay: float = RETRY_DELAY) -> None:
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, lambda: self.mark([ref]))
        self._retry_handles.add(handle)

    async def worker(self) -> None:
        """Reconcile dirty secrets, concurrently, one reconcile per secret at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            for ref in list(self.dirty):
                if ref in self.inflight:
                    continue
                if len(self.inflight) >= self.concurrency:
                    break  # a finishing reconcile wakes the worker again
                self.dirty.discard(ref)
                self.inflight.add(ref)
                self._spawn(self._run_one(ref))

    async def _run_one(self, ref: SecretRef) -> None:
        try:
            async with self._sem:
                await self.reconcile(ref)
            self.metrics.reconciles.labels("ok").inc()
        except ConflictError as e:  # read a stale copy: the watch brings the new one; retry
            self.metrics.reconciles.labels("conflict").inc()
            log.info("reconcile %s: %s (retrying)", ref, e)
            self._retry_later(ref, CONFLICT_DELAY)
        except ForbiddenError as e:
            self.metrics.reconciles.labels("error").inc()
            self.metrics.errors.labels("forbidden").inc()
            log.error("reconcile %s: %s; retrying in %.0fs", ref, e, FORBIDDEN_DELAY)
            obs = self.index.rsecs.get(ref)
            if obs is not None:
                await self.report_forbidden(obs, str(e))
            self._retry_later(ref, FORBIDDEN_DELAY)
        except RotorError as e:
            self.metrics.reconciles.labels("error").inc()
            self.metrics.errors.labels("api").inc()
            log.warning("reconcile %s: %s", ref, e)
            obs = self.index.rsecs.get(ref)
            if obs is not None:
                with contextlib.suppress(RotorError):
                    await self.event(obs, "ReconcileFailed", str(e))
            self._retry_later(ref, getattr(e, "delay", None) or RETRY_DELAY)
        except Exception:
            self.metrics.reconciles.labels("error").inc()
            log.exception("reconcile %s failed", ref)
            self._retry_later(ref)
        finally:
            self.inflight.discard(ref)
            if self.dirty:
                self._wake.set()

    async def acl_loop(self) -> None:
        """Read the ACL every ``acl_poll`` (sooner when woken); the writes it leads to (new
        secrets, new requests) run beside the loop, one batch at a time, so a slow or large write
        never delays the next read: a revocation takes effect within one poll."""
        writes: asyncio.Task[None] | None = None
        try:
            while True:
                snap = await self.read_acl()
                if snap is not None and (writes is None or writes.done()):
                    writes = asyncio.create_task(self.record_acl_requests(snap))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._acl_wake.wait(), timeout=self.settings.acl_poll)
                self._acl_wake.clear()
        finally:
            if writes is not None:
                writes.cancel()

    async def sync_acl(self) -> None:
        """One whole round: read and apply the ACL, then register secrets and record the
        requests it lacks (and read it again if that changed anything)."""
        snap = await self.read_acl()
        if snap is not None:
            await self.record_acl_requests(snap)

    async def read_acl(self) -> AclSnapshot | None:
        """Read the ACL and apply it at once; on failure keep the last good ACL (``None``).
        Every secret is resynced against what is then known."""
        start = time.monotonic()
        snap: AclSnapshot | None = None
        try:
            snap = await self.backend.snapshot()
            await self._report_skipped(snap)
            self._install_acl(snap)
        except Exception as e:  # any failure: keep the last good ACL, report staleness
            self.acl_failing = True
            self.acl_error = str(e) or type(e).__name__
            self.metrics.errors.labels("acl").inc()
            log.warning("ACL sync failed (keeping the last good ACL): %s", self.acl_error)
        finally:
            self.metrics.acl_sync_seconds.observe(time.monotonic() - start)
        stale = self.staleness()
        self.metrics.acl_stale.set(1 if stale.stale else 0)
        self.metrics.acl_staleness.set(0 if stale.age == float("inf") else stale.age)
        self._grant_metrics()
        self.mark(self.index.rsecs)
        return snap

    async def record_acl_requests(self, snap: AclSnapshot) -> None:
        """Register the secrets ``snap`` lacks and record the requests it lacks, bounded and in
        one batch (:mod:`controller.aclrequests`); read the ACL again when anything changed."""
        try:
            changed = False
            for ref, obs in list(self.index.rsecs.items()):
                if obs.spec is not None and not obs.deleting and ref not in snap.secrets:
                    await self.backend.register_secret(ref)
                    changed = True
            known = snap.secrets | {r for r, o in self.index.rsecs.items() if o.spec is not None}
            chosen = aclrequests.to_record(snap, self.index.all_wants(), known)
            if chosen.held_back and chosen.principals_held != self._held_reported:
                log.warning(  # once per change of who is held back, not every poll
                    "%d access requests not recorded (over a cap of pending requests per "
                    "principal, namespace or sync) from %s",
                    chosen.held_back,
                    ", ".join(chosen.principals_held[:5])
                    + (" and others" if len(chosen.principals_held) > 5 else ""),
                )
            self._held_reported = chosen.principals_held
            changed = await aclrequests.record(self.backend, chosen.record) or changed
        except Exception as e:  # the ACL read is still good; the next round tries again
            self.metrics.errors.labels("acl").inc()
            log.warning("recording ACL requests failed: %s", str(e) or type(e).__name__)
            return
        if changed:
            await self.read_acl()

    async def _report_skipped(self, snap: AclSnapshot) -> None:
        """Entries the backend left out as unusable: a metric for each, and once each a
        warning and an Event on the RotatingSecret it names (when there is one); the
        AccessGranted condition of that secret names them too (decide.secret_status)."""
        self.metrics.acl_skipped.clear()
        for e in snap.skipped:
            self.metrics.acl_skipped.labels(e.where, e.secret).set(1)
        for e in sorted(set(snap.skipped) - self._skipped_reported):
            log.warning("ACL entry left out (the rest of the ACL applies): %s", e)
            try:
                obs = self.index.rsecs.get(SecretRef.parse(e.secret, None, "secret"))
            except InvalidSpec:
                obs = None
            if obs is not None:
                with contextlib.suppress(RotorError):
                    await self.event(obs, st.R_ACL_ENTRY_SKIPPED, str(e))
        self._skipped_reported = set(snap.skipped)

    def _install_acl(self, snap: AclSnapshot) -> None:
        self.acl = snap
        self.acl_ok_at = self.clock()
        self.acl_failing = False
        self.acl_error = ""

    def _grant_metrics(self) -> None:
        acl = self.acl
        counts = {(s, m): 0 for s in ("granted", "pending", "denied") for m in ("rw", "ro")}
        if acl is not None:
            for g in acl.grants:
                counts[("granted", g.mode)] += 1
            for r in acl.requests:
                counts[(r.state, r.mode)] = counts.get((r.state, r.mode), 0) + 1
        for (s, m), n in counts.items():
            self.metrics.grants.labels(s, m).set(n)

    def staleness(self) -> decide.Staleness:
        return decide.staleness(self.clock(), self.acl_ok_at, self.acl_failing, self.settings)

    # -- reconcile -------------------------------------------------------------------------------
    async def reconcile(self, ref: SecretRef) -> None:
        obs = self.index.rsecs.get(ref)
        if obs is None:
            await self.cleanup(ref)
            return
        url = path(API, "rotatingsecrets", ref.namespace, ref.name)
        if obs.deleting:
            await self.cleanup(ref)
            if FINALIZER in obs.finalizers:
                await self.kube.apatch(
                    url,
                    {
                        "metadata": {
                            "resourceVersion": obs.resource_version,
                            "finalizers": [f for f in obs.finalizers if f != FINALIZER],
                        }
                    },
                )
            return
        if FINALIZER not in obs.finalizers:
            # the whole list is replaced: the resourceVersion guards finalizers added meanwhile
            result = await self.kube.apatch(
                url,
                {
                    "metadata": {
                        "resourceVersion": obs.resource_version,
                        "finalizers": [*obs.finalizers, FINALIZER],
                    }
                },
            )
            self.on_rotating_secret("MODIFIED", result)
            obs = self.index.rsecs.get(ref) or obs
        if obs.spec is None:
            self.metrics.errors.labels("spec").inc()
            status = decide.secret_status(
                obs, self.index.sources.get(ref), None, (), None, self.staleness(), False
            )
            await self.write_status(obs, status)
            return

        source = await self.ensure_source(obs)
        stale = self.staleness()
        acl_known = self.acl is not None and not stale.revoke
        grants = decide.effective_grants(self.acl, stale)
        label = source_label(ref)
        views = dict(self.index.views.get(label, {}))
        writer = decide.choose_writer(
            ref,
            (p for p in self.index.pods.values() if p.namespace == ref.namespace),
            grants,
            obs.status.writer,
        )
        plan: decide.FanoutPlan | None = None
        stores = await self.check_stores(obs, source)
        if self.acl is not None or stale.revoke:  # never act on an ACL not read yet
            mine = frozenset(g for g in grants if g.secret == ref)
            names = frozenset(x.store for x in obs.spec.external_stores)
            admins = decide.admin_secrets(obs.spec)
            if self._rbac_grants.get(ref) != (mine, names, admins):  # RBAC depends on these only
                await self.apply_rbac(ref, decide.desired_rbac(ref, mine, names, admins))
                self._rbac_grants[ref] = (mine, names, admins)
            granted = decide.granted_ro_namespaces(ref, mine)
            shown = decide.for_views(source, self.clock())  # an expired previous is not shown
            plan = decide.plan_fanout(shown, granted, views, stores.state)
            views = await self.fanout(ref, shown, plan, views)
            expiry = decide.previous_expiry_in(shown, self.clock())
            state = shown.state if shown else None
            at = state.previous_expires if state else None
            if expiry is not None and granted and self._expiry_timer.get(ref) != at:
                self._expiry_timer[ref] = at  # one timer per expiry: reconcile again then
                self._retry_later(ref, expiry + 0.05)
        if stores.state in ("behind", "unavailable") or (
            stores.state == "unverified" and source is not None and source.publishable
        ):
            # held until the store holds the version: retry with backoff (1 s doubling to 60 s)
            held = self._hold_backoff[ref] = self._hold_backoff.get(ref, 0) + 1
            self._retry_later(ref, backoff.delay(held, HOLD_RETRY_MIN, HOLD_RETRY_MAX))
        else:
            self._hold_backoff.pop(ref, None)
        consumers = decide.consumer_statuses(
            ref, self.index.wants_for(ref), grants, self.acl, source, views
        )
        skipped = [e for e in (self.acl.skipped if self.acl else ()) if e.secret == str(ref)]
        status = decide.secret_status(
            obs, source, writer, consumers, plan, stale, acl_known, stores, skipped
        )
        await self.write_status(obs, status)

    # -- ExternalStore Ready ---------------------------------------------------------------------
    async def store_loop(self) -> None:
        """Check each ExternalStore when it appears or its spec changes, and every
        ``store_check_interval``; the result is its ``Ready`` condition."""
        while True:
            now = self.clock()
            due = [
                key
                for key, (_uid, digest, _c) in list(self._store_meta.items())
                if self._store_checked.get(key, ("", 0.0))[0] != digest
                or now - self._store_checked[key][1] >= self.settings.store_check_interval
            ]
            if due:
                await asyncio.gather(*(self.check_store(k) for k in due), return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._store_wake.wait(), timeout=min(self.settings.store_check_interval, 5.0)
                )
            self._store_wake.clear()

    async def check_store(self, key: tuple[str, str]) -> StoreCheck:
        meta_ = self._store_meta.get(key)
        found = self.index.stores.get(key)
        if meta_ is None or found is None:
            return StoreCheck(False, "Invalid", "the ExternalStore is gone")
        uid, digest, observed = meta_
        if isinstance(found, InvalidSpec):
            check = StoreCheck(False, "Invalid", str(found))
        else:
            try:
                reader = await self._new_reader(key, found)
                check = await reader.check()
            except RotorError as e:  # login refused (or no token), or the token Secret unreadable
                auth = isinstance(e, LoginFailed)
                check = StoreCheck(False, "AuthFailed" if auth else "Unreachable", str(e))
            else:
                if check.ready:  # the fresh token serves the fan-out checks too
                    self._readers[key] = reader
        self._store_checked[key] = (digest, self.clock())
        previous = self._store_ready.get(key)
        self._store_ready[key] = check
        self.metrics.store_ready.labels(*key).set(1 if check.ready else 0)
        if not check.ready:
            self.metrics.errors.labels("store").inc()
            if previous is None or (previous.ready, previous.reason) != (False, check.reason):
                log.warning("ExternalStore %s/%s: %s: %s", *key, check.reason, check.message)
                with contextlib.suppress(RotorError):
                    await self._post_event(
                        key[0], "ExternalStore", key[1], uid, check.reason, check.message
                    )
        cond = st.Condition(
            "Ready", "True" if check.ready else "False", check.reason, check.message
        )
        conditions = st.merge_conditions(observed, [cond], self.clock())
        if conditions != observed:
            url = path(API, "externalstores", key[0], key[1], "status")
            with contextlib.suppress(NotFoundError):
                await self.kube.apatch(url, {"status": {"conditions": conditions}})
                self._store_meta[key] = (uid, digest, conditions)
        if previous is None or previous.ready != check.ready:
            self.mark(self._secrets_using(key))
        return check

    def _secrets_using(self, key: tuple[str, str]) -> list[SecretRef]:
        return [
            r
            for r, o in self.index.rsecs.items()
            if o.spec and any((r.namespace, x.store) == key for x in o.spec.external_stores)
        ]

    async def check_stores(
        self, obs: RotatingSecretObs, source: SourceObs | None
    ) -> decide.StoreSync:
        """Does every external store of the secret hold its committed version? Checked (by
        checksum of the values read back) once per committed version; until every store holds
        it, nothing is published."""
        spec = obs.spec
        if spec is None or not spec.external_stores:
            return decide.StoreSync("none")
        if source is None or not source.publishable:
            return decide.StoreSync("unverified", "no committed version to check yet")
        assert source.state is not None
        digest = source.state.checksum
        where = ", ".join(f"{s.store}:{s.path}" for s in spec.external_stores)
        if self._synced.get(obs.ref) == digest:
            return decide.StoreSync("synced", f"{where} hold version {source.state.version}")
        for ref in spec.external_stores:
            key = (obs.ref.namespace, ref.store)
            found = self.index.stores.get(key)
            if found is None:
                return decide.StoreSync(
                    "unverified", f"ExternalStore {key[0]}/{key[1]} does not exist"
                )
            if isinstance(found, InvalidSpec):
                return decide.StoreSync("unverified", f"ExternalStore {key[0]}/{key[1]}: {found}")
            try:
                reader = await self._reader(key, found)
                held = await reader.store_holds(ref.path, source.state.version, digest)
            except RotorError as e:
                self.metrics.errors.labels("store").inc()
                return decide.StoreSync("unavailable", f"{ref.store}:{ref.path}: {e}")
            if not held:
                return decide.StoreSync(
                    "behind",
                    f"{ref.store}:{ref.path} does not hold version {source.state.version}",
                )
        self._synced[obs.ref] = digest
        return decide.StoreSync("synced", f"{where} hold version {source.state.version}")

    async def _reader(self, key: tuple[str, str], spec: ExternalStoreSpec) -> Any:
        """A Vault reader per ExternalStore, kept until the store or its check changes."""
        reader = self._readers.get(key)
        if reader is None:
            reader = await self._new_reader(key, spec)
            self._readers[key] = reader
        return reader

    async def _new_reader(self, key: tuple[str, str], spec: ExternalStoreSpec) -> Any:
        """A reader with the token read now from the ExternalStore's Secret (its namespace), or
        Kubernetes auth with the controller's own service-account token (hvac is imported
        lazily: it is only needed here)."""
        from controller.vault import VaultReader

        token = None
        ref = spec.vault.auth.token_secret
        if ref is not None:
            secret = await self.kube.aget(path("v1", "secrets", key[0], ref.name)) or {}
            raw = (secret.get("data") or {}).get(ref.key)
            token = base64.b64decode(raw).decode().strip() if raw else None
        return VaultReader.from_spec(spec.vault, token=token)

    async def ensure_source(self, obs: RotatingSecretObs) -> SourceObs | None:
        """Create the source Secret (owned, labelled, no value yet) or repair its metadata, and
        pass a ``rotor.dev/rotate-now`` request on to the writer."""
        ref = obs.ref
        source = self.index.sources.get(ref)
        owner = {
            "apiVersion": API,
            "kind": "RotatingSecret",
            "name": ref.name,
            "uid": obs.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        labels = {LABEL_SECRET: ref.name, LABEL_MANAGED_BY: MANAGED_BY}
        url = path("v1", "secrets", ref.namespace, ref.name)
        if source is None:
            annotations = {ANN_VERSION: "0", ANN_PHASE: "committed"}
            if obs.rotate_now:
                annotations[ANN_ROTATE_REQUESTED] = obs.rotate_now
            body: Obj = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": ref.name,
                    "namespace": ref.namespace,
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [owner],
                },
            }
            try:
                created = await self.kube.acreate(path("v1", "secrets", ref.namespace), body)
            except RetryableError:  # exists already (we have not seen it yet): adopt it below
                created = await self.kube.aget(url) or {}
                patch: Obj = {"metadata": {"labels": labels, "ownerReferences": [owner]}}
                created = await self.kube.apatch(url, patch)
            self.on_secret("ADDED", created)
            return self.index.sources.get(ref)
        patch = {}
        if not source.owned or not source.labelled:
            patch["metadata"] = {"labels": labels, "ownerReferences": [owner]}
        if obs.rotate_now and source.rotate_requested != obs.rotate_now:
            patch.setdefault("metadata", {})["annotations"] = {ANN_ROTATE_REQUESTED: obs.rotate_now}
        if patch:
            self.on_secret("MODIFIED", await self.kube.apatch(url, patch))
        return self.index.sources.get(ref)

    async def apply_rbac(self, ref: SecretRef, desired: list[Obj]) -> None:
        label = source_label(ref)
        applied = self.rbac.setdefault(label, {})
        want: dict[tuple[str, str, str], Obj] = {}
        for obj in desired:
            m = obj["metadata"]
            want[(obj["kind"], m["namespace"], m["name"])] = obj
        for key, obj in want.items():
            digest = json.dumps(obj, sort_keys=True)
            if applied.get(key) == digest:
                continue
            plural = "roles" if key[0] == "Role" else "rolebindings"
            await self.kube.aapply(path(RBAC, plural, key[1]), obj)
            applied[key] = digest
        for key in [k for k in applied if k not in want]:
            plural = "roles" if key[0] == "Role" else "rolebindings"
            await self.kube.adelete(path(RBAC, plural, key[1], key[2]))
            del applied[key]

    async def seed_rbac(self) -> None:
        """Learn the Roles and RoleBindings made before (by an earlier leader), so grants revoked
        meanwhile are removed too. Filtered on the client side as well. Refused (the ClusterRole
        lacks the right): logged and counted, and the controller goes on - each reconcile then
        reports the missing permission on its RotatingSecret."""
        for kind, plural in (("Role", "roles"), ("RoleBinding", "rolebindings")):
            try:
                found = await self.kube.aitems(
                    path(RBAC, plural), f"{LABEL_MANAGED_BY}={MANAGED_BY}"
                )
            except ForbiddenError as e:
                self.metrics.errors.labels("forbidden").inc()
                log.error("cannot learn the %s made before: %s", plural, e)
                continue
            for obj in found:
                if not is_managed(obj):
                    continue
                m = meta(obj)
                label = str((m.get("labels") or {}).get(LABEL_SOURCE, ""))
                if label:
                    key = (kind, str(m.get("namespace")), str(m.get("name")))
                    self.rbac.setdefault(label, {})[key] = ""

    async def fanout(
        self,
        ref: SecretRef,
        source: SourceObs | None,
        plan: decide.FanoutPlan,
        views: dict[str, ViewObs],
    ) -> dict[str, ViewObs]:
        """Write the views in ``plan.upsert`` and delete those in ``plan.delete``, concurrently.
        Returns the views as they now are (for the status)."""
        if not plan.upsert and not plan.delete:
            return views
        start = time.monotonic()
        label = source_label(ref)
        state = source.state if source else None
        out = dict(views)

        async def upsert(ns: str) -> None:
            assert state is not None
            name = decide.view_body(ref, state, ns)["metadata"]["name"]
            url = path("v1", "secrets", ns, name)
            if ns in views:
                old = self.index.view_keys.get((label, ns), ())
                body = decide.view_patch(ref, state, ns, old)
                try:
                    result = await self.kube.apatch(url, body)
                except NotFoundError:
                    result = await self.kube.acreate(
                        path("v1", "secrets", ns), decide.view_body(ref, state, ns)
                    )
            else:
                result = await self.kube.aapply(
                    path("v1", "secrets", ns), decide.view_body(ref, state, ns)
                )
            self.on_secret("MODIFIED", result)
            out[ns] = read_view(result)
            self.metrics.views_written.inc()

        async def delete(ns: str) -> None:
            view = views[ns]
            await self.kube.adelete(path("v1", "secrets", ns, view.name))
            out.pop(ns, None)

        results = await asyncio.gather(
            *(upsert(ns) for ns in plan.upsert),
            *(delete(ns) for ns in plan.delete),
            return_exceptions=True,
        )
        self.metrics.fanout_seconds.observe(time.monotonic() - start)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self.metrics.errors.labels("fanout").inc(len(errors))
            raise errors[0]
        return out

    async def cleanup(self, ref: SecretRef) -> None:
        """Remove the views and the Roles/RoleBindings of a RotatingSecret that is going away.
        The source Secret goes with its owner (garbage collection)."""
        label = source_label(ref)
        await self.apply_rbac(ref, [])
        self._rbac_grants.pop(ref, None)
        views = self.index.views.get(label, {})
        for ns, view in list(views.items()):
            await self.kube.adelete(path("v1", "secrets", ns, view.name))
            views.pop(ns, None)

    async def write_status(self, obs: RotatingSecretObs, status: st.RotatingSecretStatus) -> None:
        observed = obs.status.condition_dicts()
        body = status.to_dict(observed, self.clock())
        reported = self.reported.setdefault(obs.ref, set())
        for c in decide.new_failures(observed, status.conditions):
            if (obs.uid, c.type, c.reason) in reported:
                continue
            reported.add((obs.uid, c.type, c.reason))
            with contextlib.suppress(RotorError):
                await self.event(obs, c.reason, f"{c.type}: {c.message}")
        failing = {(obs.uid, c.type, c.reason) for c in status.conditions if c.status != "True"}
        reported &= failing  # a failure that clears may be reported again when it returns
        if status_digest(body).digest == obs.status.digest:
            return
        url = path(API, "rotatingsecrets", obs.ref.namespace, obs.ref.name, "status")
        result = await self.kube.apatch(url, {"status": body})
        # remember what was written, so an unchanged status is not written again
        current = self.index.rsecs.get(obs.ref)
        if current is not None and current.uid == obs.uid:
            self.index.rsecs[obs.ref] = replace(
                current,
                status=status_digest(result.get("status") or body),
                resource_version=str(meta(result).get("resourceVersion") or ""),
            )

    async def report_forbidden(self, obs: RotatingSecretObs, message: str) -> None:
        """A refused API call: the condition ``Reconciled=False`` (reason ``Forbidden``, the
        message naming the permission) and an Event, each as far as the permissions allow. The
        next successful status write drops the condition again."""
        observed = [c for c in obs.status.condition_dicts() if c.get("type") != "Reconciled"]
        cond = st.Condition("Reconciled", "False", "Forbidden", message)
        conditions = [*observed, *st.merge_conditions([], [cond], self.clock())]
        url = path(API, "rotatingsecrets", obs.ref.namespace, obs.ref.name, "status")
        with contextlib.suppress(RotorError):
            await self.kube.apatch(url, {"status": {"conditions": conditions}})
        with contextlib.suppress(RotorError):
            await self.event(obs, "Forbidden", message)

    async def event(
        self, obs: RotatingSecretObs, reason: str, message: str, type_: str = "Warning"
    ) -> None:
        """A core/v1 Event on the RotatingSecret (names and reasons only, never a value)."""
        await self._post_event(
            obs.ref.namespace, "RotatingSecret", obs.ref.name, obs.uid, reason, message, type_
        )

    async def _post_event(
        self,
        namespace: str,
        kind: str,
        name: str,
        uid: str,
        reason: str,
        message: str,
        type_: str = "Warning",
    ) -> None:
        ts = format_time(self.clock())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": API,
                "kind": kind,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        await self.kube.acreate(path("v1", "events", namespace), body)

    # -- restarts --------------------------------------------------------------------------------
    async def restart_uninjected(self, pod: PodInfo) -> None:
        """Restart a pod admitted without the agent (the webhook was down) through its owner,
        once the owner chain checks out (:mod:`controller.ownerchain`)."""
        try:
            pod_obj = await self.kube.aget(path("v1", "pods", pod.namespace, pod.name))
            if pod_obj is None:
                return
            problem, rs_owner = await self._verified_owner(pod.namespace, pod_obj)
            if problem:
                self.metrics.restarts.labels("refused").inc()
                log.warning(
                    "not restarting anything for pod %s/%s (admitted without injection): %s",
                    pod.namespace,
                    pod.name,
                    problem,
                )
                return
            pod = read_pod(pod_obj)  # the copy whose owners were checked
            action = decide.restart_action(pod, rs_owner, self.settings.restart_method)
            if action.kind == "none":
                log.info("pod %s/%s not injected: %s", pod.namespace, pod.name, action.reason)
                return
            now = self.clock()
            last = self.last_restart.get(action.key)
            if not decide.may_restart(last, now, self.settings.restart_min_interval):
                return
            self.last_restart[action.key] = now
            url = path(action.api_version, action.plural, action.namespace, action.name)
            if action.kind == "patch-template":
                await self.kube.apatch(url, decide.restart_patch(now))
            elif action.kind == "evict-pod":
                await self.kube.acreate(
                    path("v1", "pods", action.namespace, action.name, "eviction"),
                    decide.eviction(action.namespace, action.name),
                )
            else:
                await self.kube.adelete(url)
            self.metrics.restarts.labels(action.kind).inc()
            log.info(
                "restarted %s %s/%s: pod %s was admitted without injection",
                action.plural,
                action.namespace,
                action.name,
                pod.name,
            )
        except RotorError as e:
            self.metrics.errors.labels("restart").inc()
            log.warning("restart for pod %s/%s: %s", pod.namespace, pod.name, e)

    async def _verified_owner(self, namespace: str, pod_obj: Obj) -> tuple[str, OwnerRef | None]:
        """(why the owner chain does not check out or "", the ReplicaSet's owner)."""
        if ownerchain.opted_out(pod_obj):
            return "it is labelled rotor.dev/inject=false (opted out of the webhook)", None
        ref = ownerchain.controller_ref(pod_obj)
        if ref is None:
            return "", None  # a bare pod: restart_action leaves it alone
        labels = ownerchain.labels_of(pod_obj)
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        if kind == "Deployment":
            return "a Deployment never owns a pod directly (a forged ownerReference)", None
        if kind == "ReplicaSet":
            rs = await self.kube.aget(path("apps/v1", "replicasets", namespace, name))
            problem = ownerchain.link_problem(pod_obj, rs, "ReplicaSet", labels)
            if problem or rs is None:
                return problem, None
            rs_owner = controller_owner(meta(rs))
            if rs_owner is None or rs_owner.kind != "Deployment":
                return "", rs_owner
            dep = await self.kube.aget(path("apps/v1", "deployments", namespace, rs_owner.name))
            return ownerchain.link_problem(rs, dep, "Deployment", labels), rs_owner
        if kind in ("StatefulSet", "DaemonSet"):
            plural = kind.lower() + "s"
            workload = await self.kube.aget(path("apps/v1", plural, namespace, name))
            return ownerchain.link_problem(pod_obj, workload, kind, labels), None
        return "", None  # another controller's pod: only that pod is deleted

    # -- gauges ----------------------------------------------------------------------------------
    def update_gauges(self) -> None:
        phases = {p: 0 for p in st.PHASES}
        behind = 0
        for obs in self.index.rsecs.values():
            if obs.status.phase in phases:
                phases[obs.status.phase] += 1
            behind += obs.status.behind
        for p, n in phases.items():
            self.metrics.rotating_secrets.labels(p).set(n)
        self.metrics.consumers_behind.set(behind)

    async def cert_loop(self, every: float = CERT_POLL) -> None:
        """Keep the webhook's certificate and caBundle (``ROTOR_MANAGE_CERTS``; leader only)."""
        waiting = ""
        while True:
            try:
                done = await sync_certs(self.kube, self.settings, self.clock())
                if done.waiting and done.waiting != waiting:
                    log.info("webhook certificates: waiting for %s", done.waiting)
                waiting = done.waiting
            except Exception as e:  # retried at the next poll
                self.metrics.errors.labels("certs").inc()
                log.warning("webhook certificates: %s", e)
            await asyncio.sleep(every)

    async def gauge_loop(self, every: float = 5.0) -> None:
        while True:
            self.update_gauges()
            await asyncio.sleep(every)

    async def close(self) -> None:
        for h in self._retry_handles:
            h.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
