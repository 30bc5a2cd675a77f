"""The IC HTTP interface: signed queries and update calls to one canister, and the identity."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import cbor2
from ic.agent import sign_request
from ic.constants import IC_ROOT_KEY
from ic.identity import Identity
from ic.principal import Principal as IcPrincipal

from controller.acl.canister.certificate import (
    Certificate,
    Verify,
    _raw_key,
    bls_available,
    leb128,
    lookup,
    verify_certificate,
)
from controller.acl.canister.errors import CanisterAnswerError
from rotor.errors import (
    InvalidSpec,
    NotFoundError,
    PermanentError,
    RotorError,
    UnavailableError,
)
from rotor.settings.controller import DEFAULT_CANISTER_CERT_MAX_AGE

log = logging.getLogger(__name__)

IDENTITY_KEY = "identity.pem"
DEFAULT_TIMEOUT = 10.0  # one HTTP request
DEFAULT_CALL_TIMEOUT = 60.0  # an update call, until its reply is certified
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = 0.5
INGRESS_EXPIRY = 240.0  # the IC accepts at most 5 minutes ahead


# -- identity -------------------------------------------------------------------------------------
def load_identity(pem: bytes, origin: str = IDENTITY_KEY) -> Identity:
    """The controller's IC identity from a PEM key (secp256k1 or Ed25519, as `dfx identity
    export` writes it). The caller reads the bytes (e.g. from a Kubernetes Secret)."""
    try:
        return Identity.from_pem(pem.decode())
    except Exception:  # ecdsa raises several types; never echo the key
        raise InvalidSpec(
            origin,
            "is not a PEM private key",
            "store the output of `dfx identity export NAME` (secp256k1 or Ed25519)",
        ) from None


# -- the transport --------------------------------------------------------------------------------
class IcClient:
    """Signed queries and update calls to one canister over the IC HTTP interface (v2)."""

    def __init__(
        self,
        host: str,
        canister_id: str,
        identity: Identity,
        *,
        verify: Verify = "strict",
        root_key_der: bytes = IC_ROOT_KEY,
        max_age: float = DEFAULT_CANISTER_CERT_MAX_AGE,
        timeout: float = DEFAULT_TIMEOUT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        try:
            self.canister = IcPrincipal.from_str(canister_id)
        except Exception:  # ic-py raises a TypeError (it raises a str) on a bad checksum
            raise InvalidSpec(
                "ROTOR_CANISTER_ID",
                f"{canister_id!r} is not a canister id",
                "copy it from `dfx canister id rotor_acl`, e.g. rrkah-fqaaa-aaaaa-aaaaq-cai",
            ) from None
        if verify == "strict" and not bls_available():
            raise InvalidSpec(
                "ROTOR_CANISTER_VERIFY",
                "strict needs the BLS library pyblst, which is not installed",
                "pip install pyblst, or set ROTOR_CANISTER_VERIFY=hash-tree",
            )
        self.host = host.rstrip("/")
        self.canister_id = canister_id
        self.identity = identity
        self.verify: Verify = verify
        self.root_key_der = root_key_der
        self.max_age = max_age
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.attempts = attempts
        self.backoff = backoff

    @property
    def origin(self) -> str:
        return f"canister {self.canister_id} at {self.host}"

    def _envelope(self, content: dict[str, Any]) -> tuple[bytes, bytes]:
        content = {
            **content,
            "sender": self.identity.sender().bytes,
            "ingress_expiry": int((time.time() + INGRESS_EXPIRY) * 1e9),
        }
        request_id, body = sign_request(content, self.identity)
        return bytes(request_id), bytes(body)

    async def _post(
        self, session: aiohttp.ClientSession, endpoint: str, body: bytes
    ) -> tuple[int, bytes]:
        """POST with retries on connection errors, timeouts, 429 and 5xx."""
        url = f"{self.host}/api/v2/canister/{self.canister_id}/{endpoint}"
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                log.info("%s: %s: %s; retrying", self.origin, endpoint, last)
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))  # noqa: S311
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/cbor"}
                ) as resp:
                    data = await resp.read()
                    if resp.status == 429 or resp.status >= 500:
                        last = f"HTTP {resp.status}"
                        continue
                    return resp.status, data
            except TimeoutError:
                last = f"no answer within {self.timeout:g}s"
            except aiohttp.ClientError as e:
                last = type(e).__name__
        raise UnavailableError(
            f"{self.origin}: {endpoint}: {last} (after {self.attempts} attempts)"
        )

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    def _http_error(self, endpoint: str, status: int, data: bytes) -> RotorError:
        text = data[:300].decode("utf-8", "replace").strip()
        if status == 404:
            return NotFoundError(f"{self.origin}: {endpoint}: not found ({text})")
        return PermanentError(f"{self.origin}: {endpoint}: HTTP {status} ({text})")

    def _rejected(self, method: str, answer: dict[str, Any]) -> RotorError:
        code = answer.get("reject_code")
        message = str(answer.get("reject_message", ""))[:300]
        text = f"{self.origin}: {method} was rejected (code {code}: {message})"
        # 2 SYS_TRANSIENT: try again; the rest (destination invalid, canister error) is permanent.
        return UnavailableError(text) if code == 2 else PermanentError(text)

    async def query(self, method: str, arg: bytes) -> bytes:
        _, body = self._envelope(
            {
                "request_type": "query",
                "canister_id": self.canister.bytes,
                "method_name": method,
                "arg": arg,
            }
        )
        async with self._session() as session:
            status, data = await self._post(session, "query", body)
        if status != 200:
            raise self._http_error("query", status, data)
        try:
            answer = cbor2.loads(data)
        except Exception:  # cbor2 raises several types on bad input
            raise CanisterAnswerError(f"{self.origin}: query {method}: not CBOR") from None
        if not isinstance(answer, dict) or "status" not in answer:
            raise CanisterAnswerError(f"{self.origin}: query {method}: malformed answer")
        if answer["status"] == "replied":
            try:
                return bytes(answer["reply"]["arg"])
            except (KeyError, TypeError):
                raise CanisterAnswerError(f"{self.origin}: query {method}: no reply.arg") from None
        if answer["status"] == "rejected":
            raise self._rejected(method, answer)
        raise CanisterAnswerError(f"{self.origin}: query {method}: status {answer['status']!r}")

    async def call(self, method: str, arg: bytes) -> bytes:
        request_id, body = self._envelope(
            {
                "request_type": "call",
                "canister_id": self.canister.bytes,
                "method_name": method,
                "arg": arg,
                "nonce": os.urandom(16),
            }
        )
        deadline = time.monotonic() + self.call_timeout
        async with self._session() as session:
            status, data = await self._post(session, "call", body)
            if status not in (200, 202):
                raise self._http_error("call", status, data)
            if status == 200 and data:  # newer replicas refuse a v2 call at once, in CBOR
                try:
                    answer = cbor2.loads(data)
                except Exception:  # cbor2 raises several types; not a refusal then
                    answer = None
                if (
                    isinstance(answer, Mapping)
                    and answer.get("status") == "non_replicated_rejection"
                ):
                    raise self._rejected(method, dict(answer))
            delay = 0.05
            while True:
                reply = await self._request_status(session, method, request_id)
                if reply is not None:
                    return reply
                if time.monotonic() + delay > deadline:
                    raise UnavailableError(
                        f"{self.origin}: {method}: no certified reply within "
                        f"{self.call_timeout:g}s (the call may still be applied)"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _request_status(
        self, session: aiohttp.ClientSession, method: str, request_id: bytes
    ) -> bytes | None:
        path = [b"request_status", request_id]
        _, body = self._envelope({"request_type": "read_state", "paths": [path]})
        status, data = await self._post(session, "read_state", body)
        if status != 200:
            raise self._http_error("read_state", status, data)
        try:
            raw = cbor2.loads(data)["certificate"]
        except Exception:  # cbor2 and a missing key
            raise CanisterAnswerError(f"{self.origin}: read_state: malformed answer") from None
        cert = self.check_certificate(bytes(raw), None)
        state = lookup(cert.tree, [*path, b"status"])
        if state in (None, b"received", b"processing"):
            return None
        if state == b"replied":
            reply = lookup(cert.tree, [*path, b"reply"])
            if reply is None:
                raise CanisterAnswerError(f"{self.origin}: {method}: replied without a reply")
            return reply
        if state == b"rejected":
            code = lookup(cert.tree, [*path, b"reject_code"])
            message = lookup(cert.tree, [*path, b"reject_message"]) or b""
            raise self._rejected(
                method,
                {
                    "reject_code": leb128(code) if code else None,
                    "reject_message": message.decode("utf-8", "replace"),
                },
            )
        raise PermanentError(f"{self.origin}: {method}: request status {state!r}")

    def check_certificate(self, certificate: bytes, certified_data: bytes | None) -> Certificate:
        try:
            return verify_certificate(
                certificate,
                canister_id=self.canister.bytes,
                certified_data=certified_data,
                verify=self.verify,
                root_key_der=self.root_key_der,
                now=time.time(),
                max_age=self.max_age,
            )
        except CanisterAnswerError as e:
            raise CanisterAnswerError(f"{self.origin}: {e}") from None

    async def fetch_root_key(self) -> bytes:
        """The root key a local replica (dfx) announces: trust on first use, never on mainnet."""
        try:
            async with (
                self._session() as session,
                session.get(f"{self.host}/api/v2/status") as resp,
            ):
                data = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as e:
            raise UnavailableError(f"{self.origin}: status: {type(e).__name__}") from None
        try:
            key = bytes(cbor2.loads(data)["root_key"])
        except Exception:  # cbor2 and a missing key
            raise CanisterAnswerError(f"{self.origin}: status has no root_key") from None
        _raw_key(key)
        return key
