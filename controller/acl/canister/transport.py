"""The IC HTTP interface: signed queries and update calls to one canister, and the identity."""

from __future__ import annotations

import asyncio
import logging
import math
import os
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
from rotor import backoff
from rotor.errors import (
    InvalidSpec,
    PermanentError,
    RotorError,
    UnavailableError,
    from_status,
    kind_of,
)
from rotor.retry import Backoff
from rotor.settings.controller import DEFAULT_CANISTER_CERT_MAX_AGE

log = logging.getLogger(__name__)

IDENTITY_KEY = "identity.pem"
DEFAULT_TIMEOUT = 10.0  # one HTTP request
DEFAULT_CALL_TIMEOUT = 60.0  # an update call, until its reply is certified
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = 0.5
ATTEMPT_JITTER = (0.5, 1.5)  # each wait between attempts: half to one and a half of its step
POLL_FIRST, POLL_MAX = 0.05, 1.0  # read_state polls for a call's reply: 50 ms doubling to 1 s
MAX_ANSWER = 4 * 1024 * 1024  # an HTTP answer: the IC's largest reply (3 MiB) and its envelope
INGRESS_EXPIRY = 240.0  # the IC accepts at most 5 minutes ahead
# The endpoints the interface specification prefers (v2 query and read_state are deprecated; v4
# call answers synchronously, with a certificate whose delegation has the sharded ranges).
CURRENT_API = {"query": "v3", "read_state": "v3", "call": "v4"}


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
    """Signed queries and update calls to one canister over the IC HTTP interface (v3 query and
    read_state, v4 call; the v2 forms when the host has no newer ones)."""

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
        self.legacy = False  # True once the host answered only the v2 endpoints

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
        """POST to the preferred version of ``endpoint`` (v3 query and read_state, v4 call); a
        host without it (404) is asked the v2 form, which is then kept for this client."""
        if self.legacy or endpoint not in CURRENT_API:
            return await self._post_to(session, "v2", endpoint, body)
        status, data = await self._post_to(session, CURRENT_API[endpoint], endpoint, body)
        if status != 404:
            return status, data
        status2, data2 = await self._post_to(session, "v2", endpoint, body)
        if status2 == 404:
            return status, data
        log.info("%s: no /api/%s endpoints; using the v2 ones", self.origin, CURRENT_API[endpoint])
        self.legacy = True
        return status2, data2

    async def _post_to(
        self, session: aiohttp.ClientSession, api: str, endpoint: str, body: bytes
    ) -> tuple[int, bytes]:
        """POST with retries (the one backoff policy) on connection errors, timeouts, 429 and
        5xx; the last answer is carried on the error when they run out."""
        url = f"{self.host}/api/{api}/canister/{self.canister_id}/{endpoint}"
        waits = Backoff(self.backoff, math.inf, ATTEMPT_JITTER)
        cause, answer = "", UnavailableError("")  # the last answer that asks for a retry
        for attempt in range(self.attempts):
            if attempt:
                log.info("%s: %s: %s; retrying", self.origin, endpoint, cause)
                await waits.wait(answer.delay)
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/cbor"}
                ) as resp:
                    data = await self._read(endpoint, resp)
                    if kind_of(resp.status) is not UnavailableError:  # 429 and 5xx are retried
                        return resp.status, data
                    err = self._http_error(endpoint, resp.status, data, resp.headers)
                    assert isinstance(err, UnavailableError)
                    cause, answer = f"HTTP {resp.status}", err
            except TimeoutError:
                cause, answer = f"no answer within {self.timeout:g}s", UnavailableError("")
            except aiohttp.ClientError as e:
                cause, answer = type(e).__name__, UnavailableError("")
        raise UnavailableError(
            f"{self.origin}: {endpoint}: {cause} (after {self.attempts} attempts)",
            delay=answer.delay,
            status=answer.status,
            headers=answer.headers,
            payload=answer.payload,
        )

    async def _read(self, endpoint: str, resp: aiohttp.ClientResponse) -> bytes:
        """The body, at most MAX_ANSWER bytes (read before anything of it is authenticated)."""
        if (resp.content_length or 0) > MAX_ANSWER:
            raise self._too_large(endpoint)
        body = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > MAX_ANSWER:
                raise self._too_large(endpoint)
        return bytes(body)

    def _too_large(self, endpoint: str) -> CanisterAnswerError:
        return CanisterAnswerError(
            f"{self.origin}: {endpoint}: the answer is larger than {MAX_ANSWER // 1024} KiB "
            "(the IC's replies are at most 3 MiB); not read"
        )

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    def _http_error(
        self, endpoint: str, status: int, data: bytes, headers: Mapping[str, str] | None = None
    ) -> RotorError:
        """The canister transport's edge: an HTTP answer (the boundary's text, at most 300
        bytes, as the payload) to a Rotor error, through the one status table."""
        text = data[:300].decode("utf-8", "replace").strip()
        said = "not found" if status == 404 else f"HTTP {status}"
        message = f"{self.origin}: {endpoint}: {said} ({text})"
        return from_status(status, message, headers=headers, payload=text)

    def _rejected(self, method: str, answer: dict[str, Any]) -> RotorError:
        code = answer.get("reject_code")
        message = str(answer.get("reject_message", ""))[:300]
        error = answer.get("error_code")
        detail = f"code {code}, {error}" if isinstance(error, str) and error else f"code {code}"
        text = f"{self.origin}: {method} was rejected ({detail}: {message})"
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
            if status == 200:
                reply = self._call_answer(method, request_id, data)
                if reply is not None:
                    return reply
            # 202: accepted but not done yet (v2 always): poll read_state for the reply
            polls = 1
            while True:
                reply = await self._request_status(session, method, request_id)
                if reply is not None:
                    return reply
                wait = backoff.delay(polls, POLL_FIRST, POLL_MAX)
                if time.monotonic() + wait > deadline:
                    raise UnavailableError(
                        f"{self.origin}: {method}: no certified reply within "
                        f"{self.call_timeout:g}s (the call may still be applied)"
                    )
                await asyncio.sleep(wait)
                polls += 1

    def _call_answer(self, method: str, request_id: bytes, data: bytes) -> bytes | None:
        """A 200 answer to a call (interface spec, "Request: Call" and "Synchronous call"):
        a refusal, in the v2 form ({reject_code, reject_message, error_code}, no status) or the
        v3/v4 form (status non_replicated_rejection), or {status: replied, certificate} with
        /request_status/<id>. None: nothing to read here, poll read_state."""
        try:
            answer = cbor2.loads(data) if data else None
        except Exception:  # cbor2 raises several types on bad input
            raise CanisterAnswerError(f"{self.origin}: call {method}: not CBOR") from None
        if not isinstance(answer, Mapping):
            return None
        state = answer.get("status")
        if state == "non_replicated_rejection" or (state is None and "reject_code" in answer):
            raise self._rejected(method, dict(answer))
        if state == "replied" and "certificate" in answer:
            cert = self.check_certificate(bytes(answer["certificate"]), None)
            return self._reply_from(cert, method, request_id)
        if state is None:
            return None
        raise CanisterAnswerError(f"{self.origin}: call {method}: status {state!r}")

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
        return self._reply_from(cert, method, request_id)

    def _reply_from(self, cert: Certificate, method: str, request_id: bytes) -> bytes | None:
        """The reply at /request_status/<id> of a checked certificate; None while unknown."""
        path = [b"request_status", request_id]
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
