"""External stores (Vault/OpenBao KV v2): the protocols, the metadata Rotor writes beside each
value, and its KV encoding. The decisions of rotation step 3, recovery and the controller's hold
are the protocol's (:mod:`rotor.protocol`).

What Rotor writes at ``<mount>/data/<path>`` for one RotatingSecret:

* the KV data ``{<file>: <value as a UTF-8 string>}`` (one entry per file, the same names as the
  Secret's data keys; every generator makes text: passwords, tokens, hex, UUIDs, PEM keys);
* a new KV version with check-and-set (``cas`` = the version Rotor expects to replace, 0 to
  create), so a change made by someone else in between is never overwritten;
* then the secret's custom metadata (:class:`RotorMetadata`, never a value): Rotor version,
  rotated-at, writer, checksum and the store version it describes. KV v2 keeps custom metadata
  per path, not per version, so the metadata is trusted only while its ``rotor-store-version``
  and ``rotor-checksum`` match the current version (:meth:`RotorMetadata.parse`).

The checksum (:func:`rotor.layout.checksum`) of the values a store holds is what every decision
compares: it is computed from the data read back, so it holds even if the metadata write after
the data write was lost.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from rotor.errors import (
    InvalidSpec,
    PermanentError,
)
from rotor.layout import checksum, format_time, parse_time

META_ROTOR_VERSION = "rotor-version"
META_STORE_VERSION = "rotor-store-version"
META_ROTATED_AT = "rotor-rotated-at"
META_WRITER = "rotor-writer"
META_CHECKSUM = "rotor-checksum"
META_SECRET = "rotor-secret"  # noqa: S105 - a metadata key
META_KEYS = (
    META_ROTOR_VERSION,
    META_STORE_VERSION,
    META_ROTATED_AT,
    META_WRITER,
    META_CHECKSUM,
    META_SECRET,
)

ReadyReason = Literal["Ready", "Unreachable", "AuthFailed", "MountNotFound", "NotKV2", "Invalid"]


# -- metadata ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RotorMetadata:
    """What Rotor records beside the values it writes (custom metadata; never a value)."""

    rotor_version: int
    checksum: str
    writer: str
    rotated_at: float
    secret: str = ""  # ``namespace/name`` of the RotatingSecret

    def custom_metadata(self, store_version: int) -> dict[str, str]:
        """KV v2 custom metadata (string to string) describing ``store_version``.

        Vault refuses empty values, so an empty writer or secret is left out.
        """
        out = {
            META_ROTOR_VERSION: str(self.rotor_version),
            META_STORE_VERSION: str(store_version),
            META_ROTATED_AT: format_time(self.rotated_at),
            META_WRITER: self.writer,
            META_CHECKSUM: self.checksum,
            META_SECRET: self.secret,
        }
        return {k: v for k, v in out.items() if v}

    @classmethod
    def parse(
        cls, custom: Mapping[str, object] | None, store_version: int, checksum: str
    ) -> RotorMetadata | None:
        """Rotor's metadata if it describes exactly this version and these values, else None.

        Tolerant: metadata written by someone else, or left from an earlier version, is None.
        """
        if not custom:
            return None
        try:
            if int(str(custom.get(META_STORE_VERSION))) != store_version:
                return None
            if custom.get(META_CHECKSUM) != checksum:
                return None
            return cls(
                rotor_version=int(str(custom.get(META_ROTOR_VERSION))),
                checksum=checksum,
                writer=str(custom.get(META_WRITER) or ""),
                rotated_at=parse_time(str(custom.get(META_ROTATED_AT)), META_ROTATED_AT),
                secret=str(custom.get(META_SECRET) or ""),
            )
        except (ValueError, InvalidSpec):
            return None


@dataclass(frozen=True)
class StoreRecord:
    """What a store holds now at one path: its current version and the checksum of its values."""

    store_version: int
    checksum: str
    rotor: RotorMetadata | None = None
    """Rotor's metadata when it describes this very version (Rotor wrote it), else None."""
    deleted: bool = False
    """The current version was deleted or destroyed: it holds no values, only its number."""

    @property
    def rotor_version(self) -> int | None:
        return self.rotor.rotor_version if self.rotor else None

    @property
    def written_by_rotor(self) -> bool:
        return self.rotor is not None


@dataclass(frozen=True)
class StoreValues:
    """The values of one store version; ``__repr__`` never shows them."""

    store_version: int
    values: Mapping[str, bytes] = field(default_factory=dict)
    record: StoreRecord | None = None

    def __repr__(self) -> str:
        return f"StoreValues(store_version={self.store_version}, files={sorted(self.values)})"


@dataclass(frozen=True)
class StoreCheck:
    """The ExternalStore Ready condition: ``reason`` is one of :data:`ReadyReason`."""

    ready: bool
    reason: ReadyReason
    message: str


# -- protocols ---------------------------------------------------------------------------------
@runtime_checkable
class ExternalStoreWriter(Protocol):
    """The agent's view of one external store (rotation step 3 and recovery).

    Every method may raise :class:`~rotor.errors.UnavailableError` (retry with backoff; nothing
    was lost: the pending values stay in the source Secret), :class:`~rotor.errors.PermanentError`
    (e.g. the policy lacks a capability; the message names the path and the capability) or, for
    :meth:`write_pending`, :class:`~rotor.errors.ConflictError` (the store moved: re-read).
    """

    async def read_version(self, path: str) -> StoreRecord | None:
        """The current version at ``path`` (None when nothing is stored there)."""
        ...

    async def read_values(self, path: str, version: int | None = None) -> StoreValues:
        """The values of ``version`` (the current one by default); NotFoundError if absent."""
        ...

    async def write_pending(
        self,
        path: str,
        values: Mapping[str, bytes],
        expected_version: int | None,
        metadata: RotorMetadata,
    ) -> int:
        """Write ``values`` as a new version with check-and-set on ``expected_version`` (None:
        the path must not exist yet), then Rotor's metadata; return the new store version.

        Idempotent: if the check-and-set fails because the current version already holds exactly
        these values (a retry after a lost answer), that version is returned.
        """
        ...


@runtime_checkable
class ExternalStoreReader(Protocol):
    """The controller's view of one external store: Ready check, fan-out hold, propagation."""

    async def check(self) -> StoreCheck:
        """Log in and read the mount's configuration: is the store usable?"""
        ...

    async def read_version(self, path: str) -> StoreRecord | None: ...

    async def read_values(self, path: str, version: int | None = None) -> StoreValues: ...

    async def store_holds(self, path: str, rotor_version: int, checksum: str) -> bool:
        """Whether the store's current version at ``path`` holds the values with ``checksum``."""
        ...


# -- KV v2 encoding ----------------------------------------------------------------------------
def kv_data(values: Mapping[str, bytes], path: str) -> dict[str, str]:
    """KV data ``{file: text}``. KV v2 stores JSON strings; Rotor's values are all text."""
    out: dict[str, str] = {}
    for name, raw in values.items():
        try:
            out[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentError(
                f"{path}: the value of {name!r} is not UTF-8 text, and KV v2 stores strings; "
                "use a generator that makes text (every built-in one does)"
            ) from None
    return out


def values_from_kv(data: Mapping[str, object] | None, path: str) -> dict[str, bytes]:
    """The values of KV data read back; a non-string entry is refused with its key named."""
    out: dict[str, bytes] = {}
    for name, value in (data or {}).items():
        if not isinstance(value, str):
            raise InvalidSpec(
                f"{path}.{name}",
                f"is a {type(value).__name__}, not a string",
                "write every key of a Rotor-managed path as a string",
            )
        out[name] = value.encode("utf-8")
    return out


def record_from_kv(
    version: int,
    data: Mapping[str, object] | None,
    custom: Mapping[str, object] | None,
    path: str,
    *,
    deleted: bool = False,
) -> StoreValues:
    """Decode one KV v2 read (``data.data``, ``data.metadata.version``, ``custom_metadata``)."""
    values = {} if deleted else values_from_kv(data, path)
    digest = checksum(values)
    rotor = None if deleted else RotorMetadata.parse(custom, version, digest)
    return StoreValues(version, values, StoreRecord(version, digest, rotor, deleted))


def ssl_context(ca_bundle: str) -> ssl.SSLContext:
    """A client TLS context that trusts the ExternalStore's ``caBundle`` (PEM), built in memory
    (the agent's root filesystem is read-only, so no temporary CA file)."""
    try:
        return ssl.create_default_context(cadata=ca_bundle)
    except (ssl.SSLError, ValueError):
        raise InvalidSpec(
            "spec.vault.caBundle", "is not a readable PEM certificate bundle", "paste the CA PEM"
        ) from None
