"""The controller's side of an external store: Vault/OpenBao KV v2 through hvac.

:class:`VaultReader` implements :class:`rotor.external.ExternalStoreReader`:

* :meth:`VaultReader.check`, the ExternalStore ``Ready`` condition: a real login and a read of
  the mount's configuration at ``sys/internal/ui/mounts/<mount>`` (the endpoint Vault's own CLI
  uses to tell KV v1 from v2; any token with a capability under the mount may read it). Reasons:
  ``Unreachable``, ``AuthFailed``, ``MountNotFound``, ``NotKV2``, ``Ready``.
* :meth:`VaultReader.store_holds`, the fan-out hold: the store's current version holds the
  committed values (compared by checksum of the data read back).
* :meth:`VaultReader.read_values`, to propagate a value a person changed in Vault
  (:mod:`controller.propagate`).

Auth: a token (the controller reads the ExternalStore's token Secret and passes the token in) or
Kubernetes auth with the controller's own service-account token and a role. The controller's
policy needs ``read`` on ``<mount>/data/<path>`` for every referenced path.

hvac is synchronous; each call runs in a worker thread. The mapping of errors is the same table
as the agent's (``agent.vault``): the two may not import each other, and the decision itself is
shared in :func:`rotor.external.vault_error`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
import requests.adapters

from rotor.errors import NotFoundError, PermanentError, RotorError, UnavailableError
from rotor.external import (
    StoreCheck,
    StoreRecord,
    StoreValues,
    holds,
    record_from_kv,
    ssl_context,
    vault_error,
)
from rotor.spec import VaultSpec

DEFAULT_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path
DEFAULT_TIMEOUT = 10.0
CAP_READ = '["read"]'

_STATUS = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.PreconditionFailed: 412,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}

T = TypeVar("T")


@dataclass(frozen=True)
class TokenAuth:
    token: str

    def __repr__(self) -> str:  # never show the token
        return "TokenAuth(***)"


@dataclass(frozen=True)
class KubernetesAuth:
    role: str
    mount: str = "kubernetes"
    jwt_file: str = DEFAULT_SA_TOKEN


Auth = TokenAuth | KubernetesAuth


@dataclass(frozen=True)
class Identity:
    """Who the controller is in Vault (for the audit receiver's own-writes rule)."""

    display_name: str
    entity_id: str
    role: str


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


def _status(exc: hvac.exceptions.VaultError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 0)


def _detail(exc: hvac.exceptions.VaultError) -> str:
    return ", ".join(str(e) for e in exc.errors or []) or str(exc.args[0] if exc.args else "")


def _map(exc: Exception, action: str, path: str, capability: str) -> RotorError:
    if isinstance(exc, hvac.exceptions.VaultError):
        return vault_error(
            _status(exc), _detail(exc), action=action, path=path, capability=capability
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return vault_error(
            None, type(exc).__name__, action=action, path=path, capability=capability
        )
    raise exc


class AuthFailed(PermanentError):
    """The store refused the login or the token."""


class VaultReader:
    """One Vault/OpenBao KV v2 mount, as the controller uses it (an ``ExternalStoreReader``)."""

    def __init__(
        self,
        server: str,
        mount: str,
        auth: Auth,
        *,
        ca_bundle: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server = server.rstrip("/")
        self.mount = mount.strip("/")
        self.auth = auth
        self._client = hvac.Client(url=self.server, timeout=timeout, session=_session(ca_bundle))
        self._logged_in = False

    def __repr__(self) -> str:
        return f"VaultReader({self.server!r}, mount={self.mount!r}, {self.auth!r})"

    @classmethod
    def from_spec(
        cls,
        spec: VaultSpec,
        *,
        token: str | None = None,
        jwt_file: str = DEFAULT_SA_TOKEN,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> VaultReader:
        """``token``: the value of ``spec.auth.token.secretRef`` (the caller reads the Secret)."""
        auth: Auth
        if spec.auth.kubernetes_role:
            auth = KubernetesAuth(spec.auth.kubernetes_role, spec.auth.kubernetes_mount, jwt_file)
        elif token:
            auth = TokenAuth(token)
        else:
            ref = spec.auth.token_secret
            where = f"{ref.name}/{ref.key}" if ref else "auth.token.secretRef"
            raise AuthFailed(f"no token: the Secret key {where} is missing or empty")
        return cls(spec.server, spec.mount, auth, ca_bundle=spec.ca_bundle, timeout=timeout)

    def data_path(self, path: str) -> str:
        return f"{self.mount}/data/{path.strip('/')}"

    # -- login --------------------------------------------------------------------------------
    def _login_sync(self) -> None:
        auth = self.auth
        if isinstance(auth, TokenAuth):
            self._client.token = auth.token
        else:
            where = f"auth/{auth.mount}/login"
            try:
                jwt = Path(auth.jwt_file).read_text().strip()
            except OSError as exc:
                raise AuthFailed(
                    f"cannot read the service-account token {auth.jwt_file}: {exc.strerror}"
                ) from None
            try:
                self._client.auth.kubernetes.login(auth.role, jwt, mount_point=auth.mount)
            except hvac.exceptions.VaultError as exc:  # it answered (no answer propagates)
                err = _map(exc, f"logging in as role {auth.role!r} at", where, "")
                if isinstance(err, UnavailableError):
                    raise err from None
                raise AuthFailed(
                    f"Kubernetes login at {where} as role {auth.role!r} was refused; check that "
                    "the role exists and binds the controller's service account and namespace"
                ) from None
        self._logged_in = True

    async def _run(
        self, action: str, api_path: str, capability: str, fn: Callable[[], T], retry: bool = True
    ) -> T:
        def call() -> T:
            try:
                if not self._logged_in:
                    self._login_sync()
                return fn()
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                raise _map(exc, action, api_path, capability) from None

        try:
            return await asyncio.to_thread(call)
        except PermanentError as exc:
            if not retry or isinstance(exc, AuthFailed) or "permission denied" not in str(exc):
                raise
            self._logged_in = False  # an expired token: log in again once
            return await self._run(action, api_path, capability, fn, retry=False)

    # -- Ready --------------------------------------------------------------------------------
    def _mount_sync(self) -> dict[str, Any]:
        # hvac's JSON adapter returns the decoded body
        body: dict[str, Any] = self._client.adapter.get(f"/v1/sys/internal/ui/mounts/{self.mount}")
        return dict(body.get("data") or {})

    def _check_sync(self) -> StoreCheck:
        where = f"{self.server} mount {self.mount!r}"
        try:
            self._login_sync()
            info = self._mount_sync()
        except AuthFailed as exc:
            return StoreCheck(False, "AuthFailed", str(exc))
        except requests.exceptions.SSLError:
            return StoreCheck(
                False,
                "Unreachable",
                f"{self.server}: its TLS certificate was not trusted; check spec.vault.caBundle "
                "and the server name",
            )
        except requests.exceptions.RequestException as exc:
            return StoreCheck(
                False, "Unreachable", f"{self.server} did not answer ({type(exc).__name__})"
            )
        except UnavailableError as exc:  # the Kubernetes login answered 5xx
            return StoreCheck(False, "Unreachable", str(exc))
        except hvac.exceptions.VaultError as exc:
            status, detail = _status(exc), _detail(exc)
            if status in (401, 403) and "preflight" in detail:
                return StoreCheck(
                    False,
                    "MountNotFound",
                    f"{where}: no such mount, or the token's policies grant nothing under "
                    f"{self.mount}/; enable KV v2 there or fix the ExternalStore's mount",
                )
            if status in (401, 403):
                return StoreCheck(
                    False, "AuthFailed", f"{self.server} refused the token (invalid or expired)"
                )
            if status == 0 or status in (412, 429) or status >= 500:
                return StoreCheck(False, "Unreachable", f"{self.server} answered {status} {detail}")
            return StoreCheck(False, "MountNotFound", f"{where}: {status} {detail}")
        mtype = info.get("type")
        version = str((info.get("options") or {}).get("version", "1"))
        if mtype != "kv" or version != "2":
            kind = f"KV v{version}" if mtype == "kv" else f"a {mtype!r} engine"
            return StoreCheck(
                False,
                "NotKV2",
                f"{where} is {kind}; Rotor writes versioned values with check-and-set and "
                "needs KV v2 (`bao secrets enable -path=... kv-v2`)",
            )
        return StoreCheck(True, "Ready", f"{where} is KV v2 and the login works")

    async def check(self) -> StoreCheck:
        """The ExternalStore's Ready condition (never raises for a store-side failure)."""
        return await asyncio.to_thread(self._check_sync)

    async def whoami(self) -> Identity:
        """The token's display name, entity and Kubernetes role (``auth/token/lookup-self``)."""

        def lookup() -> dict[str, Any]:
            got: dict[str, Any] = self._client.auth.token.lookup_self()
            return dict(got.get("data") or {})

        data = await self._run("looking up", "auth/token/lookup-self", CAP_READ, lookup)
        meta = data.get("meta") or {}
        return Identity(
            str(data.get("display_name") or ""),
            str(data.get("entity_id") or ""),
            str(meta.get("role") or ""),
        )

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

    async def store_holds(self, path: str, rotor_version: int, checksum: str) -> bool:
        """Whether the current version at ``path`` holds the values of ``checksum``.

        ``rotor_version`` names the version being fanned out; the comparison is by checksum of
        the data read back (a value propagated from Vault holds even without Rotor's metadata).
        """
        return holds(await self.read_version(path), checksum)
