"""An OpenBao dev server (``bao server -dev``) as a process, for the demo and the system tests:
in-memory storage, a KV v2 mount at ``secret/``, a known root token, on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from rotorctl.processes import HarnessError, Proc, free_port, wait_for

VAULT_TOKEN = "root"  # noqa: S105 - the dev server's root token id, local and throwaway


class DevServer:
    """One ``bao server -dev``; :meth:`start` returns once ``/v1/sys/health`` answers 200."""

    def __init__(self, bao: str, log: Path, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(
            "openbao",
            [
                bao,
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                f"-dev-root-token-id={VAULT_TOKEN}",
            ],
            dict(env),
            log,
        )

    def start(self, cancel: threading.Event | None = None) -> DevServer:
        self.proc.start()
        wait_for(self._healthy, "OpenBao's /v1/sys/health", cancel=cancel)
        return self

    def _healthy(self) -> bool:
        if not self.proc.running:
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=2) as r:  # noqa: S310
                return bool(r.status == 200)
        except OSError:
            return False

    def _call(self, path: str, body: object = None) -> None:
        req = urllib.request.Request(  # noqa: S310 - the local dev server
            f"{self.url}/v1/{path}",
            data=json.dumps(body or {}).encode(),
            method="PUT",
            headers={"X-Vault-Token": VAULT_TOKEN},
        )
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass

    def seal(self) -> None:
        """Down the way it goes down in production: sealed, every call answers 503.
        (Stopping a dev server would lose its in-memory data; sealing keeps it.)"""
        self._call("sys/seal")

    def unseal(self) -> None:
        key = ""
        for line in self.proc.log.read_text(errors="replace").splitlines():
            if line.startswith("Unseal Key:"):
                key = line.split(":", 1)[1].strip()
        if not key:
            raise HarnessError("no unseal key in the OpenBao dev server's output")
        self._call("sys/unseal", {"key": key})

    def version(self, path: str) -> int:
        """The current KV v2 version at ``secret/<path>`` (0: none or not readable)."""
        req = urllib.request.Request(  # noqa: S310 - the local dev server
            f"{self.url}/v1/secret/metadata/{path}", headers={"X-Vault-Token": VAULT_TOKEN}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
                return int(json.loads(r.read())["data"]["current_version"])
        except (OSError, ValueError, KeyError):
            return 0
