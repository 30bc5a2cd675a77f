"""Talking to the app: the apply hook (before a commit) and the reload notification (after).

Apply hook (``rotor.dev/apply-hook``, ``--apply-hook``): the agent POSTs the pending values as
JSON to a loopback URL and commits only on a 2xx answer::

    {"secret": "shop/db-password", "version": 13,
     "values": {"password": "<new value>"}, "current": {"password": "<value in use>"}}

Any other answer, a timeout (``ROTOR_HOOK_TIMEOUT``, default 10 s) or a connection error aborts
the rotation; the engine backs off exponentially and counts the failure. The hook must be
idempotent: after a restart in the middle of a rotation the same values are posted again.

Reload (``rotor.dev/reload``, ``--reload``):

* ``signal:HUP`` (or USR1, ...): sent to the app's process, found by ``pid`` or by process name
  (``/proc/<pid>/comm`` or the base name of ``argv[0]``), never to the agent itself. In a pod this
  needs ``shareProcessNamespace``, which the webhook sets.
* ``http://127.0.0.1:PORT/PATH``: a POST with ``{"secret": ..., "version": N, "files": [...]}``
  (names only, no value); 2xx is success.
* ``none``: the app watches its files.

The POSTs go through :mod:`agent.http` (asyncio streams and h11, kept alive between calls);
the agent loads no aiohttp (see that module for why).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.http import Pool, post_json
from rotor.annotations import Reload

log = logging.getLogger("rotor.agent.hooks")


class _Http:
    """Kept-alive connections to the app's URL, shared by the calls of one hook.

    Raises TimeoutError after ``timeout`` seconds, another OSError when the app cannot be
    reached or breaks HTTP. Redirects are not followed (the answer's status is the result).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pool: Pool | None = None

    async def post(self, url: str, body: Mapping[str, Any]) -> int:
        if self._pool is None:
            self._pool = Pool(url)
        return await post_json(url, json.dumps(body).encode(), self.timeout, self._pool)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


@dataclass(frozen=True)
class HookResult:
    ok: bool
    reason: str  # "2xx" status text like "200", or "timeout", "connection", "status:500"


class ApplyHook:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self._http = _Http(timeout)

    async def apply(
        self,
        secret: str,
        version: int,
        values: Mapping[str, bytes],
        current: Mapping[str, bytes],
    ) -> HookResult:
        body = {
            "secret": secret,
            "version": version,
            "values": {k: v.decode() for k, v in values.items()},
            "current": {k: v.decode() for k, v in current.items()},
        }
        try:
            status = await self._http.post(self.url, body)
        except TimeoutError:
            return HookResult(False, "timeout")
        except OSError:
            return HookResult(False, "connection")
        if 200 <= status < 300:
            return HookResult(True, str(status))
        return HookResult(False, f"status:{status}")

    async def close(self) -> None:
        await self._http.close()


def find_processes(name: str, proc: Path = Path("/proc"), exclude: int | None = None) -> list[int]:
    """Pids whose ``comm`` or ``argv[0]`` base name is ``name`` (not ``exclude``)."""
    exclude = os.getpid() if exclude is None else exclude
    out: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue
        if name in (comm, os.path.basename(argv0)):
            out.append(int(entry.name))
    return sorted(out)


class Reloader:
    """Tells the app that new files are in place."""

    def __init__(
        self,
        reload: Reload,
        *,
        process: str = "",
        pid: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.reload = reload
        self.process = process
        self.pid = pid
        self._http = _Http(timeout)

    @property
    def method(self) -> str:
        return self.reload.kind

    def signal_pids(self, secret: str, pids: list[int]) -> bool:
        """Send the reload signal to every one of ``pids``; False if any could not be signalled."""
        ok = True
        for pid in pids:
            try:
                os.kill(pid, self.reload.signum)
            except OSError as e:
                log.warning("reload secret=%s: signal to pid %d failed: %s", secret, pid, e)
                ok = False
        return ok

    async def notify(self, secret: str, version: int, files: list[str]) -> bool:
        if self.reload.kind == "none":
            return True
        if self.reload.kind == "signal":
            pids = [self.pid] if self.pid is not None else find_processes(self.process)
            if not pids:
                log.warning("reload secret=%s: no process named %r", secret, self.process)
                return False
            return self.signal_pids(secret, pids)
        try:
            status = await self._http.post(
                self.reload.url, {"secret": secret, "version": version, "files": files}
            )
        except OSError as e:  # TimeoutError included
            log.warning("reload secret=%s: POST failed: %s", secret, type(e).__name__)
            return False
        if not 200 <= status < 300:
            log.warning("reload secret=%s: POST answered %d", secret, status)
        return 200 <= status < 300

    async def close(self) -> None:
        await self._http.close()
