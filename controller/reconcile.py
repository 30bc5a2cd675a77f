"""Reconcile one RotatingSecret: its finalizer, its source Secret, RBAC, the fan-out to views
and the status, each decision a call into :mod:`controller.decide`; and the outcome of a
reconcile (counted, reported, and what the queue is to do next: :meth:`Reconciler.run_one`
returns a :class:`~controller.queue.Requeue`; the queue alone schedules it)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from controller import adopt, decide
from controller.kube import ForbiddenError, Obj, path
from controller.model import (
    FINALIZER,
    RotatingSecretObs,
    SourceObs,
    ViewObs,
    source_label,
)
from controller.queue import Requeue
from rotor import API
from rotor.acl import Grant
from rotor.errors import ConflictError, RotorError
from rotor.layout import ANN_ROTATE_REQUESTED
from rotor.names import SecretRef
from rotor.spec import RotatingSecretSpec

if TYPE_CHECKING:
    from controller.operator import Controller

log = logging.getLogger("rotor.controller")

FORBIDDEN_DELAY = 30.0  # a missing permission is fixed by a person: no tight retry loop
ADOPT_ATTEMPTS = 5


def _source_url(ref: SecretRef) -> str:
    return path("v1", "secrets", ref.namespace, ref.name)


class Reconciler:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    async def run_one(self, ref: SecretRef) -> Requeue | None:
        """Reconcile ``ref``; count the outcome, report a failure; what the queue is to do
        next (:class:`~controller.queue.Requeue`: a failure backs off)."""
        ctl = self.ctl
        try:
            asked = await self.reconcile(ref)
            ctl.metrics.reconciles.labels("ok").inc()
            return asked
        except ConflictError as e:  # read a stale copy: the watch brings the new one; retry
            ctl.metrics.reconciles.labels("conflict").inc()
            log.info("reconcile %s: %s (retrying)", ref, e)
            return Requeue(backoff=True)
        except ForbiddenError as e:
            ctl.metrics.reconciles.labels("error").inc()
            ctl.metrics.errors.labels("forbidden").inc()
            log.error("reconcile %s: %s; retrying in %.0fs", ref, e, FORBIDDEN_DELAY)
            obs = ctl.index.rsecs.get(ref)
            if obs is not None:
                await ctl.status.report_forbidden(obs, str(e))
            return Requeue(backoff=True, hint=FORBIDDEN_DELAY)
        except RotorError as e:
            ctl.metrics.reconciles.labels("error").inc()
            ctl.metrics.errors.labels("api").inc()
            log.warning("reconcile %s: %s", ref, e)
            obs = ctl.index.rsecs.get(ref)
            if obs is not None:
                with contextlib.suppress(RotorError):
                    await ctl.events.event(obs, "ReconcileFailed", str(e))
            return Requeue(backoff=True, hint=getattr(e, "delay", None))
        except Exception:
            ctl.metrics.reconciles.labels("error").inc()
            log.exception("reconcile %s failed", ref)
            return Requeue(backoff=True)

    async def reconcile(self, ref: SecretRef) -> Requeue | None:
        """One reconcile of ``ref``; returns what the queue is to do next (a held fan-out backs
        off, the previous value's expiry comes back at its time), None for nothing."""
        ctl = self.ctl
        obs = ctl.index.rsecs.get(ref)
        if obs is None:
            await self.cleanup(ref)
            return None
        if obs.deleting:
            await self.cleanup(ref)
            await self._drop_finalizer(obs)
            return None
        obs = await self._add_finalizer(obs)
        if obs.spec is None:
            ctl.metrics.errors.labels("spec").inc()
            status = decide.secret_status(
                obs, ctl.index.sources.get(ref), None, (), None, ctl.aclsync.staleness(), False
            )
            await ctl.status.write(obs, status)
            return None
        return await self._reconcile_spec(obs, obs.spec)

    async def _reconcile_spec(
        self, obs: RotatingSecretObs, spec: RotatingSecretSpec
    ) -> Requeue | None:
        ctl = self.ctl
        ref = obs.ref
        try:
            source = await self.ensure_source(obs)
        except adopt.SourceNotOwned as e:
            ctl.metrics.errors.labels("source").inc()
            log.warning("reconcile %s: %s", ref, e)
            await ctl.status.write(obs, decide.source_not_owned_status(obs, str(e)))
            return None
        stale = ctl.aclsync.staleness()
        acl_known = ctl.aclsync.acl is not None and not stale.revoke
        grants = decide.effective_grants(ctl.aclsync.acl, stale)
        views = dict(ctl.index.views.get(source_label(ref), {}))
        writer = decide.choose_writer(
            ref,
            (p for p in ctl.index.pods.values() if p.namespace == ref.namespace),
            grants,
            obs.status.writer,
        )
        plan: decide.FanoutPlan | None = None
        expiry: float | None = None
        stores = await ctl.stores.check_stores(obs, source)
        if ctl.aclsync.acl is not None or stale.revoke:  # never act on an ACL not read yet
            plan, views, expiry = await self._grant_and_publish(
                ref, spec, source, grants, views, stores
            )
        acl = ctl.aclsync.acl
        consumers = decide.consumer_statuses(
            ref, ctl.index.wants_for(ref), grants, acl, source, views
        )
        skipped = [e for e in (acl.skipped if acl else ()) if e.secret == str(ref)]
        status = decide.secret_status(
            obs, source, writer, consumers, plan, stale, acl_known, stores, skipped
        )
        await ctl.status.write(obs, status)
        return Requeue(backoff=ctl.stores.held(stores, source), after=expiry)

    async def _grant_and_publish(
        self,
        ref: SecretRef,
        spec: RotatingSecretSpec,
        source: SourceObs | None,
        grants: frozenset[Grant],
        views: dict[str, ViewObs],
        stores: decide.StoreSync,
    ) -> tuple[decide.FanoutPlan, dict[str, ViewObs], float | None]:
        """RBAC for the grants, then the views; returns the plan, the views as they are, and
        the seconds until the previous value expires from views (None: none shown)."""
        ctl = self.ctl
        mine = await ctl.rbac.sync(ref, spec, grants)
        granted = decide.granted_ro_namespaces(ref, mine)
        shown = decide.for_views(source, ctl.clock())  # an expired previous is not shown
        plan = decide.plan_fanout(shown, granted, views, stores.state)
        views = await ctl.views.fanout(ref, shown, plan, views)
        expiry = decide.previous_expiry_in(shown, ctl.clock())
        return plan, views, expiry + 0.05 if expiry is not None and granted else None

    async def _add_finalizer(self, obs: RotatingSecretObs) -> RotatingSecretObs:
        if FINALIZER in obs.finalizers:
            return obs
        # the whole list is replaced: the resourceVersion guards finalizers added meanwhile
        result = await self._patch_finalizers(obs, [*obs.finalizers, FINALIZER])
        self.ctl.objects.own_rotating_secret(result)
        return self.ctl.index.rsecs.get(obs.ref) or obs

    async def _drop_finalizer(self, obs: RotatingSecretObs) -> None:
        if FINALIZER in obs.finalizers:
            await self._patch_finalizers(obs, [f for f in obs.finalizers if f != FINALIZER])

    async def _patch_finalizers(self, obs: RotatingSecretObs, finalizers: list[str]) -> Obj:
        url = path(API, "rotatingsecrets", obs.ref.namespace, obs.ref.name)
        patch = {"metadata": {"resourceVersion": obs.resource_version, "finalizers": finalizers}}
        return await self.ctl.kube.apatch(url, patch)

    async def ensure_source(self, obs: RotatingSecretObs) -> SourceObs | None:
        """Create the source Secret (owned, labelled, no value yet) or adopt an existing one
        (:mod:`controller.adopt`), and pass a ``rotor.dev/rotate-now`` request on to the
        writer. Raises :class:`~controller.adopt.SourceNotOwned` for a Secret another owner
        controls."""
        ctl = self.ctl
        ref = obs.ref
        source = ctl.index.sources.get(ref)
        if source is None:
            source = await self._create_source(obs)
        if source is None or not source.owned or not source.labelled:
            source = await self._adopt_source(obs)
        if source is not None and obs.rotate_now and source.rotate_requested != obs.rotate_now:
            patch = {"metadata": {"annotations": {ANN_ROTATE_REQUESTED: obs.rotate_now}}}
            ctl.objects.own_secret(await ctl.kube.apatch(_source_url(ref), patch))
        return ctl.index.sources.get(ref)

    async def _create_source(self, obs: RotatingSecretObs) -> SourceObs | None:
        """The new source Secret; None when one exists already (409 AlreadyExists, not seen
        yet). Any other failure (an unavailable server too) is raised: it is retried."""
        ctl = self.ctl
        url = path("v1", "secrets", obs.ref.namespace)
        try:
            created = await ctl.kube.acreate(url, adopt.source_body(obs))
        except ConflictError:
            return None
        ctl.objects.own_secret(created)
        return ctl.index.sources.get(obs.ref)

    async def _adopt_source(self, obs: RotatingSecretObs) -> SourceObs | None:
        """Adopt the existing Secret as read, with its resourceVersion as the precondition;
        read it again after a conflict."""
        ctl = self.ctl
        url = _source_url(obs.ref)
        for _ in range(ADOPT_ATTEMPTS):
            current = await ctl.kube.aget(url)
            if current is None:
                raise ConflictError(f"{url}: the Secret went away while adopting it")
            decision = adopt.adoption(current, obs)
            if decision.problem:
                raise adopt.SourceNotOwned(decision.problem)
            if decision.patch is None:
                ctl.objects.own_secret(current)
                return ctl.index.sources.get(obs.ref)
            try:
                ctl.objects.own_secret(await ctl.kube.apatch(url, decision.patch))
            except ConflictError:
                continue  # changed since it was read: read it again
            return ctl.index.sources.get(obs.ref)
        raise ConflictError(f"{url}: changed {ADOPT_ATTEMPTS} times while adopting it")

    async def cleanup(self, ref: SecretRef) -> None:
        """Remove the views and the Roles/RoleBindings of a RotatingSecret that is going away.
        The source Secret goes with its owner (garbage collection)."""
        await self.ctl.rbac.remove(ref)
        await self.ctl.views.delete_all(ref)
