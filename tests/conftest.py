"""Shared test helpers: free ports and external tools (which CI must have)."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
