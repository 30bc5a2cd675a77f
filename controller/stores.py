"""External stores: each ExternalStore's ``Ready`` check (when it appears or its spec changes,
and every ``store_check_interval``), whether every store of a secret holds its committed version
(checked once per version), and whether the fan-out is held until they do (the queue retries
it with backoff)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controller import decide
from controller.kube import path
from controller.model import RotatingSecretObs, SourceObs, meta
from rotor import API
from rotor import status as st
from rotor.errors import InvalidSpec, LoginFailed, NotFoundError, RotorError
from rotor.external import StoreCheck
from rotor.names import SecretRef
from rotor.spec import ExternalStoreSpec

if TYPE_CHECKING:
    from controller.operator import Controller

log = logging.getLogger("rotor.controller")

StoreKey = tuple[str, str]


class StoreChecks:
    """What is known of each ExternalStore, its readers, and the store sync of each secret."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.readers: dict[StoreKey, Any] = {}
        self._synced: dict[SecretRef, str] = {}
        """The checksum every external store of a secret was last seen to hold."""
        self._meta: dict[StoreKey, tuple[str, str, list[Any]]] = {}
        """ExternalStore -> (uid, spec digest, observed conditions)."""
        self._checked: dict[StoreKey, tuple[str, float]] = {}
        """ExternalStore -> (spec digest checked, when)."""
        self._ready: dict[StoreKey, StoreCheck] = {}
        self._wake = asyncio.Event()

    # -- intake (no I/O) ----------------------------------------------------------------------
    def observe(self, key: StoreKey, obj: Mapping[str, Any]) -> None:
        """An ExternalStore added or changed: a new or changed spec is checked now."""
        spec_digest = json.dumps(obj.get("spec"), sort_keys=True)
        status = obj.get("status") or {}
        before = self._meta.get(key)
        if before is not None and before[1] != spec_digest:
            self.readers.pop(key, None)  # a changed spec; our status writes keep it
        self._meta[key] = (
            str(meta(obj).get("uid") or ""),
            spec_digest,
            list(status.get("conditions") or []),
        )
        if self._checked.get(key, ("", 0.0))[0] != spec_digest:
            self._wake.set()  # a new or changed store: check it now

    def forget(self, key: StoreKey) -> None:
        self.readers.pop(key, None)
        self._meta.pop(key, None)
        self._checked.pop(key, None)
        self._ready.pop(key, None)
        with contextlib.suppress(KeyError):
            self.ctl.metrics.store_ready.remove(*key)

    # -- ExternalStore Ready ------------------------------------------------------------------
    async def loop(self) -> None:
        """Check each ExternalStore when it appears or its spec changes, and every
        ``store_check_interval``; the result is its ``Ready`` condition."""
        settings = self.ctl.settings
        while True:
            now = self.ctl.clock()
            due = [
                key
                for key, (_uid, digest, _c) in list(self._meta.items())
                if self._checked.get(key, ("", 0.0))[0] != digest
                or now - self._checked[key][1] >= settings.store_check_interval
            ]
            if due:
                await asyncio.gather(*(self.check_store(k) for k in due), return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=min(settings.store_check_interval, 5.0)
                )
            self._wake.clear()

    async def check_store(self, key: StoreKey) -> StoreCheck:
        ctl = self.ctl
        meta_ = self._meta.get(key)
        found = ctl.index.stores.get(key)
        if meta_ is None or found is None:
            return StoreCheck(False, "Invalid", "the ExternalStore is gone")
        uid, digest, observed = meta_
        if isinstance(found, InvalidSpec):
            check = StoreCheck(False, "Invalid", str(found))
        else:
            try:
                reader = await self._new_reader(key, found)
                check = await reader.check()
            except RotorError as e:  # login refused (or no token), or the token Secret unreadable
                auth = isinstance(e, LoginFailed)
                check = StoreCheck(False, "AuthFailed" if auth else "Unreachable", str(e))
            else:
                if check.ready:  # the fresh token serves the fan-out checks too
                    self.readers[key] = reader
        self._checked[key] = (digest, ctl.clock())
        previous = self._ready.get(key)
        self._ready[key] = check
        ctl.metrics.store_ready.labels(*key).set(1 if check.ready else 0)
        if not check.ready:
            ctl.metrics.errors.labels("store").inc()
            if previous is None or (previous.ready, previous.reason) != (False, check.reason):
                log.warning("ExternalStore %s/%s: %s: %s", *key, check.reason, check.message)
                with contextlib.suppress(RotorError):
                    await ctl.events.post(
                        key[0], "ExternalStore", key[1], uid, check.reason, check.message
                    )
        cond = st.Condition(
            "Ready", "True" if check.ready else "False", check.reason, check.message
        )
        conditions = st.merge_conditions(observed, [cond], ctl.clock())
        if conditions != observed:
            url = path(API, "externalstores", key[0], key[1], "status")
            with contextlib.suppress(NotFoundError):
                await ctl.kube.apatch(url, {"status": {"conditions": conditions}})
                self._meta[key] = (uid, digest, conditions)
        if previous is None or previous.ready != check.ready:
            ctl.mark(ctl.index.secrets_using(key))
        return check

    # -- a secret's stores --------------------------------------------------------------------
    async def check_stores(
        self, obs: RotatingSecretObs, source: SourceObs | None
    ) -> decide.StoreSync:
        """Does every external store of the secret hold its committed version? Checked (by
        checksum of the values read back) once per committed version; until every store holds
        it, nothing is published."""
        spec = obs.spec
        if spec is None or not spec.external_stores:
            return decide.StoreSync("none")
        if source is None or not source.publishable:
            return decide.StoreSync("unverified", "no committed version to check yet")
        assert source.state is not None
        digest = source.state.checksum
        where = ", ".join(f"{s.store}:{s.path}" for s in spec.external_stores)
        if self._synced.get(obs.ref) == digest:
            return decide.StoreSync("synced", f"{where} hold version {source.state.version}")
        for ref in spec.external_stores:
            key = (obs.ref.namespace, ref.store)
            found = self.ctl.index.stores.get(key)
            if found is None:
                return decide.StoreSync(
                    "unverified", f"ExternalStore {key[0]}/{key[1]} does not exist"
                )
            if isinstance(found, InvalidSpec):
                return decide.StoreSync("unverified", f"ExternalStore {key[0]}/{key[1]}: {found}")
            try:
                reader = await self.reader(key, found)
                held = await reader.store_holds(ref.path, source.state.version, digest)
            except RotorError as e:
                self.ctl.metrics.errors.labels("store").inc()
                return decide.StoreSync("unavailable", f"{ref.store}:{ref.path}: {e}")
            if not held:
                return decide.StoreSync(
                    "behind",
                    f"{ref.store}:{ref.path} does not hold version {source.state.version}",
                )
        self._synced[obs.ref] = digest
        return decide.StoreSync("synced", f"{where} hold version {source.state.version}")

    @staticmethod
    def held(stores: decide.StoreSync, source: SourceObs | None) -> bool:
        """Whether the fan-out waits for a store to hold the version (the queue then
        reconciles the secret again with its backoff, :mod:`controller.queue`)."""
        return stores.state in ("behind", "unavailable") or (
            stores.state == "unverified" and source is not None and source.publishable
        )

    async def reader(self, key: StoreKey, spec: ExternalStoreSpec) -> Any:
        """A Vault reader per ExternalStore, kept until the store or its check changes."""
        reader = self.readers.get(key)
        if reader is None:
            reader = await self._new_reader(key, spec)
            self.readers[key] = reader
        return reader

    async def _new_reader(self, key: StoreKey, spec: ExternalStoreSpec) -> Any:
        """A reader with the token read now from the ExternalStore's Secret (its namespace), or
        Kubernetes auth with the controller's own service-account token (hvac is imported
        lazily: it is only needed here)."""
        from controller.vault import VaultReader

        token = None
        ref = spec.vault.auth.token_secret
        if ref is not None:
            secret = await self.ctl.kube.aget(path("v1", "secrets", key[0], ref.name)) or {}
            raw = (secret.get("data") or {}).get(ref.key)
            token = base64.b64decode(raw).decode().strip() if raw else None
        return VaultReader.from_spec(spec.vault, token=token)
