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

hvac is synchronous; each call runs in a worker thread. The login, the mapping of errors and the
reads are the hvac core shared with the agent's writer, :class:`rotor.vaultkv.VaultKV` (the two
may not import each other); this module adds the Ready check, ``whoami`` and the hold.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import hvac.exceptions
import requests

from rotor.errors import (
    ForbiddenError,
    LoginFailed,
    PermanentError,
    RotorError,
    UnavailableError,
)
from rotor.external import StoreCheck
from rotor.protocol import holds
from rotor.spec import VaultSpec
from rotor.vaultkv import (
    CAP_READ,
    DEFAULT_SA_TOKEN,
    DEFAULT_TIMEOUT,
    KubernetesLogin,
    VaultKV,
    map_exception,
)

__all__ = ["Auth", "AuthFailed", "Identity", "KubernetesAuth", "TokenAuth", "VaultReader"]


@dataclass(frozen=True)
class TokenAuth:
    """A token the caller read from the ExternalStore's token Secret."""

    token: str

    def __repr__(self) -> str:  # never show the token
        return "TokenAuth(***)"

    def read(self) -> str:
        return self.token


KubernetesAuth = KubernetesLogin
Auth = TokenAuth | KubernetesAuth


@dataclass(frozen=True)
class Identity:
    """Who the controller is in Vault (for the audit receiver's own-writes rule)."""

    display_name: str
    entity_id: str
    role: str


class AuthFailed(LoginFailed):
    """The store refused the login or the token."""


PREFLIGHT_REFUSED = "preflight capability check returned 403"
"""Vault's refusal of ``sys/internal/ui/mounts/<mount>`` for a mount that does not exist or
under which the token's policies grant nothing."""


def not_ready(err: RotorError, server: str, mount: str) -> StoreCheck:
    """The Ready condition after a failed login or mount read (``err``: the Vault edge's error,
    ``rotor.vaultkv.vault_error``), by its type, status and Vault's ``errors`` (its payload)."""
    where = f"{server} mount {mount!r}"
    errors = [str(e) for e in err.payload] if isinstance(err.payload, list) else []
    detail = ", ".join(errors)
    if err.status is None and isinstance(err, PermanentError):
        return StoreCheck(
            False,
            "Unreachable",
            f"{server}: its TLS certificate was not trusted; check spec.vault.caBundle "
            "and the server name",
        )
    if err.status is None:
        return StoreCheck(False, "Unreachable", f"{server} did not answer ({detail})")
    if isinstance(err, UnavailableError):
        return StoreCheck(False, "Unreachable", f"{server} answered {err.status} {detail}")
    # A missing mount and a token that may read nothing under it are one 403 for a valid token,
    # told from a bad token's 403 ("permission denied") only by Vault's errors list (the
    # handler of sys/internal/ui/mounts, vault/logical_system.go pathInternalUIMountRead, and
    # OpenBao's): no other status or code says it.
    if isinstance(err, ForbiddenError) and any(PREFLIGHT_REFUSED in e for e in errors):
        return StoreCheck(
            False,
            "MountNotFound",
            f"{where}: no such mount, or the token's policies grant nothing under "
            f"{mount}/; enable KV v2 there or fix the ExternalStore's mount",
        )
    if isinstance(err, ForbiddenError):
        return StoreCheck(False, "AuthFailed", f"{server} refused the token (invalid or expired)")
    return StoreCheck(False, "MountNotFound", f"{where}: {err.status} {detail}")


class VaultReader(VaultKV):
    """One Vault/OpenBao KV v2 mount, as the controller uses it (an ``ExternalStoreReader``)."""

    login_error = AuthFailed
    account = "the controller's"

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
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            api = f"sys/internal/ui/mounts/{self.mount}"
            err = map_exception(exc, action="reading", path=api, capability=CAP_READ)
            return not_ready(err, self.server, self.mount)
        except RotorError as exc:  # the Kubernetes login did not answer, or answered 5xx
            return not_ready(exc, self.server, self.mount)
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

    async def store_holds(self, path: str, rotor_version: int, checksum: str) -> bool:
        """Whether the current version at ``path`` holds the values of ``checksum``.

        ``rotor_version`` names the version being fanned out; the comparison is by checksum of
        the data read back (a value propagated from Vault holds even without Rotor's metadata).
        """
        return holds(await self.read_version(path), checksum)
