"""Wiring: kopf watches feed the :class:`~controller.operator.Controller` (pods and workloads
through :class:`~controller.intake.Intake`); the loops run while this replica leads.

kopf is used for what it is good at - resilient list+watch streams with reconnects, per-object
serialisation and its login machinery - through ``on.event`` handlers only, so kopf itself never
writes to the watched objects (no progress annotations on thousands of Secrets and Pods); the
controller owns its finalizer and its status.

Pods and Secrets are watched through server-side label selectors (kopf's
``settings.watching.label_selectors``, kopf >= 1.45): the API server sends only the pods the
webhook injected and the Secrets Rotor manages. Both are checked on the client side too
(:meth:`~controller.intake.Intake.on_pod`, :meth:`~controller.index.ObjectIntake.on_secret`).
kopf's ``labels=`` handler filter alone would not help: it is applied after every object was
sent and parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from typing import Any, cast

import kopf
from kopf._core.engines.peering import Identity
from kubernetes import client

from controller.intake import Intake
from controller.operator import Controller
from rotor import API_GROUP, API_VERSION
from rotor.annotations import INJECTED_LABEL
from rotor.layout import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("rotor.controller")

WORKLOADS = (
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("apps", "v1", "daemonsets"),
    ("batch", "v1", "jobs"),
)
"""Watched cluster-wide: a pod template's annotations cannot be selected on the server."""
LIST_CHUNK = 500
"""Initial listings are read in pages of this many objects (``limit``/``continue``), so the
listing of every workload of a large cluster is never held in memory at once."""


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf's settings (its startup handler)."""
    settings.scanning.disabled = True  # fixed resources: no CRD or namespace scanning
    settings.posting.level = logging.WARNING
    settings.queueing.exit_timeout = 0.5  # per-object workers hold no state of ours
    # Handlers only update the index: a per-object worker may exit at once; thousands of
    # idle ones (one per object at the initial listing) would set the memory high-water mark.
    settings.queueing.idle_timeout = 0.1
    settings.watching.client_timeout = 600  # a watch that never closes is restarted
    settings.watching.server_timeout = 540
    settings.watching.chunk_size = LIST_CHUNK
    settings.watching.label_selectors["v1", "pods"] = INJECTED_LABEL
    settings.watching.label_selectors["v1", "secrets"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def connection_info(cfg: client.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the kubernetes client's configuration the controller already
    loaded (from ``--kubeconfig``, KUBECONFIG, the pod's service account or ~/.kube/config), so
    kopf's watches and the controller's own calls use one identity and one server. (kopf's
    ``login_via_client`` would load the default kubeconfig again and ignore ``--kubeconfig``.)"""
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _, token = (header or "").rpartition(" ")  # "Bearer <token>" or a bare token
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


def _add_login(
    registry: kopf.OperatorRegistry, server: str | None, cfg: client.Configuration | None
) -> None:
    if server is not None:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server, scheme=None, insecure=True)

    elif cfg is not None:

        @kopf.on.login(registry=registry)
        def login_as_the_controller(**_: Any) -> kopf.ConnectionInfo:
            return connection_info(cfg)

    else:
        # A registry of our own gets none of kopf's default login handlers: without this one
        # kopf finds no credentials at all (in-cluster token or kubeconfig) and never starts.
        @kopf.on.login(registry=registry)
        def login_from_config(**kwargs: Any) -> kopf.ConnectionInfo | None:
            info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
            return info


def build_registry(
    ctl: Controller, server: str | None = None, cfg: client.Configuration | None = None
) -> kopf.OperatorRegistry:
    """A kopf registry of this controller's watches (one per controller; tests make several)."""
    registry = kopf.OperatorRegistry()
    intake = ctl.intake = Intake(ctl)
    # Handlers are coroutines: kopf runs sync handlers in threads, and the index is not
    # thread-safe (it lives on the event loop).
    _add_login(registry, server, cfg)
    kopf.on.startup(registry=registry)(configure)

    @kopf.on.event(API_GROUP, API_VERSION, "rotatingsecrets", registry=registry)
    async def rotating_secret(event: kopf.RawEvent, **_: Any) -> None:
        ctl.on_rotating_secret(event.get("type"), event["object"])

    @kopf.on.event(API_GROUP, API_VERSION, "externalstores", registry=registry)
    async def external_store(event: kopf.RawEvent, **_: Any) -> None:
        ctl.on_external_store(event.get("type"), event["object"])

    @kopf.on.event("v1", "secrets", labels={LABEL_MANAGED_BY: MANAGED_BY}, registry=registry)
    async def secret(event: kopf.RawEvent, **_: Any) -> None:
        ctl.on_secret(event.get("type"), event["object"])

    # no labels= filter: a pod that loses the label must still reach intake (and leave the index)
    @kopf.on.event("v1", "pods", registry=registry)
    async def pod(event: kopf.RawEvent, **_: Any) -> None:
        intake.on_pod(event.get("type"), event["object"])

    for group, version, plural in WORKLOADS:

        @kopf.on.event(group, version, plural, registry=registry, id=f"workload-{plural}")
        async def workload(event: kopf.RawEvent, **_: Any) -> None:
            intake.on_workload(event.get("type"), event["object"])

    return registry


def start_loops(ctl: Controller) -> list[asyncio.Task[None]]:
    """The controller's loops, as tasks: the worker, ACL, gauges and stores, and the audit
    receiver's client, the certificates and the uninjected-pod finder when they are on."""
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
    if ctl.intake is not None:
        loops.append(asyncio.create_task(ctl.intake.loop(), name="uninjected"))
    return loops


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``, however often they come. kopf's own handlers (installed
    as it starts, in the main thread) set a future's result, and a second signal while it stops
    (a demo's stop, Ctrl-C twice) logged ``InvalidStateError``; an Event may be set again."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


_KOPF_IDENTITY = cast("Identity", f"rotor-controller@{socket.gethostname()}")


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
    loops = start_loops(ctl)
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=True,
            # kopf's default asks getpass.getuser(), which raises KeyError for a uid without
            # an /etc/passwd line (runAsUser 65532 under containerd); standalone, it is a label
            identity=_KOPF_IDENTITY,
            stop_flag=stop,
            ready_flag=kopf_ready,
        ),
        name="kopf",
    )
    try:
        waiter = asyncio.create_task(kopf_ready.wait())
        await asyncio.wait({waiter, operator}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        _stop_on_signals(stop)
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
