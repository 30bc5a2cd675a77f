"""The status writer: a RotatingSecret's status (:func:`controller.decide.secret_status`),
written only when it changed, one Warning Event per new failure reason, and the
``Reconciled=False/Forbidden`` condition of a refused API call."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING

from controller import decide
from controller.kube import path
from controller.model import RotatingSecretObs, meta, status_digest
from rotor import API
from rotor import status as st
from rotor.errors import RotorError
from rotor.names import SecretRef

if TYPE_CHECKING:
    from controller.operator import Controller


class StatusWriter:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.reported: dict[SecretRef, set[tuple[str, str, str]]] = {}
        """Failures already reported by an Event (watch events may lag behind our writes)."""

    def forget(self, ref: SecretRef) -> None:
        self.reported.pop(ref, None)

    async def write(self, obs: RotatingSecretObs, status: st.RotatingSecretStatus) -> None:
        ctl = self.ctl
        observed = obs.status.condition_dicts()
        body = status.to_dict(observed, ctl.clock())
        await self._report_failures(obs, observed, status)
        if status_digest(body).digest == obs.status.digest:
            return
        url = path(API, "rotatingsecrets", obs.ref.namespace, obs.ref.name, "status")
        result = await ctl.kube.apatch(url, {"status": body})
        # remember what was written, so an unchanged status is not written again
        current = ctl.index.rsecs.get(obs.ref)
        if current is not None and current.uid == obs.uid:
            ctl.index.rsecs[obs.ref] = replace(
                current,
                status=status_digest(result.get("status") or body),
                resource_version=str(meta(result).get("resourceVersion") or ""),
            )

    async def _report_failures(
        self,
        obs: RotatingSecretObs,
        observed: list[dict[str, str]],
        status: st.RotatingSecretStatus,
    ) -> None:
        """One Warning Event per failure reason that just appeared."""
        reported = self.reported.setdefault(obs.ref, set())
        for c in decide.new_failures(observed, status.conditions):
            if (obs.uid, c.type, c.reason) in reported:
                continue
            reported.add((obs.uid, c.type, c.reason))
            with contextlib.suppress(RotorError):
                await self.ctl.events.event(obs, c.reason, f"{c.type}: {c.message}")
        failing = {(obs.uid, c.type, c.reason) for c in status.conditions if c.status != "True"}
        reported &= failing  # a failure that clears may be reported again when it returns

    async def report_forbidden(self, obs: RotatingSecretObs, message: str) -> None:
        """A refused API call: the condition ``Reconciled=False`` (reason ``Forbidden``, the
        message naming the permission) and an Event, each as far as the permissions allow. The
        next successful status write drops the condition again."""
        ctl = self.ctl
        observed = [c for c in obs.status.condition_dicts() if c.get("type") != "Reconciled"]
        cond = st.Condition("Reconciled", "False", "Forbidden", message)
        conditions = [*observed, *st.merge_conditions([], [cond], ctl.clock())]
        url = path(API, "rotatingsecrets", obs.ref.namespace, obs.ref.name, "status")
        with contextlib.suppress(RotorError):
            await ctl.kube.apatch(url, {"status": {"conditions": conditions}})
        with contextlib.suppress(RotorError):
            await ctl.events.event(obs, "Forbidden", message)
