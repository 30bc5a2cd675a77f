"""Vault as a source: the controller's side of the audit receiver (``ROTOR_AUDIT_RECEIVER_URL``).

* :func:`audit_config` (pure) says which KV paths the receiver must watch (every
  ``spec.externalStores`` path of every RotatingSecret whose ExternalStore is valid) and which
  identities are Rotor's own (the Kubernetes auth roles of the ExternalStores); the controller
  writes it as the ConfigMap ``ROTOR_AUDIT_CONFIGMAP`` (key ``config.json``) in its namespace,
  which the receiver mounts and re-reads.
* :class:`VaultSource` long-polls the receiver (:func:`controller.auditclient.fetch_events`,
  over HTTP only; a refused token is reported, not retried like a lost connection); for each
  event it reads the path's current version (:meth:`controller.vault.VaultReader.read_values`),
  decides with :func:`controller.propagate.decide_propagation`, and on ``propagate`` patches
  the source Secret with a resourceVersion precondition (the new version, the values from Vault,
  the previous ones kept for ``overlap``). The fan-out then sends it to RO consumers as for any
  commit (the store holds it, so the hold passes).
* Every referenced path is re-read when the receiver restarted (a new epoch: events may be lost),
  when the receiver could not be reached, and every ``ROTOR_AUDIT_RECHECK``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from controller.kube import Obj, path
from controller.model import RotatingSecretObs, meta
from controller.propagate import decide_propagation
from rotor.auditwire import EventsPage, render_config
from rotor.errors import (
    ConflictError,
    ForbiddenError,
    InvalidSpec,
    NotFoundError,
    RetryableError,
    RotorError,
)
from rotor.layout import SecretState
from rotor.names import SecretRef
from rotor.protocol import secret_patch
from rotor.retry import Backoff
from rotor.spec import ExternalStoreSpec

if TYPE_CHECKING:
    from controller.operator import Controller

log = logging.getLogger("rotor.controller.vaultsource")

CONFIG_KEY = "config.json"
POLL_WAIT = 30.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Target:
    """One RotatingSecret's store path that a write in Vault may change."""

    secret: SecretRef
    store: tuple[str, str]
    mount: str
    path: str  # under the mount
    full: str  # <mount>/<path>


def targets(
    rsecs: Mapping[SecretRef, RotatingSecretObs],
    stores: Mapping[tuple[str, str], ExternalStoreSpec | InvalidSpec],
) -> list[Target]:
    """Every (secret, store, path) whose ExternalStore exists and is valid."""
    out = []
    for ref, obs in sorted(rsecs.items()):
        if obs.spec is None or obs.deleting:
            continue
        for x in obs.spec.external_stores:
            key = (ref.namespace, x.store)
            spec = stores.get(key)
            if isinstance(spec, ExternalStoreSpec):
                mount = spec.vault.mount.strip("/")
                p = x.path.strip("/")
                out.append(Target(ref, key, mount, p, f"{mount}/{p}"))
    return out


def audit_config(
    rsecs: Mapping[SecretRef, RotatingSecretObs],
    stores: Mapping[tuple[str, str], ExternalStoreSpec | InvalidSpec],
) -> str:
    """The receiver's config file: referenced paths, and Rotor's roles (agents and controller
    log in with the ExternalStores' Kubernetes roles)."""
    roles = {
        s.vault.auth.kubernetes_role
        for s in stores.values()
        if isinstance(s, ExternalStoreSpec) and s.vault.auth.kubernetes_role
    }
    pairs: Iterable[tuple[str, str]] = ((t.mount, t.path) for t in targets(rsecs, stores))
    return render_config(pairs, roles=sorted(r for r in roles if r))


class VaultSource:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.settings = ctl.settings
        self.since = 0
        self.epoch = ""
        self._config_written = ""
        self._last_recheck = 0.0
        self._reported = ""
        """The last permanent failure logged (logged again only when it changes)."""

    def _token(self) -> str:
        f = self.settings.audit_receiver_token_file
        if not f:
            return ""
        try:
            return Path(f).read_text().strip()
        except OSError as e:
            log.warning("audit receiver token %s: %s", f, e.strerror)
            return ""

    # -- the receiver's config -------------------------------------------------------------------
    async def write_config(self) -> None:
        text = audit_config(self.ctl.index.rsecs, self.ctl.index.stores)
        if text == self._config_written:
            return
        ns, name = self.settings.namespace, self.settings.audit_configmap
        body: Obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "rotor"},
            },
            "data": {CONFIG_KEY: text},
        }
        await self.ctl.kube.aapply(path("v1", "configmaps", ns), body)
        self._config_written = text

    async def config_loop(self, every: float = 2.0) -> None:
        while True:
            try:
                await self.write_config()
            except RotorError as e:
                self.ctl.metrics.errors.labels("audit").inc()
                log.warning("audit receiver config: %s", e)
            await asyncio.sleep(every)

    # -- events ----------------------------------------------------------------------------------
    async def loop(self) -> None:
        import aiohttp  # only with a receiver configured

        from controller.auditclient import fetch_events

        waits = Backoff(RETRY_MIN, RETRY_MAX)
        timeout = aiohttp.ClientTimeout(total=POLL_WAIT + 15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    page = await fetch_events(
                        session,
                        self.settings.audit_receiver_url,
                        self.since,
                        self.epoch,
                        POLL_WAIT,
                        self._token(),
                    )
                except RotorError as e:
                    self.ctl.metrics.errors.labels("audit").inc()
                    self.epoch = ""  # events may be lost meanwhile: re-check when it answers
                    await asyncio.sleep(self._after_failure(waits, e))
                    continue
                waits.reset()
                self._reported = ""
                await self._on_page(page)

    def _after_failure(self, waits: Backoff, e: RotorError) -> float:
        """Seconds to wait after a failed poll. No answer (or 429/5xx) backs off from
        ``RETRY_MIN``; a refused token or an answer that is not a page is not a blip: an error
        logged once per cause, with the fix, and the poll tried again every ``RETRY_MAX`` (the
        token file is read again each time)."""
        if isinstance(e, RetryableError):
            delay = waits.next(e.delay)
            log.warning("audit receiver: %s (retrying in %.0fs)", e, delay)
            return delay
        if str(e) != self._reported:
            self._reported = str(e)
            fix = (
                "the receiver refuses the controller's token: ROTOR_AUDIT_RECEIVER_TOKEN_FILE must"
                " hold the token in the receiver's ROTOR_AUDIT_EVENTS_TOKEN_FILE"
                if isinstance(e, ForbiddenError)
                else "run the receiver of the controller's version"
            )
            log.error("audit receiver: %s; %s (trying again every %.0fs)", e, fix, RETRY_MAX)
        return RETRY_MAX

    async def _on_page(self, page: EventsPage) -> None:
        recheck = page.reset or not self.epoch or page.dropped > 0
        self.since, self.epoch = page.last, page.epoch
        now = time.monotonic()
        if recheck or now - self._last_recheck >= self.settings.audit_recheck:
            self._last_recheck = now
            await self.recheck_all()
        else:
            for changed in sorted({e.path for e in page.events}):
                await self.propagate_path(changed)

    async def recheck_all(self) -> None:
        for full in sorted({t.full for t in self._targets()}):
            await self.propagate_path(full)

    def _targets(self) -> list[Target]:
        return targets(self.ctl.index.rsecs, self.ctl.index.stores)

    async def propagate_path(self, full: str) -> None:
        for t in self._targets():
            if t.full == full.strip("/"):
                try:
                    await self.propagate(t)
                except RotorError as e:
                    self.ctl.metrics.errors.labels("audit").inc()
                    log.warning("propagating %s to %s: %s", full, t.secret, e)

    async def propagate(self, t: Target) -> str:
        """Read the store, decide, and patch the source Secret; returns the decision's reason."""
        obs = self.ctl.index.rsecs.get(t.secret)
        found = self.ctl.index.stores.get(t.store)
        if obs is None or obs.spec is None or not isinstance(found, ExternalStoreSpec):
            return "NotFound"
        reader = await self.ctl.stores.reader(t.store, found)
        try:
            read = await reader.read_values(t.path)
        except NotFoundError:
            read = None
        where = f"{t.store[1]}:{t.full}"
        url = path("v1", "secrets", t.secret.namespace, t.secret.name)
        for _ in range(CONFLICT_RETRIES):
            obj = await self.ctl.kube.aget(url)
            if obj is None:
                return "NotFound"
            m = meta(obj)
            state = SecretState.from_secret(obj.get("data"), m.get("annotations"))
            decision = decide_propagation(
                state,
                read,
                obs.spec.files,
                self.ctl.clock(),
                obs.spec.rotation.overlap,
                where,
            )
            self.ctl.metrics.propagations.labels(decision.reason).inc()
            if decision.action == "reject":
                with contextlib.suppress(RotorError):
                    await self.ctl.event(obs, decision.reason, decision.message)
            if decision.action != "propagate" or decision.state is None:
                if decision.action != "none" or decision.reason not in ("InSync", "RotorWrite"):
                    log.info("%s: %s", t.secret, decision.message)
                return decision.reason
            new = decision.state
            patch = secret_patch(
                new, obj.get("data") or {}, resource_version=m.get("resourceVersion")
            )
            try:
                result = await self.ctl.kube.apatch(url, patch)
            except ConflictError:
                continue  # someone moved (a rotation): read again and decide again
            self.ctl.on_secret("MODIFIED", result)
            log.info("%s: %s", t.secret, decision.message)
            with contextlib.suppress(RotorError):
                await self.ctl.event(obs, "Propagated", decision.message, "Normal")
            return decision.reason
        raise ConflictError(f"{t.secret}: the source Secret kept changing")
