"""Shared test helpers: free ports and external tools (which CI must have)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, cond: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll ``cond`` until it returns something truthy and return that; fail naming ``what``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Await ``check`` (a plain or async callable) until it is truthy and return that; fail
    after ``timeout`` naming ``what``. The async twin of :func:`wait_until`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert loop.time() < deadline, f"{what} not met in time"
        await asyncio.sleep(0.02)


def require_tool(name: str, how: str) -> str:
    """Path of an external program; skip with the install hint, but fail in CI (it must be
    there)."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({how})"
    if IN_CI:
        pytest.fail(message + "; CI installs it through `make setup-dev`")
    pytest.skip(message)


# The slow tiers: whole processes, compilers and real servers (each over a few seconds, see
# `pytest --durations`). `pytest -m "not slow"` is the fast loop for iterations (2-3 minutes);
# CI runs everything. A test may also carry @pytest.mark.slow itself.
SLOW_PATHS = (
    "tests/system/",
    "tests/images/",  # builds both images first (about 100 s even with the layers cached)
    "tests/canister/test_motoko.py",
    "tests/vault/test_controller_running.py",
    "tests/controller/test_main.py",
)
SLOW_TESTS = frozenset(
    {
        "test_reader_process_never_sees_a_torn_empty_or_mixed_read",
        "test_prometheus_scrapes_the_agent_and_promtool_accepts_the_text",  # a real Prometheus
        "test_every_answer_is_well_formed_and_every_patch_applies",  # hypothesis, about 5 s
    }
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kube",
        choices=("emulator", "real"),
        default=os.environ.get("ROTOR_TEST_KUBE", "emulator"),
        help="the Kubernetes API under tests/system: the emulator (default) or a real control "
        "plane built by `make kube-bin` (also ROTOR_TEST_KUBE=real)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = str(config.rootpath) + os.sep
    for item in items:
        where = str(item.path).removeprefix(root)
        if where.startswith(SLOW_PATHS) or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
