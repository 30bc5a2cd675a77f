"""The serving certificate: read from files, reloaded in place when they change.

The server keeps one :class:`ssl.SSLContext`; a reload calls ``load_cert_chain`` on it, which
changes what *new* connections are offered (open keep-alive connections keep their session).
Before touching the live context the pair is loaded into a scratch context, so a half-written
pair (new certificate, old key) is skipped and the last good pair keeps serving; the next change
of either file tries again.

Changes are seen with ``watchfiles`` on the files' directories, not the files: a Kubernetes
Secret volume swaps a ``..data`` symlink, so the file names never change but the directory does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from watchfiles import awatch

from rotor.errors import InvalidSpec

log = logging.getLogger(__name__)

WATCH_RETRY_SECONDS = 5.0
DEFAULT_DEBOUNCE_MS = 1000
"""Wait for the writes of a cert-manager or controller update to settle before reloading."""
WATCH_STEP_MS = 500
"""How often the watcher thread wakes up (it takes the GIL each time): a certificate can wait."""


def _new_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class CertReloader:
    """Owns the server's SSL context and keeps it in step with the certificate files."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = _new_context()
        # Not resolved: a Secret volume's files link into a folder that is replaced on update.
        self._dirs = sorted({os.path.dirname(os.path.abspath(p)) for p in (cert_file, key_file)})
        # Not resolved: a Secret volume's files link into a folder that is replaced on update.
        self._dirs = sorted({os.path.dirname(os.path.abspath(p)) for p in (cert_file, key_file)})
        self._digest = b""
        try:
            self.reload()
        except (OSError, ssl.SSLError) as e:
            raise InvalidSpec(
                "ROTOR_WEBHOOK_CERT_FILE",
                f"cannot load {cert_file} and {key_file}: {e}",
                "mount a PEM certificate and its key there (see docs/webhook.md)",
            ) from None

    def _read_digest(self) -> bytes:
        h = hashlib.sha256()
        for path in (self.cert_file, self.key_file):
            h.update(Path(path).read_bytes())
            h.update(b"\0")
        return h.digest()

    def reload(self) -> bool:
        """Load the files if they changed; ``True`` when a new pair is now served.

        Raises ``OSError`` or ``ssl.SSLError`` for a missing, broken or mismatched pair (the
        last good pair stays in use).
        """
        digest = self._read_digest()
        if digest == self._digest:
            return False
        _new_context().load_cert_chain(self.cert_file, self.key_file)  # check the pair first
        self.context.load_cert_chain(self.cert_file, self.key_file)
        self._digest = digest
        return True

    async def watch(
        self,
        stop: asyncio.Event,
        on_reload: Callable[[bool], None] = lambda ok: None,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    ) -> None:
        """Reload on every change of the files' directories until ``stop`` is set.

        If watching itself fails (e.g. the folder was unmounted), it is logged and retried.
        """
        while not stop.is_set():
            try:
                await self._watch_once(stop, on_reload, debounce_ms)
            except Exception as e:  # keep serving; a watcher that died would never reload
                log.warning("watching %s failed (%s); retrying", self._dirs, e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), WATCH_RETRY_SECONDS)

    async def _watch_once(
        self, stop: asyncio.Event, on_reload: Callable[[bool], None], debounce_ms: int
    ) -> None:
        async for _ in awatch(
            *self._dirs, stop_event=stop, debounce=debounce_ms, step=WATCH_STEP_MS
        ):
            try:
                if self.reload():
                    log.info("reloaded the serving certificate from %s", self.cert_file)
                    on_reload(True)
            except (OSError, ssl.SSLError) as e:
                log.warning(
                    "cannot reload the serving certificate (%s); still serving the last good one",
                    e,
                )
                on_reload(False)
