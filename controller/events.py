"""core/v1 Events on RotatingSecrets and ExternalStores (names and reasons only, never a
value)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from controller.kube import path
from controller.model import RotatingSecretObs
from rotor import API
from rotor.layout import format_time

if TYPE_CHECKING:
    from controller.operator import Controller

COMPONENT = "rotor-controller"


def event_body(
    namespace: str,
    kind: str,
    name: str,
    uid: str,
    reason: str,
    message: str,
    type_: str,
    now: float,
    suffix: str,
    api_version: str = API,
) -> dict[str, object]:
    """The Event (``suffix`` makes its name unique; the message is cut at 1 KiB)."""
    ts = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{suffix}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": api_version,
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


class EventRecorder:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    async def event(
        self, obs: RotatingSecretObs, reason: str, message: str, type_: str = "Warning"
    ) -> None:
        """An Event on the RotatingSecret."""
        await self.post(
            obs.ref.namespace, "RotatingSecret", obs.ref.name, obs.uid, reason, message, type_
        )

    async def post(
        self,
        namespace: str,
        kind: str,
        name: str,
        uid: str,
        reason: str,
        message: str,
        type_: str = "Warning",
        api_version: str = API,
    ) -> None:
        body = event_body(
            namespace,
            kind,
            name,
            uid,
            reason,
            message,
            type_,
            self.ctl.clock(),
            uuid.uuid4().hex[:16],
            api_version,
        )
        await self.ctl.kube.acreate(path("v1", "events", namespace), body)
