"""Targets: what the writer's agent does with a value besides writing files (``spec.target``).

A target takes part in the rotation protocol at three points (:mod:`agent.engine`)::

    generate -> target.values_for (adds e.g. the username) -> prepare (pending stored)
             -> apply hook -> target.apply (e.g. ALTER ROLE ... PASSWORD) -> external -> commit
    ... overlap ends -> target.retire (e.g. lock the retired role) -> previous dropped

* :meth:`Target.apply` failing with :class:`TargetError` aborts the rotation: nothing is
  committed, consumers keep the pair they have, the reason is counted
  (``rotor_agent_target_failures_total``) and recorded on the source Secret
  (``rotor.dev/last-abort``), where the controller turns it into a condition reason and an
  Event. A rotation found pending after a restart is applied again (``apply`` is idempotent).
* :meth:`Target.retire` failing is counted and logged; the previous value is dropped from the
  files anyway (the overlap is over), and the next rotation resets that role.

Implementations: :class:`agent.targets.postgres.PostgresTarget` (psycopg, imported only when
such a target is built) and :class:`HookTarget` (a POST to a loopback URL at overlap end).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from rotor.errors import RotorError
from rotor.layout import SecretState
from rotor.logs import register_secret
from rotor.spec import HookTargetSpec, TargetSpec

log = logging.getLogger("rotor.agent.targets")

R_UNREACHABLE = "DatabaseUnreachable"
R_LOGIN_REFUSED = "AdminLoginRefused"
R_TEMPLATE_MISSING = "TemplateRoleMissing"
R_PERMISSION_DENIED = "PermissionDenied"
R_DATABASE_ERROR = "DatabaseError"
R_ADMIN_CREDENTIAL = "AdminCredentialMissing"
R_HOOK_FAILED = "OverlapEndHookFailed"
REASONS = (
    R_UNREACHABLE,
    R_LOGIN_REFUSED,
    R_TEMPLATE_MISSING,
    R_PERMISSION_DENIED,
    R_DATABASE_ERROR,
    R_ADMIN_CREDENTIAL,
    R_HOOK_FAILED,
)
"""Every reason a target reports (CamelCase: they become condition reasons)."""


class TargetError(RotorError):
    """A target step failed; ``reason`` is CamelCase, the message names things, never values."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Target(Protocol):
    kind: str

    def values_for(self, state: SecretState, generated: Mapping[str, bytes]) -> dict[str, bytes]:
        """The values to prepare: the generated ones plus what the target adds (pure)."""
        ...

    async def apply(self, state: SecretState) -> None:
        """Make ``state.pending`` valid where it is used, before the commit (idempotent)."""
        ...

    async def retire(self, state: SecretState) -> None:
        """``state.previous`` reached the end of its overlap: lock or drop it."""
        ...

    async def close(self) -> None: ...


AdminSource = Callable[[], Awaitable[tuple[str, str | None]]]
"""``() -> (user, password or None)``: the admin credential, read at each use (so a rotated
admin password is picked up)."""


class HookTarget:
    """``spec.target.hook``: POST ``{"secret", "version", "previous": {...}}`` to a loopback
    URL when the previous value's overlap ends (the app revokes it there); 2xx is success."""

    kind = "hook"

    def __init__(self, secret: str, spec: HookTargetSpec, timeout: float) -> None:
        from agent.hooks import _Http

        self.secret = secret
        self.spec = spec
        self._http = _Http(timeout)

    def values_for(self, state: SecretState, generated: Mapping[str, bytes]) -> dict[str, bytes]:
        return dict(generated)

    async def apply(self, state: SecretState) -> None:
        return None

    async def retire(self, state: SecretState) -> None:
        body = {
            "secret": self.secret,
            "version": state.version - 1,
            "current": state.version,
            "previous": {k: v.decode(errors="replace") for k, v in state.previous.items()},
        }
        try:
            status = await self._http.post(self.spec.overlap_end, body)
        except OSError as e:  # TimeoutError too
            raise TargetError(R_HOOK_FAILED, f"POST failed ({type(e).__name__})") from None
        if not 200 <= status < 300:
            raise TargetError(R_HOOK_FAILED, f"the hook answered {status}")

    async def close(self) -> None:
        await self._http.close()


def build_target(
    secret: str, spec: TargetSpec, admin: AdminSource | None, hook_timeout: float
) -> Target:
    """The target of ``spec`` (psycopg is imported here only for a PostgreSQL target)."""
    if spec.postgres is not None:
        from agent.targets.postgres import PostgresTarget

        if admin is None:
            raise RotorError("a PostgreSQL target needs an admin credential source")
        return PostgresTarget(secret, spec.postgres, admin)
    assert spec.hook is not None
    return HookTarget(secret, spec.hook, hook_timeout)


def file_admin(user: str, password_file: str | None) -> AdminSource:
    """The admin credential of standalone mode: ``user`` and the content of ``password_file``
    (read at each use; no file: no password, for peer or trust authentication)."""

    async def read() -> tuple[str, str | None]:
        if password_file is None:
            return user, None
        try:
            text = await asyncio.to_thread(Path(password_file).read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise TargetError(
                R_ADMIN_CREDENTIAL,
                f"cannot read admin.passwordFile {password_file} ({type(e).__name__})",
            ) from None
        password = text.strip()
        register_secret(password)  # a log line that holds it is dropped (rotor.logs)
        return user, password

    return read
