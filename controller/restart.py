"""The restarter: a pod admitted without the agent (the webhook was down) is restarted through
its owner, once the owner chain checks out (:mod:`controller.ownerchain`), at most once per owner
per ``restart_min_interval`` (:func:`controller.decide.restart_action`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from controller import decide, ownerchain
from controller.kube import Obj, path
from controller.model import OwnerRef, PodInfo, controller_owner, meta, read_pod
from rotor.errors import RotorError

if TYPE_CHECKING:
    from controller.operator import Controller

log = logging.getLogger("rotor.controller")


class Restarter:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.last_restart: dict[tuple[str, str, str], float] = {}

    async def restart_uninjected(self, pod: PodInfo) -> None:
        """Restart a pod admitted without the agent through its owner."""
        ctl = self.ctl
        try:
            pod_obj = await ctl.kube.aget(path("v1", "pods", pod.namespace, pod.name))
            if pod_obj is None:
                return
            problem, rs_owner = await self._verified_owner(pod.namespace, pod_obj)
            if problem:
                ctl.metrics.restarts.labels("refused").inc()
                log.warning(
                    "not restarting anything for pod %s/%s (admitted without injection): %s",
                    pod.namespace,
                    pod.name,
                    problem,
                )
                return
            pod = read_pod(pod_obj)  # the copy whose owners were checked
            action = decide.restart_action(pod, rs_owner, ctl.settings.restart_method)
            if action.kind == "none":
                log.info("pod %s/%s not injected: %s", pod.namespace, pod.name, action.reason)
                return
            await self._restart(pod, action)
        except RotorError as e:
            ctl.metrics.errors.labels("restart").inc()
            log.warning("restart for pod %s/%s: %s", pod.namespace, pod.name, e)

    async def _restart(self, pod: PodInfo, action: decide.RestartAction) -> None:
        """Carry ``action`` out, unless its owner was restarted less than the minimum ago."""
        ctl = self.ctl
        now = ctl.clock()
        last = self.last_restart.get(action.key)
        if not decide.may_restart(last, now, ctl.settings.restart_min_interval):
            return
        self.last_restart[action.key] = now
        url = path(action.api_version, action.plural, action.namespace, action.name)
        if action.kind == "patch-template":
            await ctl.kube.apatch(url, decide.restart_patch(now))
        elif action.kind == "evict-pod":
            await ctl.kube.acreate(
                path("v1", "pods", action.namespace, action.name, "eviction"),
                decide.eviction(action.namespace, action.name),
            )
        else:
            await ctl.kube.adelete(url)
        ctl.metrics.restarts.labels(action.kind).inc()
        log.info(
            "restarted %s %s/%s: pod %s was admitted without injection",
            action.plural,
            action.namespace,
            action.name,
            pod.name,
        )

    async def _verified_owner(self, namespace: str, pod_obj: Obj) -> tuple[str, OwnerRef | None]:
        """(why the owner chain does not check out or "", the ReplicaSet's owner)."""
        kube = self.ctl.kube
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
            rs = await kube.aget(path("apps/v1", "replicasets", namespace, name))
            problem = ownerchain.link_problem(pod_obj, rs, "ReplicaSet", labels)
            if problem or rs is None:
                return problem, None
            rs_owner = controller_owner(meta(rs))
            if rs_owner is None or rs_owner.kind != "Deployment":
                return "", rs_owner
            dep = await kube.aget(path("apps/v1", "deployments", namespace, rs_owner.name))
            return ownerchain.link_problem(rs, dep, "Deployment", labels), rs_owner
        if kind in ("StatefulSet", "DaemonSet"):
            plural = kind.lower() + "s"
            workload = await kube.aget(path("apps/v1", plural, namespace, name))
            return ownerchain.link_problem(pod_obj, workload, kind, labels), None
        return "", None  # another controller's pod: only that pod is deleted
