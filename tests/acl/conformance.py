"""The conformance suite of :class:`rotor.acl.AclBackend`: every ACL backend passes these checks.

A check is an async function of an :class:`AclHarness`: ``operator`` is the backend as the
controller uses it (register secrets, file requests, read snapshots) and ``admin`` as an admin's
``rotor acl`` uses it (approve, deny, revoke). For the ConfigMap backend both are the same object;
the canister checks the caller's role, so there they hold different identities.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from rotor.acl import AccessRequest, AclBackend, AclSnapshot, Grant
from rotor.errors import NotFoundError
from rotor.names import Principal, SecretRef

DB = SecretRef("shop", "db-password")
OTHER = SecretRef("shop", "api-token")
WEB = Principal("shop", "web")
API = Principal("shop", "api")
REPORTS = Principal("reports", "cron")


@dataclass
class AclHarness:
    operator: AclBackend
    admin: AclBackend


Check = Callable[[AclHarness], Awaitable[None]]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


def pending(snap: AclSnapshot) -> set[tuple[SecretRef, Principal, str, str]]:
    return {(r.secret, r.principal, r.mode, r.state) for r in snap.requests}


@check
async def starts_empty(h: AclHarness) -> None:
    snap = await h.operator.snapshot()
    assert snap.grants == frozenset()
    assert snap.requests == ()
    assert snap.secrets == frozenset()


@check
async def register_is_idempotent_and_bumps_version(h: AclHarness) -> None:
    v0 = (await h.operator.snapshot()).version
    await h.operator.register_secret(DB)
    v1 = (await h.operator.snapshot()).version
    await h.operator.register_secret(DB)
    snap = await h.operator.snapshot()
    assert v1 > v0
    assert snap.version == v1
    assert snap.secrets == frozenset({DB})


@check
async def request_for_unknown_secret_is_refused(h: AclHarness) -> None:
    with pytest.raises(NotFoundError):
        await h.operator.request_access(OTHER, WEB, "ro")
    assert (await h.operator.snapshot()).requests == ()


@check
async def request_is_pending_and_idempotent(h: AclHarness) -> None:
    await h.operator.register_secret(DB)
    await h.operator.request_access(DB, WEB, "ro")
    first = await h.operator.snapshot()
    await h.operator.request_access(DB, WEB, "ro")
    again = await h.operator.snapshot()
    assert first.requests == (AccessRequest(DB, WEB, "ro", "pending"),)
    assert again == first
    assert not first.allows(DB, WEB, "ro")


@check
async def approve_grants_and_clears_the_request(h: AclHarness) -> None:
    await h.operator.register_secret(DB)
    await h.operator.request_access(DB, WEB, "ro")
    await h.admin.approve(DB, WEB, "ro")
    snap = await h.operator.snapshot()
    assert snap.grants == frozenset({Grant(DB, WEB, "ro")})
    assert snap.requests == ()
    assert snap.allows(DB, WEB, "ro")
    # asking again keeps the grant and files nothing
    await h.operator.request_access(DB, WEB, "ro")
    assert await h.operator.snapshot() == snap


@check
async def approve_without_a_request(h: AclHarness) -> None:
    await h.operator.register_secret(DB)
    await h.admin.approve(DB, API, "rw")
    await h.admin.approve(DB, REPORTS, "ro")
    snap = await h.operator.snapshot()
    assert snap.grants == frozenset({Grant(DB, API, "rw"), Grant(DB, REPORTS, "ro")})
    assert snap.allows(DB, API, "ro")  # a writer reads what it writes


@check
async def revoke_removes_and_is_idempotent(h: AclHarness) -> None:
    await h.operator.register_secret(DB)
    await h.admin.approve(DB, WEB, "ro")
    await h.admin.revoke(DB, WEB, "ro")
    snap = await h.operator.snapshot()
    assert snap.grants == frozenset()
    assert not snap.allows(DB, WEB, "ro")
    await h.admin.revoke(DB, WEB, "ro")
    assert (await h.operator.snapshot()).version == snap.version


@check
async def deny_is_recorded_and_sticks(h: AclHarness) -> None:
    await h.operator.register_secret(DB)
    await h.operator.request_access(DB, WEB, "ro")
    await h.admin.deny(DB, WEB, "ro")
    snap = await h.operator.snapshot()
    assert pending(snap) == {(DB, WEB, "ro", "denied")}
    await h.operator.request_access(DB, WEB, "ro")  # the controller asks again: still denied
    assert pending(await h.operator.snapshot()) == {(DB, WEB, "ro", "denied")}
    await h.admin.approve(DB, WEB, "ro")  # an admin may change their mind
    snap = await h.operator.snapshot()
    assert snap.allows(DB, WEB, "ro")
    assert snap.requests == ()


@check
async def version_only_grows(h: AclHarness) -> None:
    versions = [(await h.operator.snapshot()).version]
    steps: list[Callable[[], Awaitable[None]]] = [
        lambda: h.operator.register_secret(DB),
        lambda: h.operator.request_access(DB, WEB, "ro"),
        lambda: h.admin.approve(DB, WEB, "ro"),
        lambda: h.operator.request_access(DB, API, "rw"),
        lambda: h.admin.deny(DB, API, "rw"),
        lambda: h.admin.revoke(DB, WEB, "ro"),
    ]
    for step in steps:
        await step()
        versions.append((await h.operator.snapshot()).version)
    assert all(b > a for a, b in itertools.pairwise(versions))
