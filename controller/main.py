"""``rotor-controller``: settings from ``ROTOR_*``, metrics on ``ROTOR_CONTROLLER_METRICS_PORT``,
leader election on a Lease, then kopf and the controller loops (see docs/controller.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys

import yaml
from kubernetes import client, config
from prometheus_client import CollectorRegistry, start_http_server

from controller.acl import make_backend
from controller.kube import DEFAULT_CONCURRENCY, Kube, check_connection
from controller.leader import LeaderElector
from controller.metrics import Metrics
from controller.operator import Controller
from controller.runner import build_registry, run_controller
from rotor import logs
from rotor.errors import InvalidSpec, RotorError
from rotor.settings.controller import ControllerSettings

LEASE_NAME = "rotor-controller"
CONNECT_ATTEMPTS = 5
CONNECT_DELAY = 2.0
log = logging.getLogger("rotor.controller")
M_ARENA_MAX = -8  # glibc mallopt parameter


class StartupError(Exception):
    """The controller cannot start (no configuration, no server): one line, exit status 1."""


def api_client(server: str | None, kubeconfig: str | None = None) -> client.ApiClient:
    """A client for ``--server``, else ``--kubeconfig`` (or KUBECONFIG), else the pod's service
    account, else ~/.kube/config. A missing or unreadable file is named in a StartupError."""
    if server:
        cfg = client.Configuration()
        cfg.host = server
        return client.ApiClient(cfg)
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if path is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            path = os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION)
            if not os.path.exists(path):
                raise StartupError(
                    "no Kubernetes configuration: not in a pod (no service account token) "
                    f"and no kubeconfig at {path}; pass --kubeconfig FILE, set KUBECONFIG, "
                    "or --server URL"
                ) from None
    source = "--kubeconfig" if kubeconfig else "KUBECONFIG" if "KUBECONFIG" in os.environ else ""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise StartupError(
            f"{source or 'kubeconfig'} {path}: cannot read it ({e.strerror}); "
            "pass --kubeconfig with an existing file"
        ) from None
    try:
        api: client.ApiClient = config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
        return api
    except (config.ConfigException, ValueError, TypeError, yaml.YAMLError) as e:
        raise StartupError(f"kubeconfig {path}: not usable ({e}); check its contexts") from None


def connect(
    server: str | None, kubeconfig: str | None, attempts: int, delay: float
) -> client.ApiClient:
    """:func:`api_client`, then the API server must answer within ``attempts`` tries."""
    api = api_client(server, kubeconfig)
    try:
        version = check_connection(api, attempts, delay)
    except RotorError as e:
        raise StartupError(str(e)) from None
    log.info("connected to the API server at %s (%s)", api.configuration.host, version or "?")
    return api


async def run(
    settings: ControllerSettings,
    server: str | None,
    identity: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    api: client.ApiClient | None = None,
) -> None:
    api = api or api_client(server)
    kube = Kube(api, concurrency)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    start_http_server(settings.metrics_port, registry=registry)
    backend = make_backend(settings, client.CoreV1Api(api))

    async def leading(stop: asyncio.Event) -> None:
        ctl = Controller(settings, kube, backend, metrics)
        await run_controller(ctl, build_registry(ctl, server, api.configuration), stop)

    if settings.leader_election:
        elector = LeaderElector(kube, settings.namespace, LEASE_NAME, identity, metrics)
        await elector.run(leading)
    else:
        await leading(asyncio.Event())


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena; with the API thread pool
    that fragments into tens of MiB that are never returned. Two arenas (what
    MALLOC_ARENA_MAX=2 does) keep the RSS flat; hand-written because the variable must be set
    before the interpreter starts and the image may not set it. No-op off glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


async def serve(
    settings: ControllerSettings,
    server: str | None,
    identity: str,
    concurrency: int,
    api: client.ApiClient | None = None,
) -> None:
    """``run`` until SIGTERM or SIGINT, then stop cleanly (a leader releases its Lease)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if task is not None:
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run(settings, server, identity, concurrency, api)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rotor-controller", description=__doc__)
    parser.add_argument("--server", help="API server URL (default: in-cluster or kubeconfig)")
    parser.add_argument(
        "--api-concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"parallel API requests, e.g. view writes (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, in-cluster, ~/.kube/config)"
    )
    parser.add_argument(
        "--connect-attempts",
        type=int,
        default=CONNECT_ATTEMPTS,
        help="tries to reach the API server at start, 2s apart, before exiting with status 1 "
        f"(default {CONNECT_ATTEMPTS})",
    )
    args = parser.parse_args(argv)
    try:
        settings = ControllerSettings.from_env()
    except InvalidSpec as e:
        print(f"rotor-controller: {e}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)
    limit_malloc_arenas()
    identity = os.environ.get("POD_NAME") or socket.gethostname()
    try:
        api = connect(args.server, args.kubeconfig, max(1, args.connect_attempts), CONNECT_DELAY)
    except StartupError as e:
        print(f"rotor-controller: {e}", file=sys.stderr)
        return 1
    try:
        asyncio.run(
            serve(
                settings,
                args.server,
                f"{identity}-{os.getpid()}",
                max(1, args.api_concurrency),
                api,
            )
        )
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
