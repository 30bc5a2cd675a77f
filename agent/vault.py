"""The agent's side of an external store: Vault/OpenBao KV v2 through hvac (rotation step 3).

:class:`VaultStore` implements :class:`rotor.external.ExternalStoreWriter`. It writes the pending
values as a new KV v2 version with check-and-set, then merges Rotor's custom metadata (Rotor
version, rotated-at, writer, checksum; never a value) with a JSON merge PATCH so metadata keys of
other owners survive, and reads back the current version so a restarted writer can decide
commit or abort (:func:`rotor.external.decide_recovery`).

Policy the agent's token needs, for a store with mount ``secret`` and path ``shop/db``::

    path "secret/data/shop/db"     { capabilities = ["create", "update", "read"] }
    path "secret/metadata/shop/db" { capabilities = ["patch"] }

Login: a token (``ROTOR_VAULT_TOKEN`` or, better, ``ROTOR_VAULT_TOKEN_FILE``: a mounted Secret key,
re-read on every login) or Kubernetes auth with the pod's service-account token and the
ExternalStore's role. After a permission error the agent logs in again once and retries, since
tokens expire and projected service-account tokens rotate.

hvac is synchronous (requests); each call runs in a worker thread so the agent's event loop
never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
import requests.adapters

from rotor.errors import (
    ConflictError,
    InvalidSpec,
    NotFoundError,
    PermanentError,
    RotorError,
    UnavailableError,
)
from rotor.external import (
    RotorMetadata,
    StoreRecord,
    StoreValues,
    kv_data,
    record_from_kv,
    ssl_context,
    vault_error,
)
from rotor.layout import checksum
from rotor.spec import VaultSpec

log = logging.getLogger(__name__)

DEFAULT_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path
DEFAULT_TIMEOUT = 10.0
ENV_TOKEN = "ROTOR_VAULT_TOKEN"  # noqa: S105 - a variable name
ENV_TOKEN_FILE = "ROTOR_VAULT_TOKEN_FILE"  # noqa: S105 - a variable name
ENV_JWT_FILE = "ROTOR_VAULT_JWT_FILE"
ENV_TIMEOUT = "ROTOR_VAULT_TIMEOUT"

CAP_WRITE = '["create", "update"]'
CAP_READ = '["read"]'
CAP_META = '["patch"]'

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
class TokenLogin:
    """A Vault token, given directly or (preferred) as a file re-read at every login."""

    token: str | None = None
    token_file: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"TokenLogin(token_file={self.token_file!r})"

    def read(self) -> str:
        if self.token_file:
            try:
                text = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise PermanentError(
                    f"cannot read the Vault token file {self.token_file}: {exc.strerror}"
                ) from None
            if text:
                return text
        if self.token:
            return self.token
        raise InvalidSpec(
            ENV_TOKEN_FILE,
            "no Vault token was given",
            f"mount the token Secret's key as a file and set {ENV_TOKEN_FILE}",
        )


@dataclass(frozen=True)
class KubernetesLogin:
    """Vault's Kubernetes auth: the pod's service-account token and a Vault role."""

    role: str
    mount: str = "kubernetes"
    jwt_file: str = DEFAULT_SA_TOKEN


Login = TokenLogin | KubernetesLogin


def login_from_spec(spec: VaultSpec, env: Mapping[str, str] | None = None) -> Login:
    """How the agent logs in to the store of ``spec`` (token from env/file, or Kubernetes)."""
    e = os.environ if env is None else env
    if spec.auth.kubernetes_role:
        return KubernetesLogin(
            spec.auth.kubernetes_role,
            spec.auth.kubernetes_mount,
            e.get(ENV_JWT_FILE, "").strip() or DEFAULT_SA_TOKEN,
        )
    return TokenLogin(
        token=e.get(ENV_TOKEN, "").strip() or None,
        token_file=e.get(ENV_TOKEN_FILE, "").strip() or None,
    )


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


def map_exception(exc: Exception, *, action: str, path: str, capability: str) -> RotorError:
    """hvac/requests exceptions to Rotor's errors; other exceptions are bugs and not mapped."""
    if isinstance(exc, hvac.exceptions.VaultError):
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 0)
        detail = ", ".join(str(e) for e in exc.errors or []) or str(exc.args[0] if exc.args else "")
        return vault_error(status, detail, action=action, path=path, capability=capability)
    if isinstance(exc, requests.exceptions.RequestException):
        return vault_error(
            None, type(exc).__name__, action=action, path=path, capability=capability
        )
    raise exc


class VaultStore:
    """One Vault/OpenBao KV v2 mount, as the agent uses it (an ``ExternalStoreWriter``)."""

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
        return f"VaultStore({self.server!r}, mount={self.mount!r}, {self.login_method!r})"

    @classmethod
    def from_spec(
        cls, spec: VaultSpec, env: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> VaultStore:
        e = os.environ if env is None else env
        if timeout is None:
            raw = e.get(ENV_TIMEOUT, "").strip()
            try:
                timeout = float(raw) if raw else DEFAULT_TIMEOUT
            except ValueError:
                raise InvalidSpec(ENV_TIMEOUT, f"{raw!r} is not a number", "e.g. 10") from None
        return cls(
            spec.server,
            spec.mount,
            login_from_spec(spec, e),
            ca_bundle=spec.ca_bundle,
            timeout=timeout,
        )

    def data_path(self, path: str) -> str:
        return f"{self.mount}/data/{path.strip('/')}"

    def metadata_path(self, path: str) -> str:
        return f"{self.mount}/metadata/{path.strip('/')}"

    # -- login --------------------------------------------------------------------------------
    def _login_sync(self) -> None:
        how = self.login_method
        if isinstance(how, TokenLogin):
            self._client.token = how.read()
        else:
            try:
                jwt = Path(how.jwt_file).read_text().strip()
            except OSError as exc:
                raise PermanentError(
                    f"cannot read the service-account token {how.jwt_file} for Vault "
                    f"Kubernetes auth: {exc.strerror}"
                ) from None
            where = f"auth/{how.mount}/login"
            try:
                self._client.auth.kubernetes.login(how.role, jwt, mount_point=how.mount)
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                err = map_exception(
                    exc, action=f"logging in as role {how.role!r} at", path=where, capability=""
                )
                if isinstance(err, PermanentError) and isinstance(exc, hvac.exceptions.VaultError):
                    raise PermanentError(
                        f"Vault Kubernetes login at {where} as role {how.role!r} was refused; "
                        "check that the role exists and binds this pod's service account and "
                        "namespace"
                    ) from None
                raise err from None
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
            if not retry or "permission denied" not in str(exc):
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

    # -- write --------------------------------------------------------------------------------
    def _write_sync(self, path: str, data: dict[str, str], cas: int) -> int:
        resp: dict[str, Any] = self._client.secrets.kv.v2.create_or_update_secret(
            path, secret=data, cas=cas, mount_point=self.mount
        )
        return int(resp["data"]["version"])

    def _patch_metadata_sync(self, path: str, custom: dict[str, str]) -> None:
        self._client.adapter.request(
            "patch",
            f"/v1/{self.metadata_path(path)}",
            json={"custom_metadata": custom},
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def write_pending(
        self,
        path: str,
        values: Mapping[str, bytes],
        expected_version: int | None,
        metadata: RotorMetadata,
    ) -> int:
        """Write ``values`` with check-and-set, then Rotor's metadata; return the store version.

        ``metadata.checksum`` is set here from ``values``. A check-and-set failure whose current
        version already holds these values (our own earlier write whose answer was lost) is not
        a conflict. The metadata is advisory (every decision compares checksums of the data read
        back), so a failed metadata write is logged, not raised.
        """
        data = kv_data(values, self.data_path(path))
        digest = checksum(values)
        metadata = replace(metadata, checksum=digest)
        cas = expected_version or 0
        try:
            version = await self._run(
                "writing",
                self.data_path(path),
                CAP_WRITE,
                lambda: self._write_sync(path, data, cas),
            )
        except ConflictError:
            current = await self.read_version(path)
            if current is None or current.deleted or current.checksum != digest:
                raise
            version = current.store_version
            if current.rotor == metadata:
                return version
        try:
            await self._run(
                "writing metadata of",
                self.metadata_path(path),
                CAP_META,
                lambda: self._patch_metadata_sync(path, metadata.custom_metadata(version)),
            )
        except (PermanentError, UnavailableError) as exc:
            log.warning("store version %s written; its Rotor metadata was not: %s", version, exc)
        return version
