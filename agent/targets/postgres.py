"""The PostgreSQL target (``spec.target.postgres``): passwords changed before each commit.

Strategies (docs/database.md):

* ``alternating`` (default): two roles ``<role>_a`` and ``<role>_b``. Each rotation changes the
  password of the role that is *not* current, then the engine commits ``{username, password}``
  of that role as current. The pair consumers hold (current, or previous during the overlap)
  stays valid until the rotation after next, so a client that reads its files and logs in never
  meets a password that was just changed: zero failed logins. Roles that do not exist are
  created (``LOGIN``, members of ``template`` when given, so they get its grants). At the end of
  the overlap the retired role is locked (``NOLOGIN``; ``terminate`` also ends its sessions;
  ``keep`` leaves it); the next rotation unlocks it with its new password.
* ``per-version``: a new role ``<role>_v<N>`` for each version (created like the alternating
  ones and marked as Rotor's by a ``COMMENT ON ROLE``, :func:`version_marker`; no other role is
  ever dropped), dropped with its sessions terminated when its overlap ends (objects it owns are
  reassigned to ``template`` first, or dropped without one). Stale version roles (e.g. skipped
  by a rotate-now inside an overlap) are dropped at the next rotation or overlap end; the
  current and the previous version's roles are never touched. ``onOverlapEnd: keep`` keeps them.
* ``single``: one role, its password changed in place. A client that read the old password
  just before the change fails its next login and must re-read and retry.

Every password goes to the server as a SCRAM-SHA-256 verifier computed here by libpq
(``PQencryptPasswordConn`` through psycopg's ``PGconn.encrypt_password``), never as plain text,
so neither the server log (even with ``log_statement=all``) nor ``pg_stat_activity`` ever holds
a password. Errors carry names and reasons only.

psycopg 3 is imported by this module only, which the agent loads only for such a target.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from agent.targets import (
    R_DATABASE_ERROR,
    R_LOGIN_REFUSED,
    R_PERMISSION_DENIED,
    R_TEMPLATE_MISSING,
    R_UNREACHABLE,
    AdminSource,
    TargetError,
)
from rotor.layout import SecretState
from rotor.spec import PostgresTargetSpec

log = logging.getLogger("rotor.agent.targets.postgres")

APPLICATION_NAME = "rotor-agent"
_REFUSED = (
    "authentication failed",
    "no pg_hba.conf entry",
    "does not exist",  # role "x" does not exist / database "x" does not exist
    "password is required",
    "no password supplied",
    "not permitted to log in",
)


def next_role(spec: PostgresTargetSpec, state: SecretState) -> str:
    """The role the next value is for: the one that is not current (``single``: the role)."""
    if spec.strategy == "single":
        return spec.role
    if spec.strategy == "per-version":
        return spec.version_role(state.version + 1)
    a, b = spec.roles
    current = state.current.get(spec.username_key, b"").decode(errors="replace")
    return b if current == a else a


def retired_role(spec: PostgresTargetSpec, state: SecretState) -> str | None:
    """The role whose overlap just ended (``None``: nothing to lock, e.g. ``single``)."""
    if spec.strategy == "single" or spec.on_overlap_end == "keep":
        return None
    previous = state.previous.get(spec.username_key, b"").decode(errors="replace")
    current = state.current.get(spec.username_key, b"").decode(errors="replace")
    if not spec.owns(previous) or previous == current:
        return None  # never lock the role consumers use now
    return previous


def version_marker(spec: PostgresTargetSpec) -> str:
    """The comment Rotor puts on each per-version role it creates (``COMMENT ON ROLE``): only
    roles carrying it are dropped, never another role that merely has the ``<role>_v<N>`` shape
    (a person's, or one made before Rotor marked its roles: drop those by hand)."""
    return f"rotor.dev: per-version role of {spec.role}"


def _classify_connect(e: psycopg.Error, where: str) -> TargetError:
    text = str(e).lower()
    if "authentication method requirement" in text or "channel binding" in text:
        return TargetError(
            R_LOGIN_REFUSED,
            f"{where} did not offer SCRAM-SHA-256 for the admin login (the password was not "
            "sent); set password_encryption = scram-sha-256, re-set the admin's password and "
            "use scram-sha-256 in pg_hba.conf",
        )
    if any(p in text for p in _REFUSED):
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        return TargetError(R_LOGIN_REFUSED, f"{where} refused the admin login ({first})")
    return TargetError(R_UNREACHABLE, f"cannot connect to {where} ({_short(e)})")


def _short(e: psycopg.Error) -> str:
    """A one-line description of a server error: class, SQLSTATE and primary message only
    (never the statement, which may hold a verifier)."""
    primary = e.diag.message_primary if e.diag is not None else None
    text = primary or (str(e).strip().splitlines() or [type(e).__name__])[-1]
    state = f" {e.sqlstate}" if e.sqlstate else ""
    return f"{type(e).__name__}{state}: {text}"


class PostgresTarget:
    kind = "postgres"

    def __init__(self, secret: str, spec: PostgresTargetSpec, admin: AdminSource) -> None:
        self.secret = secret
        self.spec = spec
        self.admin = admin

    @property
    def where(self) -> str:
        s = self.spec
        at = s.host if s.host.startswith("/") else f"{s.host}:{s.port}"
        return f"PostgreSQL {at}/{s.database}"

    def values_for(self, state: SecretState, generated: Mapping[str, bytes]) -> dict[str, bytes]:
        out = dict(generated)
        out[self.spec.username_key] = next_role(self.spec, state).encode()
        return out

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        user, password = await self.admin()
        s = self.spec
        params: dict[str, Any] = {
            "host": s.host,
            "port": s.port,
            "dbname": s.database,
            "user": user,
            "sslmode": s.sslmode,
            "connect_timeout": max(1, round(s.connect_timeout)),
            "application_name": APPLICATION_NAME,
        }
        if password is not None:
            # The password goes only into a SCRAM exchange: libpq refuses a server (or whoever
            # answers for it) that asks for it in clear or as md5; with TLS required, the
            # exchange is also bound to the TLS channel (a relaying man in the middle fails).
            params["password"] = password
            params["require_auth"] = "scram-sha-256"
            if s.sslmode in ("require", "verify-ca", "verify-full"):
                params["channel_binding"] = "require"
        if s.sslrootcert is not None:
            params["sslrootcert"] = s.sslrootcert
        try:
            return await psycopg.AsyncConnection.connect(autocommit=True, **params)
        except psycopg.Error as e:
            raise _classify_connect(e, self.where) from None
        except OSError as e:  # e.g. a socket folder that does not exist
            raise TargetError(R_UNREACHABLE, f"cannot connect to {self.where} ({e})") from None

    async def apply(self, state: SecretState) -> None:
        """Set the pending password on the pending role (creating the role if absent)."""
        s = self.spec
        role = state.pending[s.username_key].decode()
        password = state.pending[s.password_key]
        if not s.owns(role):
            raise TargetError(
                R_DATABASE_ERROR, f"pending username {role!r} is not a role of the spec"
            )
        conn = await self._connect()
        try:
            verifier = conn.pgconn.encrypt_password(password, role.encode(), b"scram-sha-256")
            if s.strategy == "per-version" and s.on_overlap_end != "keep":
                keep = {role, _user(state.current, s.username_key)}
                keep.add(_user(state.previous, s.username_key))  # still previous if we abort
                await self._drop_stale(conn, keep)
            async with conn.transaction():
                await self._ensure_role(conn, role)
                await conn.execute(
                    sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(verifier.decode())
                    )
                )
        except TargetError:
            raise
        except psycopg.errors.InsufficientPrivilege as e:
            raise TargetError(
                R_PERMISSION_DENIED,
                f"{self.where}: admin {await self._admin_user()!r} may not change role "
                f"{role!r} ({_short(e)}); grant it CREATEROLE (and ADMIN OPTION on the roles)",
            ) from None
        except psycopg.OperationalError as e:
            raise TargetError(
                R_UNREACHABLE, f"{self.where}: connection lost ({_short(e)})"
            ) from None
        except psycopg.Error as e:
            raise TargetError(R_DATABASE_ERROR, f"{self.where}: {_short(e)}") from None
        finally:
            await conn.close()
        log.info(
            "password changed secret=%s role=%s version=%d", self.secret, role, state.version + 1
        )

    async def _admin_user(self) -> str:
        try:
            return (await self.admin())[0]
        except TargetError:
            return "?"

    async def _exists(self, conn: psycopg.AsyncConnection[Any], role: str) -> bool:
        cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        return await cur.fetchone() is not None

    async def _ensure_role(self, conn: psycopg.AsyncConnection[Any], role: str) -> None:
        s = self.spec
        if s.template is not None and not await self._exists(conn, s.template):
            raise TargetError(
                R_TEMPLATE_MISSING,
                f"spec.target.postgres.template: role {s.template!r} does not exist in "
                f"{self.where}; create it (with the grants the app needs) or fix the name",
            )
        if await self._exists(conn, role):
            return
        await conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        if s.strategy == "per-version":  # only roles carrying this mark are ever dropped
            await conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    sql.Identifier(role), sql.Literal(version_marker(s))
                )
            )
        if s.template is not None:
            await conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(s.template), sql.Identifier(role))
            )
        log.info("role created secret=%s role=%s template=%s", self.secret, role, s.template)

    async def retire(self, state: SecretState) -> None:
        """Lock the role whose overlap ended (and end its sessions with ``terminate``)."""
        role = retired_role(self.spec, state)
        if role is None:
            return
        conn = await self._connect()
        try:
            if self.spec.strategy == "per-version":
                failed = await self._drop_stale(
                    conn, {_user(state.current, self.spec.username_key)}
                )
                if failed:
                    raise TargetError(R_DATABASE_ERROR, f"{self.where}: {'; '.join(failed)}")
            elif await self._exists(conn, role):
                await conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
                if self.spec.on_overlap_end == "terminate":
                    await self._terminate(conn, role)
        except TargetError:
            raise
        except psycopg.errors.InsufficientPrivilege as e:
            raise TargetError(R_PERMISSION_DENIED, f"{self.where}: {_short(e)}") from None
        except psycopg.Error as e:
            raise TargetError(R_DATABASE_ERROR, f"{self.where}: {_short(e)}") from None
        finally:
            await conn.close()
        log.info(
            "role retired secret=%s role=%s action=%s",
            self.secret,
            role,
            self.spec.on_overlap_end,
        )

    async def _terminate(self, conn: psycopg.AsyncConnection[Any], role: str) -> None:
        """End the sessions of ``role`` (locked already). PostgreSQL allows it only to members of
        ``pg_signal_backend`` (or of the role): without it, a PermissionDenied naming the grant."""
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = %s AND pid <> pg_backend_pid()",
                (role,),
            )
        except psycopg.errors.InsufficientPrivilege as e:
            raise TargetError(
                R_PERMISSION_DENIED,
                f"{self.where}: role {role!r} is locked but its sessions were not ended "
                f"({_short(e)}); GRANT pg_signal_backend TO {await self._admin_user()} "
                "(docs/database.md)",
            ) from None

    async def _drop_stale(self, conn: psycopg.AsyncConnection[Any], keep: set[str]) -> list[str]:
        """per-version: drop every version role of this target but ``keep``, ending its
        sessions first. Returns what could not be dropped (a role that owns objects: own them
        by the template role instead, docs/database.md); the next call tries again."""
        prefix = self.spec.role + "_v"
        cur = await conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) "
            "AND shobj_description(oid, 'pg_authid') = %s",
            (prefix, version_marker(self.spec)),
        )
        stale = sorted(r for (r,) in await cur.fetchall() if self.spec.owns(r) and r not in keep)
        failed: list[str] = []
        for role in stale:
            ident = sql.Identifier(role)
            try:
                await conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
                try:
                    await self._terminate(conn, role)
                except TargetError as e:
                    failed.append(str(e))  # dropped all the same: it can log in no more
                await conn.execute(sql.SQL("DROP ROLE {}").format(ident))
            except psycopg.errors.DependentObjectsStillExist:
                failed.append(
                    f"role {role!r} owns objects and cannot be dropped; own them by the "
                    "template role (or REASSIGN OWNED BY it), then it is dropped next time"
                )
                continue
            except psycopg.OperationalError:
                raise
            except psycopg.Error as e:
                failed.append(f"role {role!r}: {_short(e)}")
                continue
            log.info("version role dropped secret=%s role=%s", self.secret, role)
        for text in failed:
            log.warning("secret=%s: %s", self.secret, text)
        return failed

    async def close(self) -> None:
        return None


def _user(values: Mapping[str, bytes], key: str) -> str:
    return values.get(key, b"").decode(errors="replace")
