"""Controller tests: the strict Kubernetes emulator (tests/kubeemu.py) and a running controller
(kopf operator plus the controller loops as asyncio tasks against the emulator)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from controller.acl.configmap import ConfigMapAclBackend
from controller.kube import Kube, path
from controller.metrics import Metrics
from controller.operator import Controller
from controller.runner import build_registry, run_controller
from rotor import API
from rotor.settings.controller import ControllerSettings
from tests.kubeemu import EmulatorThread, kube_emulator

__all__ = ["Harness", "eventually", "kube_emulator", "running_controller"]

DEADLINE = 20.0


async def eventually(check: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail at the deadline."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > end:
            pytest.fail(f"not reached within {timeout}s: {what or check}; last={last!r}")
        await asyncio.sleep(0.05)


@dataclass
class Harness:
    emu: EmulatorThread
    ctl: Controller
    kube: Kube
    core: client.CoreV1Api
    backend: ConfigMapAclBackend
    metrics: Metrics

    async def rsec(self, ns: str, name: str, spec: dict[str, Any] | None = None) -> Any:
        body = {
            "apiVersion": API,
            "kind": "RotatingSecret",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec or {"keys": [{"name": "password", "generator": {"type": "password"}}]},
        }
        return await self.kube.acreate(path(API, "rotatingsecrets", ns), body)

    async def get(self, api: str, plural: str, ns: str, name: str) -> Any:
        return await self.kube.aget(path(api, plural, ns, name))

    async def status(self, ns: str, name: str) -> dict[str, Any]:
        obj = await self.get(API, "rotatingsecrets", ns, name)
        return (obj or {}).get("status") or {}

    async def condition(self, ns: str, name: str, ctype: str) -> dict[str, Any]:
        for c in (await self.status(ns, name)).get("conditions") or []:
            if c["type"] == ctype:
                return dict(c)
        return {}


@pytest.fixture
def controller_settings() -> ControllerSettings:
    return ControllerSettings(
        acl_poll=0.3, restart_min_interval=60.0, max_staleness=600.0, uninjected_sweep=0.5
    )


class ControllerThread:
    """The controller (kopf and its loops) on its own event loop in a background thread.

    kopf cancels every task it did not see before it started when it stops; on a loop of its
    own that cannot reach the test's tasks."""

    def __init__(self, ctl: Controller, server: str) -> None:
        self.ctl, self.server = ctl, server
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_flag: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rotor-controller", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_flag = asyncio.Event()
            ready = asyncio.Event()
            task = asyncio.create_task(
                run_controller(
                    self.ctl, build_registry(self.ctl, self.server), self.stop_flag, ready
                )
            )
            await asyncio.wait(
                {task, asyncio.create_task(ready.wait())}, return_when="FIRST_COMPLETED"
            )
            self.ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as e:
            self.error = e
            self.ready.set()

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(DEADLINE) or self.error is not None:
            raise RuntimeError(f"the controller did not start: {self.error!r}")

    def stop(self) -> None:
        if self.loop is not None and self.stop_flag is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_flag.set)
        self.thread.join(DEADLINE)


async def running_controller(
    emu: EmulatorThread, settings: ControllerSettings
) -> AsyncIterator[Harness]:
    api = emu.api_client()
    kube = Kube(api)
    core = client.CoreV1Api(api)
    backend = ConfigMapAclBackend(core, settings.namespace, settings.acl_configmap)
    metrics = Metrics(CollectorRegistry())
    ctl = Controller(settings, kube, backend, metrics)
    runner = ControllerThread(ctl, emu.url)
    await asyncio.to_thread(runner.start)
    try:
        yield Harness(emu, ctl, kube, core, backend, metrics)
    finally:
        await asyncio.to_thread(runner.stop)
        kube.close()


@pytest.fixture
async def rotor(kube_emulator, controller_settings) -> AsyncIterator[Harness]:
    async for h in running_controller(kube_emulator, controller_settings):
        yield h


def with_settings(**changes: Any) -> Any:
    return pytest.mark.parametrize(
        "controller_settings",
        [replace(ControllerSettings(acl_poll=0.3, uninjected_sweep=0.5), **changes)],
    )
