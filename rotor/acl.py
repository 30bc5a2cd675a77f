"""The access-control list: its types and the backend protocol every ACL source implements.

A grant is (secret ``ns/name``, principal ``ns/serviceaccount``, mode ``rw|ro``). Backends: the
ConfigMap (embedded default) and the Internet Computer canister. Both pass one conformance suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from rotor.names import Principal, SecretRef

Mode = Literal["rw", "ro"]
RequestState = Literal["pending", "approved", "denied"]


@dataclass(frozen=True, order=True)
class Grant:
    secret: SecretRef
    principal: Principal
    mode: Mode


@dataclass(frozen=True, order=True)
class AccessRequest:
    secret: SecretRef
    principal: Principal
    mode: Mode
    state: RequestState = "pending"


@dataclass(frozen=True, order=True)
class SkippedEntry:
    """An ACL entry a backend left out: where it is (``acl.grants[1]``), the secret it names as
    stored (maybe not a valid name) and why."""

    where: str
    secret: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where} (secret {self.secret!r}): {self.problem}"


@dataclass(frozen=True)
class AclSnapshot:
    """One consistent reading of the ACL. ``version`` only grows."""

    version: int
    grants: frozenset[Grant] = field(default_factory=frozenset)
    requests: tuple[AccessRequest, ...] = ()
    secrets: frozenset[SecretRef] = field(default_factory=frozenset)
    """Secrets the backend knows (a request for an unknown secret is refused)."""
    skipped: tuple[SkippedEntry, ...] = ()
    """Entries the backend could not use (e.g. a name that is not a Kubernetes name); they are
    left out and the rest of the ACL applies."""

    def allows(self, secret: SecretRef, principal: Principal, mode: Mode) -> bool:
        if Grant(secret, principal, mode) in self.grants:
            return True
        # a writer may read what it writes
        return mode == "ro" and Grant(secret, principal, "rw") in self.grants


@runtime_checkable
class AclBackend(Protocol):
    """An ACL source. Every method may raise :class:`~rotor.errors.UnavailableError` (retry,
    keep the last good snapshot) or :class:`~rotor.errors.PermanentError`."""

    name: str

    async def snapshot(self) -> AclSnapshot:
        """Read the whole ACL (grants, pending requests, known secrets)."""
        ...

    async def register_secret(self, secret: SecretRef) -> None:
        """Make the secret known (idempotent)."""
        ...

    async def request_access(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        """Record a pending request (idempotent; a granted one stays granted)."""
        ...

    async def approve(self, secret: SecretRef, principal: Principal, mode: Mode) -> None: ...

    async def deny(self, secret: SecretRef, principal: Principal, mode: Mode) -> None: ...

    async def revoke(self, secret: SecretRef, principal: Principal, mode: Mode) -> None: ...
