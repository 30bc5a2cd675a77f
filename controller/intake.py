"""Intake of pods and workloads: what the controller keeps of them, and the finder of pods that
were admitted while the webhook was down.

The controller's cost follows Rotor's work, not the cluster's size:

* **Pods** are watched through a server-side label selector, ``rotor.dev/injected`` (the label
  the webhook puts on every pod it patches), so the API server never sends the controller a pod
  that has nothing to do with Rotor (kopf's ``labels=`` filter alone is applied on the client,
  after every pod was sent and parsed). The writer choice and the pods' own requests need only
  these pods: a pod without the agent cannot write.
* **Workloads** (Deployments, StatefulSets, DaemonSets, Jobs) must still be watched cluster-wide
  (a pod template's annotations cannot be selected on the server), but of an unannotated one
  nothing is kept, and of an annotated one only a :class:`~controller.model.WorkloadObs`.
* **Pods admitted without injection** carry no label, so they are found through the annotated
  workloads: each one's pods are listed with its own ``spec.selector`` plus ``!rotor.dev/injected``
  (only its uninjected pods come back), about :data:`SWEEP_DELAY` after any event of the workload
  (a rollout, a scale, a pod created or becoming ready changes its status) and every
  ``ROTOR_UNINJECTED_SWEEP`` for all of them. Such a pod is restarted through its owner
  (:meth:`controller.restart.Restarter.restart_uninjected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controller import decide
from controller.kube import path
from controller.model import WorkloadObs, meta, read_pod, read_workload, requests_from_workload
from rotor.annotations import INJECTED_LABEL
from rotor.errors import InvalidSpec, RotorError

if TYPE_CHECKING:
    from controller.operator import Controller

log = logging.getLogger("rotor.controller")

SWEEP_DELAY = 1.0
"""Seconds from a workload's event to the listing of its uninjected pods: the events of a rollout
come in bursts, and one listing after the burst sees its pods."""

WorkloadKey = tuple[str, str, str]


class Intake:
    """Feeds pod and workload events into the controller's index (no I/O) and runs the finder."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.workloads: dict[WorkloadKey, WorkloadObs] = {}
        """(kind, namespace, name) -> the record of each annotated workload (only those)."""
        self._due: dict[WorkloadKey, float] = {}
        """Workloads whose uninjected pods are to be listed, and when (monotonic)."""
        self._wake = asyncio.Event()
        self.sweeps = 0
        """Listings of a workload's uninjected pods made so far."""

    # -- events (kopf handlers call these; no I/O) -------------------------------------------
    def on_workload(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        m = meta(obj)
        key = (str(obj.get("kind", "")), str(m.get("namespace", "")), str(m.get("name", "")))
        obs = None if kind == "DELETED" else read_workload(obj)
        if obs is None:
            if self.workloads.pop(key, None) is None:
                return  # an unannotated workload: nothing kept, nothing to do
            self._due.pop(key, None)
            self.ctl.set_wants(key, ())
            return
        if obs.error is not None:
            log.info("%s %s/%s: %s", key[0], key[1], key[2], obs.error)
        self.workloads[key] = obs
        if obs.wants_rotor and key not in self._due:
            self._due[key] = time.monotonic() + SWEEP_DELAY
            self._wake.set()
        self.ctl.set_wants(key, obs.wants)

    def on_pod(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        """A pod the webhook injected (the watch selects ``rotor.dev/injected``).

        A pod seen without the label is taken as gone: a watch with a label selector reports an
        object that stops matching with its new state, as a DELETED event."""
        ctl = self.ctl
        m = meta(obj)
        key = (str(m.get("namespace", "")), str(m.get("name", "")))
        if INJECTED_LABEL not in (m.get("labels") or {}):
            kind = "DELETED"
        old = ctl.index.pods.get(key)
        pod = None
        wants: tuple[Any, ...] = ()
        if kind == "DELETED":
            ctl.index.pods.pop(key, None)
        else:
            pod = read_pod(obj)
            if pod.wants_rotor:
                ctl.index.pods[key] = pod
            else:
                ctl.index.pods.pop(key, None)
            with contextlib.suppress(InvalidSpec):  # denied at admission: asks for nothing
                wants = requests_from_workload({**obj, "kind": "Pod"})
        ctl.set_wants(("Pod", *key), wants)
        ctl.mark({s for p in (old, pod) if p for s in p.rw})
        if (
            pod is not None
            and ctl.settings.restart_uninjected
            and decide.needs_injection(pod, ctl.settings.namespace)
        ):
            ctl.spawn(ctl.restart_uninjected(pod))  # labelled, yet not marked injected

    # -- the finder ----------------------------------------------------------------------------
    async def loop(self) -> None:
        """List the uninjected pods of each annotated workload soon after its events, and of
        every one each ``uninjected_sweep``."""
        every = max(self.ctl.settings.uninjected_sweep, 0.1)  # 0s would spin
        next_full = time.monotonic() + every
        while True:
            now = time.monotonic()
            if now >= next_full:
                due = list(self.workloads)
                self._due.clear()
                next_full = now + every
            else:
                due = [k for k, at in self._due.items() if at <= now]
                for k in due:
                    del self._due[k]
            for key in due:
                await self.sweep(key)
            self._wake.clear()  # before reading _due: an event from now on wakes the wait
            wait = min([next_full, *self._due.values()]) - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def sweep(self, key: WorkloadKey) -> None:
        """Restart, through their owner, the pods of one workload admitted without the agent."""
        ctl = self.ctl
        w = self.workloads.get(key)
        if (
            w is None
            or not w.wants_rotor
            or w.selector is None
            or not ctl.settings.restart_uninjected
            or w.namespace == ctl.settings.namespace
        ):
            return
        self.sweeps += 1
        try:
            found = await ctl.kube.aitems(
                path("v1", "pods", w.namespace), f"{w.selector},!{INJECTED_LABEL}"
            )
        except RotorError as e:
            ctl.metrics.errors.labels("restart").inc()
            log.warning("listing the pods of %s %s/%s: %s", w.kind, w.namespace, w.name, e)
            return
        for obj in found:
            if INJECTED_LABEL in (meta(obj).get("labels") or {}):
                continue  # the selector is applied on the client side too
            pod = read_pod(obj)
            if decide.needs_injection(pod, ctl.settings.namespace):
                await ctl.restart_uninjected(pod)
