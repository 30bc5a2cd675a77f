"""Env delivery's rolling restart: a workload whose pods read a secret as env vars
(``rotor.dev/delivery: env``) gets a new value only when its pods start again, so when the
controller writes a new version into the RO view of such a workload's namespace, the workload is
restarted through its owner, as Reloader and ``kubectl rollout restart`` do.

* **How** (``restart_method``, the chart's ``controller.restartMethod``): ``template`` patches
  the pod template's ``kubectl.kubernetes.io/restartedAt`` (a rolling update, as the workload's
  strategy says) and ``rotor.dev/restarted-for``; ``evict`` evicts each of its pods (a
  PodDisruptionBudget is respected; the controller needs no patch on workloads).
* **Debounced**: at most one restart per workload per ``restart_min_interval``, however many
  rotations come in between: the first change restarts at once, later ones within the window
  make one more restart at its end, with the newest version.
* **Said**: a Normal Event ``Restarted`` on the workload names the secret, the version and why;
  ``rotor_controller_env_restarts_total{method}`` counts them.

Deployments, StatefulSets and DaemonSets only: a Job's or a bare pod's env cannot be restarted
into a new value. The window's pending restart lives in memory: a controller that stops within
a window (or loses the lead) does not make it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from controller.kube import Obj, path
from controller.model import RESTARTED_AT, WorkloadObs, meta
from rotor.annotations import INJECTED_LABEL
from rotor.errors import NotFoundError, RotorError
from rotor.layout import format_time
from rotor.names import SecretRef

if TYPE_CHECKING:
    from controller.operator import Controller

log = logging.getLogger("rotor.controller")

RESTARTED_FOR = "rotor.dev/restarted-for"
"""On the pod template: the secret and version (``ns/name@7``) the last restart was for."""
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
WorkloadKey = tuple[str, str, str]


def template_patch(now: float, ref: SecretRef, version: int) -> Obj:
    """The merge patch that rolls a workload's pods (``restartMethod: template``)."""
    annotations = {RESTARTED_AT: format_time(now), RESTARTED_FOR: f"{ref}@{version}"}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def restart_delay(last: float | None, now: float, window: float) -> float:
    """Seconds until a workload last restarted at ``last`` may restart again (0: now)."""
    return 0.0 if last is None else max(0.0, last + window - now)


class EnvRestarts:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.last: dict[WorkloadKey, float] = {}
        """When each workload was last restarted (the controller's clock)."""
        self.due: dict[WorkloadKey, tuple[SecretRef, int]] = {}
        """Workloads with a restart scheduled, and the newest secret version it is for."""

    def view_changed(self, ref: SecretRef, namespace: str, version: int) -> None:
        """The view of ``ref`` in ``namespace`` now holds ``version``: restart its env readers
        (no I/O here; the restarts run as tasks)."""
        intake = self.ctl.intake
        if not self.ctl.settings.restart_env_consumers or intake is None:
            return
        for key, w in list(intake.workloads.items()):
            if w.namespace == namespace and ref in w.env and w.kind in PLURALS:
                self._schedule(key, ref, version)

    def _schedule(self, key: WorkloadKey, ref: SecretRef, version: int) -> None:
        scheduled = key in self.due
        self.due[key] = (ref, version)
        if scheduled:
            return  # the restart at the window's end takes the newest version
        ctl = self.ctl
        delay = restart_delay(self.last.get(key), ctl.clock(), ctl.settings.restart_min_interval)
        ctl.spawn(self._restart_after(key, delay))

    async def _restart_after(self, key: WorkloadKey, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        ref, version = self.due.pop(key)
        self.last[key] = self.ctl.clock()
        w = self.ctl.intake.workloads.get(key) if self.ctl.intake else None
        if w is None or ref not in w.env:
            return  # gone, or no longer reads it as env
        try:
            await self._restart(w, ref, version)
        except RotorError as e:
            self.ctl.metrics.errors.labels("restart").inc()
            log.warning("restarting %s %s/%s for %s: %s", w.kind, w.namespace, w.name, ref, e)

    async def _restart(self, w: WorkloadObs, ref: SecretRef, version: int) -> None:
        ctl = self.ctl
        method = ctl.settings.restart_method
        url = path("apps/v1", PLURALS[w.kind], w.namespace, w.name)
        obj: Obj | None
        if method == "template":
            obj = await ctl.kube.apatch(url, template_patch(ctl.clock(), ref, version))
        else:
            obj = await ctl.kube.aget(url)
            if obj is None:
                return
            await self._evict_pods(w)
        ctl.metrics.env_restarts.labels(method).inc()
        how = "its pod template patched" if method == "template" else "its pods evicted"
        message = (
            f"restarted ({how}, restartMethod {method}): its pods read {ref} as env vars "
            f"(rotor.dev/delivery: env) and version {version} was published"
        )
        log.info("%s %s/%s %s", w.kind, w.namespace, w.name, message)
        uid = str(meta(obj or {}).get("uid", ""))
        await ctl.events.post(
            w.namespace, w.kind, w.name, uid, "Restarted", message, "Normal", "apps/v1"
        )

    async def _evict_pods(self, w: WorkloadObs) -> None:
        """Evict each pod of ``w`` (its selector; only those the webhook patched)."""
        if w.selector is None:
            return
        ctl = self.ctl
        pods = await ctl.kube.aitems(path("v1", "pods", w.namespace), w.selector)
        for pod in pods:
            name = str(meta(pod).get("name", ""))
            if INJECTED_LABEL not in (meta(pod).get("labels") or {}) or not name:
                continue
            body = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": name, "namespace": w.namespace},
            }
            try:
                await ctl.kube.acreate(path("v1", "pods", w.namespace, name, "eviction"), body)
            except NotFoundError:
                continue  # gone meanwhile
