"""Test doubles of Rotor's store protocols, in memory (product code never imports them).

* :class:`MemoryStateStore`: an :class:`agent.store.SecretStore` (the engine's state) with the
  same compare-and-swap rules as :class:`agent.store.FileStore` and the source Secret;
* :class:`MemoryKVStore`: an external store with Vault's KV v2 semantics
  (:class:`rotor.external.ExternalStoreWriter` and ``ExternalStoreReader``), checked against a
  real OpenBao by ``tests/vault/test_conformance.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.store import Stored
from rotor.errors import ConflictError, NotFoundError, UnavailableError
from rotor.external import (
    RotorMetadata,
    StoreCheck,
    StoreRecord,
    StoreValues,
    kv_data,
    record_from_kv,
)
from rotor.layout import SecretState, checksum
from rotor.protocol import holds


class MemoryStateStore:
    """An :class:`agent.store.SecretStore` in memory, with the same compare-and-swap rules."""

    def __init__(self) -> None:
        self._state = SecretState()
        self._revision = 0
        self.writes = 0

    async def read(self) -> Stored:
        return Stored(self._state, str(self._revision) if self._revision else "")

    async def write(self, state: SecretState, token: str) -> str:
        current = str(self._revision) if self._revision else ""
        if token != current:
            raise ConflictError(f"state moved on (revision {current or 'none'}, not {token!r})")
        self._state, self._revision = state, self._revision + 1
        self.writes += 1
        return str(self._revision)


class MemoryKVStore:
    """An in-memory KV v2 store with Vault's semantics (versions, check-and-set, per-path custom
    metadata): both protocols of :mod:`rotor.external`, for tests of the engine and the
    controller without a server. The conformance suite (``tests/vault/test_conformance.py``)
    runs the same cases against it and against a real OpenBao, so it cannot drift from Vault.
    """

    def __init__(self) -> None:
        self._versions: dict[str, list[dict[str, str]]] = {}
        self._custom: dict[str, dict[str, str]] = {}
        self.unavailable = False
        """Set to make every call raise UnavailableError (a store that is down)."""

    def _up(self, path: str) -> None:
        if self.unavailable:
            raise UnavailableError(f"{path}: the store did not answer (memory store set down)")

    def _values(self, path: str, version: int | None) -> StoreValues | None:
        versions = self._versions.get(path.strip("/"))
        if not versions:
            return None
        number = version or len(versions)
        if not 1 <= number <= len(versions):
            return None
        return record_from_kv(number, versions[number - 1], self._custom.get(path.strip("/")), path)

    async def read_version(self, path: str) -> StoreRecord | None:
        self._up(path)
        got = self._values(path, None)
        return got.record if got else None

    async def read_values(self, path: str, version: int | None = None) -> StoreValues:
        self._up(path)
        got = self._values(path, version)
        if got is None:
            raise NotFoundError(f"reading {path}: no version {version or 'at all'} is stored")
        return got

    def put(self, path: str, values: Mapping[str, bytes], cas: int | None = None) -> int:
        """A plain KV write (``cas`` None: unconditional), as a person or another tool does."""
        key = path.strip("/")
        versions = self._versions.setdefault(key, [])
        if cas is not None and cas != len(versions):
            raise ConflictError(f"writing {path}: check-and-set parameter did not match")
        versions.append(kv_data(values, path))
        return len(versions)

    async def write_pending(
        self,
        path: str,
        values: Mapping[str, bytes],
        expected_version: int | None,
        metadata: RotorMetadata,
    ) -> int:
        self._up(path)
        digest = checksum(values)
        try:
            version = self.put(path, values, expected_version or 0)
        except ConflictError:
            current = self._values(path, None)
            if current is None or current.record is None or current.record.checksum != digest:
                raise
            version = current.store_version
        meta = RotorMetadata(
            metadata.rotor_version, digest, metadata.writer, metadata.rotated_at, metadata.secret
        )
        self._custom.setdefault(path.strip("/"), {}).update(meta.custom_metadata(version))
        return version

    async def check(self) -> StoreCheck:
        if self.unavailable:
            return StoreCheck(False, "Unreachable", "the memory store is set down")
        return StoreCheck(True, "Ready", "in-memory store")

    async def store_holds(self, path: str, rotor_version: int, checksum: str) -> bool:
        return holds(await self.read_version(path), checksum)
