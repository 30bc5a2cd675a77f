"""The canister ACL backend (:class:`rotor.acl.AclBackend`) over :class:`IcClient`."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from ic.candid import Types
from ic.constants import IC_ROOT_KEY
from ic.identity import Identity

from controller.acl.canister.candid import (
    CERTIFICATE_ONLY,
    CERTIFIED_ACL,
    RESULT,
    _variant,
    acl_hash,
    candid_args,
    decode_one,
    to_snapshot,
    triple_args,
)
from controller.acl.canister.certificate import Verify, _raw_key, check_certified_data
from controller.acl.canister.errors import CanisterAnswerError
from controller.acl.canister.mark import MARK_SUFFIX, ConfigMapMark, Mark, MemoryMark, VersionMark
from controller.acl.canister.transport import IDENTITY_KEY, IcClient, load_identity
from rotor.acl import AclSnapshot, Mode
from rotor.errors import (
    InvalidSpec,
    NotFoundError,
    PermanentError,
    RotorError,
    UnavailableError,
)
from rotor.names import Principal, SecretRef
from rotor.settings.controller import DEFAULT_CANISTER_CERT_MAX_AGE, ControllerSettings

log = logging.getLogger(__name__)


# -- the backend ----------------------------------------------------------------------------------
class CanisterAclBackend:
    """:class:`rotor.acl.AclBackend` over the ACL canister."""

    name = "canister"

    def __init__(
        self, client: IcClient, *, fetch_root_key: bool = False, mark: VersionMark | None = None
    ) -> None:
        self.client = client
        self._fetch_root_key = fetch_root_key
        self.mark: VersionMark = mark or MemoryMark()
        self._last: Mark | None = None  # version and hash of the highest ACL read
        self._loaded = False  # _last was read from the mark
        self._saved: Mark | None = None

    @classmethod
    def from_settings(cls, settings: ControllerSettings, core_v1: Any) -> CanisterAclBackend:
        """Built from the settings; the identity PEM is read from the Secret
        ``settings.canister_identity_secret`` (key ``identity.pem``) in ``settings.namespace``."""
        origin = f"secret {settings.namespace}/{settings.canister_identity_secret}"
        try:
            secret = core_v1.read_namespaced_secret(
                settings.canister_identity_secret, settings.namespace
            )
        except Exception as e:  # the kubernetes client's ApiException, or a connection error
            status = getattr(e, "status", None)
            if status == 404:
                raise InvalidSpec(
                    "ROTOR_CANISTER_IDENTITY_SECRET",
                    f"{origin} does not exist",
                    f"create it: kubectl -n {settings.namespace} create secret generic "
                    f"{settings.canister_identity_secret} --from-file={IDENTITY_KEY}=PEM",
                ) from None
            raise UnavailableError(f"{origin}: {type(e).__name__} {status or ''}") from None
        data = (getattr(secret, "data", None) or {}).get(IDENTITY_KEY)
        if not data:
            raise InvalidSpec(
                origin, f"has no key {IDENTITY_KEY}", "store the PEM under identity.pem"
            )
        identity = load_identity(base64.b64decode(data), f"{origin} key {IDENTITY_KEY}")
        return cls.connect(
            host=settings.canister_host,
            canister_id=settings.canister_id,
            identity=identity,
            verify=settings.canister_verify,
            root_key=settings.canister_root_key,
            max_age=settings.canister_cert_max_age,
            mark=ConfigMapMark(
                core_v1,
                settings.namespace,
                settings.acl_configmap + MARK_SUFFIX,
                settings.canister_id,
            ),
        )

    @classmethod
    def connect(
        cls,
        *,
        host: str,
        canister_id: str,
        identity: Identity,
        verify: Verify = "strict",
        root_key: str = "",
        max_age: float = DEFAULT_CANISTER_CERT_MAX_AGE,
        mark: VersionMark | None = None,
        **client_options: Any,
    ) -> CanisterAclBackend:
        """``root_key``: hex DER, empty for the IC mainnet key, ``fetch`` to ask the host
        (a local dfx replica only)."""
        if not canister_id:
            raise InvalidSpec("ROTOR_CANISTER_ID", "is not set", "set the ACL canister's id")
        fetch = root_key.strip().lower() == "fetch"
        key = IC_ROOT_KEY
        if root_key and not fetch:
            try:
                key = bytes.fromhex(root_key)
                _raw_key(key)
            except (ValueError, CanisterAnswerError):
                raise InvalidSpec(
                    "ROTOR_CANISTER_ROOT_KEY",
                    "is not a hex DER BLS12-381 public key",
                    "leave it empty for the IC mainnet, or set fetch for a local replica",
                ) from None
        client = IcClient(
            host,
            canister_id,
            identity,
            verify=verify,
            root_key_der=key,
            max_age=max_age,
            **client_options,
        )
        return cls(client, fetch_root_key=fetch, mark=mark)

    async def _ready(self) -> None:
        if self._fetch_root_key:
            self.client.root_key_der = await self.client.fetch_root_key()
            self._fetch_root_key = False

    async def snapshot(self) -> AclSnapshot:
        await self._ready()
        if not self._loaded:  # the highest version a process before this one read
            self._last = await self.mark.load()
            self._loaded = True
        data = await self.client.query("acl", candid_args())
        # off the event loop: bounded (wire.py), but a large ACL still takes milliseconds
        snap, digest = await asyncio.to_thread(self.read_acl, data)
        self._check_version(snap.version, digest)
        await self._keep(Mark(snap.version, digest))
        return snap

    async def _keep(self, mark: Mark) -> None:
        """Keep the version where a restart finds it; a failure is retried at the next read."""
        if self._saved == mark:
            return
        try:
            await self.mark.save(mark)
            self._saved = mark
        except RotorError as e:
            log.warning(
                "%s: acl version %d could not be kept (%s); until it is, a restarted "
                "controller would accept an older one",
                self.client.origin,
                mark.version,
                e,
            )

    def read_acl(self, data: bytes) -> tuple[AclSnapshot, bytes]:
        """The ACL of an ``acl`` answer and its hash. The certificate is read first (the ACL
        skipped, nothing of it built) and checked (signature, time, canister) before the ACL is
        decoded, whose hash must then be the certified data."""
        origin = f"{self.client.origin}: acl"
        cert = None
        if self.client.verify != "none":
            raw = decode_one(data, CERTIFICATE_ONLY, origin)["certificate"]
            if not raw:
                raise CanisterAnswerError(
                    f"{origin} came without a certificate "
                    "(ROTOR_CANISTER_VERIFY=none skips the check)"
                )
            cert = self.client.check_certificate(bytes(raw[0]), None)
        acl = decode_one(data, CERTIFIED_ACL, origin)["acl"]
        digest = acl_hash(acl)
        if cert is not None:
            try:
                check_certified_data(cert, self.client.canister.bytes, digest)
            except CanisterAnswerError as e:
                raise CanisterAnswerError(f"{self.client.origin}: {e}") from None
        return to_snapshot(acl, self.client.origin), digest

    def _check_version(self, version: int, digest: bytes) -> None:
        """The ACL version only grows, across restarts too (the mark): an older one, even
        validly certified within ROTOR_CANISTER_CERT_MAX_AGE, is a replayed or lagging answer
        and would bring back revoked grants; another ACL of the same version is a forged or
        forked one."""
        last = self._last
        if last is not None:
            kept = getattr(self.mark, "origin", "")
            where = f" (kept in {kept}; delete it only if the canister was reinstalled)"
            where = where if kept else ""
            if version < last.version:
                raise CanisterAnswerError(
                    f"{self.client.origin}: acl: version {version} is older than version "
                    f"{last.version} read before (a replayed or lagging answer); the last good "
                    f"ACL stays{where}"
                )
            if version == last.version and digest != last.digest:
                raise CanisterAnswerError(
                    f"{self.client.origin}: acl: another ACL of version {version} than the one "
                    f"read before; the last good ACL stays{where}"
                )
        self._last = Mark(version, digest)

    async def _update(self, method: str, arg: bytes) -> int:
        await self._ready()
        data = await self.client.call(method, arg)
        result = decode_one(data, RESULT, f"{self.client.origin}: {method}")
        if "ok" in result:
            return int(result["ok"])
        raise self._error(method, result.get("err"))

    def _error(self, method: str, err: Any) -> RotorError:
        origin = f"{self.client.origin}: {method}"
        kind = _variant(err, ("not_authorized", "unknown_secret", "invalid", "last_admin"), origin)
        detail = err[kind]
        if kind == "not_authorized":
            needs = _variant(detail["needs"], ("admin", "operator"), origin)
            return PermanentError(
                f"{origin}: {detail['caller']} is not an {needs} of the ACL canister; an admin "
                f"adds it with `dfx canister call {self.client.canister_id} add_{needs} "
                f"'(principal \"{detail['caller']}\")'`"
            )
        if kind == "unknown_secret":
            return NotFoundError(f"{origin}: {detail} is not known to the ACL; register it first")
        if kind == "invalid":
            return InvalidSpec(method, str(detail))
        return PermanentError(f"{origin}: that would remove the last admin; add another first")

    async def register_secret(self, secret: SecretRef) -> None:
        await self._update("create_secret", candid_args((Types.Text, str(secret))))

    async def request_access(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        await self._update("request_access", triple_args(secret, principal, mode))

    async def approve(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        await self._update("approve", triple_args(secret, principal, mode))

    async def deny(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        await self._update("deny", triple_args(secret, principal, mode))

    async def revoke(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        await self._update("revoke", triple_args(secret, principal, mode))

    async def retire_secret(self, secret: str) -> int:
        """Retire a secret with its grants and requests (admins; idempotent). ``secret`` is the
        stored text, not checked here: a name the controller cannot use can be retired too."""
        return await self._update("retire_secret", candid_args((Types.Text, secret)))
