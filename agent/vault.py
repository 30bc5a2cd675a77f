"""The agent's side of an external store: Vault/OpenBao KV v2 through hvac (rotation step 3).

:class:`VaultStore` implements :class:`rotor.external.ExternalStoreWriter`. It writes the pending
values as a new KV v2 version with check-and-set, then merges Rotor's custom metadata (Rotor
version, rotated-at, writer, checksum; never a value) with a JSON merge PATCH so metadata keys of
other owners survive, and reads back the current version so a restarted writer can decide
commit or abort (:func:`rotor.protocol.recovery`).

Policy the agent's token needs, for a store with mount ``secret`` and path ``shop/db``::

    path "secret/data/shop/db"     { capabilities = ["create", "update", "read"] }
    path "secret/metadata/shop/db" { capabilities = ["patch"] }

Login: a token (``ROTOR_VAULT_TOKEN`` or, better, ``ROTOR_VAULT_TOKEN_FILE``: a mounted Secret key,
re-read on every login) or Kubernetes auth with the pod's service-account token and the
ExternalStore's role. After a permission error the agent logs in again once and retries, since
tokens expire and projected service-account tokens rotate.

hvac is synchronous (requests); each call runs in a worker thread so the agent's event loop
never blocks. The login, the error mapping and the reads are the hvac core shared with the
controller, :class:`rotor.vaultkv.VaultKV`; this module adds the write.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rotor.errors import ConflictError, InvalidSpec, PermanentError, UnavailableError
from rotor.external import RotorMetadata, kv_data
from rotor.layout import checksum
from rotor.settings.agent import ENV_VAULT_TOKEN_FILE, AgentSettings
from rotor.spec import VaultSpec
from rotor.vaultkv import DEFAULT_SA_TOKEN, KubernetesLogin, VaultKV

__all__ = ["KubernetesLogin", "Login", "TokenLogin", "VaultStore", "login_from_spec"]

log = logging.getLogger(__name__)


CAP_WRITE = '["create", "update"]'
CAP_META = '["patch"]'


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
            ENV_VAULT_TOKEN_FILE,
            "no Vault token was given",
            f"mount the token Secret's key as a file and set {ENV_VAULT_TOKEN_FILE}",
        )


Login = TokenLogin | KubernetesLogin


def login_from_spec(spec: VaultSpec, settings: AgentSettings) -> Login:
    """How the agent logs in to the store of ``spec`` (a token or its file from the agent's
    settings, or Kubernetes)."""
    if spec.auth.kubernetes_role:
        return KubernetesLogin(
            spec.auth.kubernetes_role,
            spec.auth.kubernetes_mount,
            settings.vault_jwt_file or DEFAULT_SA_TOKEN,
        )
    return TokenLogin(
        token=settings.vault_token or None, token_file=settings.vault_token_file or None
    )


class VaultStore(VaultKV):
    """One Vault/OpenBao KV v2 mount, as the agent uses it (an ``ExternalStoreWriter``)."""

    account = "this pod's"

    @classmethod
    def from_spec(cls, spec: VaultSpec, settings: AgentSettings) -> VaultStore:
        return cls(
            spec.server,
            spec.mount,
            login_from_spec(spec, settings),
            ca_bundle=spec.ca_bundle,
            timeout=settings.vault_timeout,
        )

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
