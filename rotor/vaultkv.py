"""The hvac client core that the agent's writer and the controller's reader share.

:class:`VaultKV` is one Vault/OpenBao KV v2 mount reached through hvac: the CA bundle trusted
from memory, the login (a token, or Kubernetes auth with a service-account token), each hvac call
run in a worker thread with its errors mapped to Rotor's (:func:`vault_error`
decides; :func:`map_exception` reads hvac's and requests' exceptions for it), one login again
after a permission error, and the reads of a version. ``agent.vault.VaultStore`` adds the write;
``controller.vault.VaultReader`` adds the Ready check, ``whoami`` and the fan-out hold.

This is the one module of :mod:`rotor` that does network I/O and imports hvac: only the processes
that talk to a store import it (through ``agent.vault`` or ``controller.vault``, both imported
lazily); the webhook never does (an import-linter contract checks that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import hvac
import hvac.exceptions
import requests
import requests.adapters

from rotor.errors import (
    ConflictError,
    ForbiddenError,
    LoginFailed,
    NotFoundError,
    PermanentError,
    RotorError,
    UnavailableError,
    from_status,
    kind_of,
)
from rotor.external import StoreRecord, StoreValues, record_from_kv, ssl_context

DEFAULT_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path
DEFAULT_TIMEOUT = 10.0
CAP_READ = '["read"]'

# hvac raises one exception class per status and keeps no status on it (hvac.exceptions,
# hvac.utils.raise_for_error); the class gives it back. An unlisted status is UnexpectedError: 0.
_STATUS = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.UnsupportedOperation: 405,
    hvac.exceptions.PreconditionFailed: 412,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}

MAX_DETAIL = 200
"""Longest part of a store's own error text copied into a Rotor error (it names no value)."""

T = TypeVar("T")


class TokenSource(Protocol):
    """A Vault token login: whatever yields the token to use at each (re-)login."""

    def read(self) -> str: ...


@dataclass(frozen=True)
class KubernetesLogin:
    """Vault's Kubernetes auth: the process's service-account token and a Vault role."""

    role: str
    mount: str = "kubernetes"
    jwt_file: str = DEFAULT_SA_TOKEN


Login = TokenSource | KubernetesLogin


class _CAAdapter(requests.adapters.HTTPAdapter):
    """Trust exactly the spec's CA bundle, from memory (requests itself takes only a path)."""

    def __init__(self, ca_bundle: str) -> None:
        self._ctx = ssl_context(ca_bundle)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ctx
        super().init_poolmanager(*args, **kwargs)


def _session(ca_bundle: str | None) -> requests.Session | None:
    if not ca_bundle:
        return None
    session = requests.Session()
    session.mount("https://", _CAAdapter(ca_bundle))
    return session


CAS_REFUSED = "check-and-set parameter did not match"
"""Vault KV v2's error for a check-and-set mismatch (a 400, like any other bad request)."""


def vault_error(
    status: int | None,
    errors: Sequence[str],
    *,
    action: str,
    path: str,
    capability: str,
    tls: bool = False,
) -> RotorError:
    """The Vault edge: a Vault/OpenBao answer to Rotor's errors, through the one status table
    (:func:`rotor.errors.from_status`); ``errors`` (Vault's ``errors`` list) is carried as the
    payload. ``status`` None: no answer at all (``errors``: its cause; ``tls``: the handshake
    failed, which retrying will not mend); 0: hvac did not say which status.

    ``path`` is the API path (``secret/data/shop/db``) and ``capability`` what a policy must
    grant there, so a permission error tells the operator exactly what to add.
    """
    detail = " ".join(", ".join(errors).split())[:MAX_DETAIL]
    where = f"{action} {path}"
    if status is None and tls:
        return PermanentError(
            f"{where}: the store's TLS certificate was not trusted; "
            "check spec.vault.caBundle and the server name",
            payload=list(errors),
        )
    if status is None:
        return UnavailableError(
            f"{where}: the store did not answer ({detail})", payload=list(errors)
        )
    # Vault KV v2 refuses a check-and-set mismatch with a 400 and only its errors list tells it
    # from any other bad request (OpenBao/Vault API docs, KV v2 "Create/Update Secret", the
    # ``cas`` option; hvac raises InvalidRequest for every 400): the one place text is read.
    if status == 400 and any(CAS_REFUSED in e for e in errors):
        return ConflictError(
            f"{where}: the store's version moved (check-and-set failed); re-read it, never "
            "overwrite",
            status=status,
            payload=list(errors),
        )
    # 412: Vault's "missing eventually consistent data; should be retried" (API docs, "HTTP
    # status codes"); the table's 412 is a plain refusal.
    kind = UnavailableError if status == 412 else kind_of(status)
    message = _vault_message(kind, where, status, detail, capability, path)
    if status == 412:
        return UnavailableError(message, status=status, payload=list(errors))
    return from_status(status, message, payload=list(errors))


def _vault_message(
    kind: type[RotorError], where: str, status: int, detail: str, capability: str, path: str
) -> str:
    if issubclass(kind, ForbiddenError):
        return (
            f"{where}: permission denied; the token's policy must grant {capability} "
            f'on path "{path}" (or the token is invalid or expired)'
        )
    if issubclass(kind, NotFoundError):
        return f"{where}: not found"
    if issubclass(kind, UnavailableError):
        return f"{where}: the store answered {status} ({detail})"
    return f"{where}: the store refused the request: {status} {detail}"


def status_of(exc: hvac.exceptions.VaultError) -> int:
    """The HTTP status behind an hvac exception (0 when hvac did not say)."""
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 0)


def errors_of(exc: hvac.exceptions.VaultError) -> list[str]:
    """Vault's ``errors`` list of the answer (or hvac's message); it names no value."""
    if isinstance(exc.errors, list) and exc.errors:
        return [str(e) for e in exc.errors]
    if isinstance(exc.errors, str) and exc.errors:
        return [exc.errors]
    return [str(exc.args[0])] if exc.args and exc.args[0] else []


def map_exception(exc: Exception, *, action: str, path: str, capability: str) -> RotorError:
    """hvac/requests exceptions to Rotor's errors; other exceptions are bugs and not mapped."""
    if isinstance(exc, hvac.exceptions.VaultError):  # it answered: hvac's class is the status
        return vault_error(
            status_of(exc), errors_of(exc), action=action, path=path, capability=capability
        )
    if isinstance(exc, requests.exceptions.RequestException):  # no answer: why, by type
        tls = isinstance(exc, requests.exceptions.SSLError)
        return vault_error(
            None, [type(exc).__name__], action=action, path=path, capability=capability, tls=tls
        )
    raise exc


class VaultKV:
    """One Vault/OpenBao KV v2 mount through hvac: login, mapped calls, reads."""

    login_error: ClassVar[type[LoginFailed]] = LoginFailed
    """What a refused login raises (the controller names it ``AuthFailed``)."""
    account: ClassVar[str] = "this process's"
    """Whose service account a Kubernetes login uses, for the refused-login message."""

    def __init__(
        self,
        server: str,
        mount: str,
        login: Login,
        *,
        ca_bundle: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server = server.rstrip("/")
        self.mount = mount.strip("/")
        self.login_method = login
        self._client = hvac.Client(url=self.server, timeout=timeout, session=_session(ca_bundle))
        self._logged_in = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.server!r}, mount={self.mount!r}, {self.login_method!r})"
        )

    def data_path(self, path: str) -> str:
        return f"{self.mount}/data/{path.strip('/')}"

    def metadata_path(self, path: str) -> str:
        return f"{self.mount}/metadata/{path.strip('/')}"

    # -- login --------------------------------------------------------------------------------
    def _login_sync(self) -> None:
        """Log in; every failure arrives as a Rotor error (a refusal as ``login_error``)."""
        how = self.login_method
        if not isinstance(how, KubernetesLogin):
            self._client.token = how.read()
            self._logged_in = True
            return
        try:
            jwt = Path(how.jwt_file).read_text().strip()
        except OSError as exc:
            raise self.login_error(
                f"cannot read the service-account token {how.jwt_file} for Vault "
                f"Kubernetes auth: {exc.strerror}"
            ) from None
        where = f"auth/{how.mount}/login"
        action = f"logging in as role {how.role!r} at"
        try:
            self._client.auth.kubernetes.login(how.role, jwt, mount_point=how.mount)
        except hvac.exceptions.VaultError as exc:  # it answered
            err = map_exception(exc, action=action, path=where, capability="")
            if isinstance(err, UnavailableError):
                raise err from None
            raise self.login_error(
                f"Vault Kubernetes login at {where} as role {how.role!r} was refused; check that "
                f"the role exists and binds {self.account} service account and namespace"
            ) from None
        except requests.exceptions.RequestException as exc:  # no answer
            raise map_exception(exc, action=action, path=where, capability="") from None
        self._logged_in = True

    async def login(self) -> None:
        await asyncio.to_thread(self._login_sync)

    async def _run(
        self, action: str, api_path: str, capability: str, fn: Callable[[], T], retry: bool = True
    ) -> T:
        """Run one hvac call in a thread, logging in first; map errors in one place."""

        def call() -> T:
            if not self._logged_in:
                self._login_sync()
            try:
                return fn()
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                raise map_exception(
                    exc, action=action, path=api_path, capability=capability
                ) from None

        try:
            return await asyncio.to_thread(call)
        except PermanentError as exc:
            if not retry or not isinstance(exc, ForbiddenError):
                raise
            # the token may have expired or rotated: log in again once, then retry
            self._logged_in = False
            return await self._run(action, api_path, capability, fn, retry=False)

    # -- reads --------------------------------------------------------------------------------
    def _read_sync(self, path: str, version: int | None) -> StoreValues | None:
        try:
            resp: dict[str, Any] = self._client.secrets.kv.v2.read_secret_version(
                path, version=version, mount_point=self.mount, raise_on_deleted_version=False
            )
        except hvac.exceptions.InvalidPath:
            return None
        body = resp.get("data") or {}
        meta = body.get("metadata") or {}
        deleted = bool(meta.get("deletion_time")) or bool(meta.get("destroyed"))
        return record_from_kv(
            int(meta["version"]),
            body.get("data"),
            meta.get("custom_metadata"),
            self.data_path(path),
            deleted=deleted,
        )

    async def read_values(self, path: str, version: int | None = None) -> StoreValues:
        got = await self._run(
            "reading", self.data_path(path), CAP_READ, lambda: self._read_sync(path, version)
        )
        if got is None:
            raise NotFoundError(
                f"reading {self.data_path(path)}: no version {version or 'at all'} is stored"
            )
        return got

    async def read_version(self, path: str) -> StoreRecord | None:
        got = await self._run(
            "reading", self.data_path(path), CAP_READ, lambda: self._read_sync(path, None)
        )
        return got.record if got is not None else None
