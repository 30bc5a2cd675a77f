"""Env delivery's rolling restart: a workload that reads a secret as env vars is restarted
through its owner when its view changes, at most once per window (docs/webhook.md)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from controller.envrestart import RESTARTED_FOR, restart_delay
from controller.kube import path
from controller.model import RESTARTED_AT, parse_timestamp, read_workload
from rotor.layout import ANN_VERSION, view_name
from tests.controller.conftest import Harness, eventually, with_settings
from tests.controller.test_controller import (
    DB,
    WEB,
    _pending,
    commit_value,
    create,
    deployment_body,
    pod_body,
    writer_setup,
)

ENV = {"rotor.dev/ro": "shop/db", "rotor.dev/delivery": "env"}
WINDOW = 3.0


def test_a_workload_reading_a_secret_as_env_is_known_as_such() -> None:
    env = read_workload(deployment_body("web", "web", "web", ENV))
    files = read_workload(deployment_body("web", "web", "web", {"rotor.dev/ro": "shop/db"}))
    assert env is not None
    assert env.env == (DB,)
    assert files is not None
    assert files.env == ()


def test_the_window_holds_a_second_restart_back() -> None:
    assert restart_delay(None, 100.0, WINDOW) == 0.0
    assert restart_delay(99.0, 100.0, WINDOW) == 2.0
    assert restart_delay(90.0, 100.0, WINDOW) == 0.0


async def _view_version(h: Harness) -> int:
    view = await h.get("v1", "secrets", "web", view_name("shop", "db"))
    return int(((view or {}).get("metadata") or {}).get("annotations", {}).get(ANN_VERSION, 0))


async def _view_at(h: Harness, version: int) -> bool:
    return await _view_version(h) == version


async def _restarts(h: Harness) -> list[dict[str, Any]]:
    events = await h.kube.aitems(path("v1", "events", "web"))
    return sorted(
        (
            e
            for e in events
            if e.get("reason") == "Restarted"
            and e["involvedObject"]["kind"] == "Deployment"
            and e["involvedObject"]["name"] == "web"
        ),
        key=lambda e: e["firstTimestamp"],
    )


async def _template(h: Harness) -> dict[str, str]:
    dep = await h.get("apps/v1", "deployments", "web", "web")
    return dict(dep["spec"]["template"]["metadata"].get("annotations") or {})


@pytest.mark.slow  # about 15 s: ten rotations and a window
@with_settings(restart_min_interval=WINDOW)
async def test_env_readers_restart_once_per_window_over_ten_quick_rotations(rotor):
    await writer_setup(rotor)
    await create(rotor, "apps/v1", "deployments", deployment_body("web", "web", "web", ENV))
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", ENV))
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"), what="the RO request recorded")
    await rotor.backend.approve(DB, WEB, "ro")
    first = await commit_value(rotor, DB, b"value-number-0000")
    await eventually(lambda: _restarts(rotor), what="a restart once the view first holds a value")
    start = time.monotonic()
    last = first.version
    for i in range(1, 11):
        last = (await commit_value(rotor, DB, f"value-number-{i:04d}".encode())).version
        await eventually(lambda v=last: _view_at(rotor, v), what=f"view at {last}")

    async def for_the_last() -> bool:
        return (await _template(rotor)).get(RESTARTED_FOR) == f"{DB}@{last}"

    await eventually(for_the_last, timeout=WINDOW + 10, what="a restart for the last version")
    elapsed = time.monotonic() - start
    restarts = await _restarts(rotor)
    # 11 versions published; one restart per window (the one at the end of the last window
    # takes the newest version), not one per rotation
    windows = int(elapsed // WINDOW) + 2
    assert 2 <= len(restarts) <= windows < 11, (len(restarts), elapsed)
    times = [parse_timestamp(e["firstTimestamp"]) for e in restarts]
    assert all(b - a >= WINDOW - 1 for a, b in itertools.pairwise(times)), times
    print(f"{last - first.version} rotations in {elapsed:.1f}s: {len(restarts)} restarts")
    assert f"{DB} as env vars" in restarts[-1]["message"]
    assert f"version {last} was published" in restarts[-1]["message"]
    assert "rotor.dev/delivery: env" in restarts[-1]["message"]
    assert (await _template(rotor)).get(RESTARTED_AT)
    counted = rotor.metrics.env_restarts.labels("template")._value.get()
    assert counted == len(restarts)


@with_settings(restart_min_interval=0.5, restart_env_consumers=True)
async def test_a_workload_reading_files_is_not_restarted(rotor):
    await writer_setup(rotor)
    files = {"rotor.dev/ro": "shop/db"}
    await create(rotor, "apps/v1", "deployments", deployment_body("web", "web", "web", files))
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", files))
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"))
    await rotor.backend.approve(DB, WEB, "ro")
    state = await commit_value(rotor, DB, b"value-number-0000")
    await eventually(lambda: _view_at(rotor, state.version), what="view written")
    state = await commit_value(rotor, DB, b"value-number-0001")
    await eventually(lambda: _view_at(rotor, state.version), what="view written")
    await asyncio.sleep(1.0)  # a restart would have been made at once (no earlier one)
    assert RESTARTED_FOR not in await _template(rotor)
    assert await _restarts(rotor) == []


@with_settings(restart_method="evict", restart_min_interval=0.5)
async def test_the_least_privilege_mode_evicts_env_readers_and_patches_no_workload(rotor):
    # kmock has no pods/eviction subresource: answered here as the API server does without a
    # PodDisruptionBudget in the way (it deletes the pod)
    evicted: list[str] = []
    real_create = rotor.ctl.kube.acreate

    async def acreate(url: str, body: dict[str, Any]) -> Any:
        if url.endswith("/eviction"):
            evicted.append(body["metadata"]["name"])
            await rotor.ctl.kube.adelete(url.removesuffix("/eviction"))
            return {"kind": "Status", "status": "Success"}
        return await real_create(url, body)

    rotor.ctl.kube.acreate = acreate  # type: ignore[method-assign]
    await writer_setup(rotor)
    await create(rotor, "apps/v1", "deployments", deployment_body("web", "web", "web", ENV))
    labels = {"app": "web", "rotor.dev/injected": "true"}  # pod_body replaces its labels
    await create(rotor, "v1", "pods", pod_body("web", "web-0", "web", ENV, labels=labels))
    await eventually(lambda: _pending(rotor, DB, WEB, "ro"))
    await rotor.backend.approve(DB, WEB, "ro")
    await commit_value(rotor, DB, b"value-number-0000")
    (event,) = await eventually(lambda: _restarts(rotor), what="a restart by eviction")
    assert evicted == ["web-0"]
    assert "its pods evicted, restartMethod evict" in event["message"]
    assert RESTARTED_FOR not in await _template(rotor)  # no patch on the workload
    assert rotor.metrics.env_restarts.labels("evict")._value.get() == 1
