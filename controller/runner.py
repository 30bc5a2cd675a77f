"""Wiring: kopf watches feed the :class:`~controller.operator.Controller`; the loops run while
this replica leads.

kopf is used for what it is good at - resilient list+watch streams with reconnects, per-object
serialisation and its login machinery - through ``on.event`` handlers only, so kopf itself never
writes to the watched objects (no progress annotations on thousands of Secrets and Pods); the
controller owns its finalizer and its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from controller.operator import Controller
from rotor import API_GROUP, API_VERSION
from rotor.layout import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("rotor.controller")


def build_registry(ctl: Controller, server: str | None = None) -> kopf.OperatorRegistry:
    """A kopf registry of this controller's watches (one per controller; tests make several)."""
    registry = kopf.OperatorRegistry()
    # Handlers are coroutines: kopf runs sync handlers in threads, and the index is not
    # thread-safe (it lives on the event loop).

    if server is not None:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server, scheme=None, insecure=True)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.scanning.disabled = True  # fixed resources: no CRD or namespace scanning
        settings.posting.level = logging.WARNING
        settings.queueing.exit_timeout = 0.5  # per-object workers hold no state of ours
        # Handlers only update the index: a per-object worker may exit at once; thousands of
        # idle ones (one per object at the initial listing) would set the memory high-water mark.
        settings.queueing.idle_timeout = 0.1
        settings.watching.client_timeout = 600  # a watch that never closes is restarted
        settings.watching.server_timeout = 540

    @kopf.on.event(API_GROUP, API_VERSION, "rotatingsecrets", registry=registry)
    async def rotating_secret(event: kopf.RawEvent, **_: Any) -> None:
        ctl.on_rotating_secret(event.get("type"), event["object"])

    @kopf.on.event(API_GROUP, API_VERSION, "externalstores", registry=registry)
    async def external_store(event: kopf.RawEvent, **_: Any) -> None:
        ctl.on_external_store(event.get("type"), event["object"])

    @kopf.on.event("v1", "secrets", labels={LABEL_MANAGED_BY: MANAGED_BY}, registry=registry)
    async def secret(event: kopf.RawEvent, **_: Any) -> None:
        ctl.on_secret(event.get("type"), event["object"])

    @kopf.on.event("v1", "pods", registry=registry)
    async def pod(event: kopf.RawEvent, **_: Any) -> None:
        ctl.on_pod(event.get("type"), event["object"])

    for plural in ("deployments", "statefulsets", "daemonsets"):

        @kopf.on.event("apps", "v1", plural, registry=registry, id=f"workload-{plural}")
        async def workload(event: kopf.RawEvent, **_: Any) -> None:
            ctl.on_workload(event.get("type"), event["object"])

    return registry


async def run_controller(
    ctl: Controller,
    registry: kopf.OperatorRegistry,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
) -> None:
    """Run kopf and the controller's loops until ``stop`` is set."""
    kopf_ready = asyncio.Event()
    await ctl.seed_rbac()
    # The loops exist before kopf starts: kopf waits for (then cancels) tasks created after it.
    loops = [
        asyncio.create_task(ctl.worker(), name="reconcile"),
        asyncio.create_task(ctl.acl_loop(), name="acl"),
        asyncio.create_task(ctl.gauge_loop(), name="gauges"),
        asyncio.create_task(ctl.store_loop(), name="stores"),
    ]
    if ctl.settings.audit_receiver_url:
        from controller.vaultsource import VaultSource

        source = VaultSource(ctl)
        ctl.vault_source = source
        loops.append(asyncio.create_task(source.config_loop(), name="audit-config"))
        loops.append(asyncio.create_task(source.loop(), name="audit-events"))
    if ctl.settings.manage_certs:
        loops.append(asyncio.create_task(ctl.cert_loop(), name="certs"))
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
            ready_flag=kopf_ready,
        ),
        name="kopf",
    )
    try:
        waiter = asyncio.create_task(kopf_ready.wait())
        await asyncio.wait({waiter, operator}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if ready is not None:
            ready.set()
        await operator  # returns when stop is set
    finally:
        stop.set()
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await ctl.close()
        if not operator.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(operator, 10)
