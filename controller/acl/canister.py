"""The Internet Computer canister ACL backend (canister/, interface canister/acl.did).

The controller's identity (a PEM key from a Kubernetes Secret) signs requests to the canister
over the IC HTTP interface (v2: ``query``, ``call`` then ``read_state`` for the reply). ic-py
gives the identity, request signing, request ids and Candid; the HTTP transport is written here
with aiohttp because ic-py 1.0.1's async update path polls with a blocking sleep (``waiter``), has
no timeouts and returns a rejection as a plain string.

What a snapshot is checked against (``canister_verify``, see docs/canister.md):

* ``none``: only the Candid answer (types, fields, names) is checked.
* ``hash-tree``: the answer carries the IC certificate from ``CertifiedData.getCertificate()``;
  its hash tree is reduced to a root hash, ``/canister/<id>/certified_data`` must equal sha256 of
  the ACL's canonical encoding (:func:`encode_acl`, the same bytes canister/src/State.mo hashes)
  and ``/time`` must be within ``canister_cert_max_age`` of now.
* ``strict`` (default): also the BLS12-381 signature over the root hash, with the IC root key
  (or the subnet key of a delegation, itself certified by the root key, whose canister ranges
  must hold the canister id). Update replies (``read_state`` certificates) are checked the same
  way, less the certified-data comparison.

A bad answer (wrong Candid type, missing field, malformed name, certificate mismatch or too old)
raises :class:`CanisterAnswerError`, a retryable :class:`~rotor.errors.UnavailableError`: the
controller keeps the last good ACL and reports staleness, as for any unreachable backend.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import aiohttp
import cbor2
from ic.agent import sign_request
from ic.candid import Types, decode, encode
from ic.constants import IC_ROOT_KEY, IC_STATE_ROOT_DOMAIN_SEPARATOR
from ic.identity import Identity
from ic.principal import Principal as IcPrincipal

from rotor.acl import AccessRequest, AclSnapshot, Grant, Mode, RequestState
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

Verify = Literal["strict", "hash-tree", "none"]

IDENTITY_KEY = "identity.pem"
DEFAULT_TIMEOUT = 10.0  # one HTTP request
DEFAULT_CALL_TIMEOUT = 60.0  # an update call, until its reply is certified
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = 0.5
INGRESS_EXPIRY = 240.0  # the IC accepts at most 5 minutes ahead
ROOT_KEY_DER_PREFIX = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100"
)
BLS_DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
# The BLS12-381 G2 generator (compressed), the base point of IC public keys.
G2_GENERATOR = bytes.fromhex(
    "93e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57e5ac7d055d042b7e"
    "024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d1770bac0326a805bbefd48056c8c121bdb8"
)


class CanisterAnswerError(UnavailableError):
    """The canister's answer could not be decoded or trusted; the last good ACL stays."""


# -- Candid types of canister/acl.did -------------------------------------------------------------
MODE = Types.Variant({"rw": Types.Null, "ro": Types.Null})
REQUEST_STATE = Types.Variant({"pending": Types.Null, "denied": Types.Null})
GRANT = Types.Record({"secret": Types.Text, "principal": Types.Text, "mode": MODE})
REQUEST = Types.Record(
    {"secret": Types.Text, "principal": Types.Text, "mode": MODE, "state": REQUEST_STATE}
)
ACL = Types.Record(
    {
        "version": Types.Nat64,
        "secrets": Types.Vec(Types.Text),
        "grants": Types.Vec(GRANT),
        "requests": Types.Vec(REQUEST),
    }
)
CERTIFIED_ACL = Types.Record({"acl": ACL, "certificate": Types.Opt(Types.Vec(Types.Nat8))})
ROLE = Types.Variant({"admin": Types.Null, "operator": Types.Null})
ERROR = Types.Variant(
    {
        "not_authorized": Types.Record({"caller": Types.Text, "needs": ROLE}),
        "unknown_secret": Types.Text,
        "invalid": Types.Text,
        "last_admin": Types.Null,
    }
)
RESULT = Types.Variant({"ok": Types.Nat64, "err": ERROR})


def candid_args(*args: tuple[Any, Any]) -> bytes:
    return bytes(encode([{"type": t, "value": v} for t, v in args]))


def triple_args(secret: SecretRef, principal: Principal, mode: Mode) -> bytes:
    return candid_args(
        (Types.Text, str(secret)), (Types.Text, str(principal)), (MODE, {mode: None})
    )


def decode_one(data: bytes, typ: Any, what: str) -> Any:
    """Decode one Candid value of ``typ``; any mismatch names ``what``."""
    try:
        out = decode(data, typ)
    except Exception as e:  # ic-py raises ValueError, TypeError, IndexError... on bad input
        raise CanisterAnswerError(f"{what}: not the expected Candid ({e})") from None
    if not out:
        raise CanisterAnswerError(f"{what}: an empty Candid answer")
    return out[0]["value"]


# -- the ACL: canonical encoding (certified) and conversion ---------------------------------------
def _variant(value: Any, choices: Sequence[str], field: str) -> str:
    if not isinstance(value, dict) or len(value) != 1:
        raise CanisterAnswerError(f"{field}: expected one of {', '.join(choices)}")
    (key,) = value
    if key not in choices:
        raise CanisterAnswerError(f"{field}: {key!r} is not one of {', '.join(choices)}")
    return str(key)


def encode_acl(acl: dict[str, Any]) -> bytes:
    """The bytes the canister certifies (State.encode in canister/src/State.mo), in the order the
    lists arrive: a header, the version, then one line per secret, grant and request."""
    parts = [f"rotor-acl/1\nversion {acl['version']}\n"]
    parts.extend(f"secret {s}\n" for s in acl["secrets"])
    for g in acl["grants"]:
        (mode,) = g["mode"]
        parts.append(f"grant {g['secret']} {g['principal']} {mode}\n")
    for r in acl["requests"]:
        (mode,) = r["mode"]
        (state,) = r["state"]
        parts.append(f"request {r['secret']} {r['principal']} {mode} {state}\n")
    return "".join(parts).encode()


def acl_hash(acl: dict[str, Any]) -> bytes:
    return hashlib.sha256(encode_acl(acl)).digest()


def to_snapshot(acl: dict[str, Any], origin: str) -> AclSnapshot:
    """A decoded ``Acl`` record as an :class:`AclSnapshot`; names are validated."""

    seen: dict[tuple[str, str], SecretRef | Principal] = {}  # names repeat: parse each once

    def parse(where: str, kind: str, text: str) -> SecretRef | Principal:
        found = seen.get((kind, text))
        if found is not None:
            return found
        try:
            if kind == "secret":
                value: SecretRef | Principal = SecretRef.parse(text, None, where)
            else:
                value = Principal.parse(text, where)
        except InvalidSpec as e:
            raise CanisterAnswerError(f"{origin}: {e}") from None
        seen[(kind, text)] = value
        return value

    secrets = {
        cast(SecretRef, parse(f"acl.secrets[{i}]", "secret", s))
        for i, s in enumerate(acl["secrets"])
    }

    def entry(where: str, e: dict[str, Any]) -> tuple[SecretRef, Principal, Mode]:
        """The secret, principal and mode that a grant and a request both carry."""
        return (
            cast(SecretRef, parse(f"{where}.secret", "secret", e["secret"])),
            cast(Principal, parse(f"{where}.principal", "principal", e["principal"])),
            cast(Mode, _variant(e["mode"], ("rw", "ro"), f"{origin}: {where}.mode")),
        )

    grants = {Grant(*entry(f"acl.grants[{i}]", g)) for i, g in enumerate(acl["grants"])}
    requests: list[AccessRequest] = []
    for i, r in enumerate(acl["requests"]):
        where = f"acl.requests[{i}]"
        requests.append(
            AccessRequest(
                *entry(where, r),
                cast(
                    RequestState,
                    _variant(r["state"], ("pending", "denied"), f"{origin}: {where}.state"),
                ),
            )
        )
    return AclSnapshot(
        version=int(acl["version"]),
        grants=frozenset(grants),
        requests=tuple(sorted(requests)),
        secrets=frozenset(secrets),
    )


# -- certificates: hash tree, time, BLS signature -------------------------------------------------
# Written here after the IC interface spec ("Certificate", "Lookup"): ic-py 1.0.1 has a lookup
# only, which neither rebuilds the root hash nor tells a pruned (unknown) path from an absent one;
# pyblst (bindings to the blst library) does the BLS12-381 arithmetic.
def _ds(tag: str) -> bytes:
    return bytes([len(tag)]) + tag.encode()


def tree_digest(tree: Any) -> bytes:
    """The root hash of an IC hash tree (interface spec, "Certificate")."""
    if not isinstance(tree, list | tuple) or not tree:
        raise CanisterAnswerError("certificate: malformed hash tree")
    kind = tree[0]
    if kind == 0 and len(tree) == 1:
        return hashlib.sha256(_ds("ic-hashtree-empty")).digest()
    if kind == 1 and len(tree) == 3:
        return hashlib.sha256(
            _ds("ic-hashtree-fork") + tree_digest(tree[1]) + tree_digest(tree[2])
        ).digest()
    if kind == 2 and len(tree) == 3 and isinstance(tree[1], bytes):
        return hashlib.sha256(_ds("ic-hashtree-labeled") + tree[1] + tree_digest(tree[2])).digest()
    if kind == 3 and len(tree) == 2 and isinstance(tree[1], bytes):
        return hashlib.sha256(_ds("ic-hashtree-leaf") + tree[1]).digest()
    if kind == 4 and len(tree) == 2 and isinstance(tree[1], bytes) and len(tree[1]) == 32:
        return bytes(tree[1])
    raise CanisterAnswerError("certificate: malformed hash tree node")


def _flatten(tree: Any) -> list[Any]:
    if tree[0] == 0:
        return []
    if tree[0] == 1:
        return _flatten(tree[1]) + _flatten(tree[2])
    return [tree]


def lookup(tree: Any, path: Sequence[bytes]) -> bytes | None:
    """The leaf at ``path``, or None when it is absent or pruned (unknown)."""
    node = tree
    for label in path:
        found = None
        for sub in _flatten(node):
            if sub[0] == 2 and sub[1] == label:
                found = sub[2]
                break
        if found is None:
            return None
        node = found
    if node[0] == 3:
        return bytes(node[1])
    return None


def subtree(tree: Any, path: Sequence[bytes]) -> Any | None:
    node = tree
    for label in path:
        node = next((s[2] for s in _flatten(node) if s[0] == 2 and s[1] == label), None)
        if node is None:
            return None
    return node


def leb128(data: bytes) -> int:
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value
    raise CanisterAnswerError("certificate: /time is not a LEB128 number")


def bls_available() -> bool:
    try:
        import pyblst  # noqa: F401
    except ImportError:
        return False
    return True


def bls_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """BLS12-381 "min-sig" (signature in G1, key in G2), as the IC signs certificates."""
    from pyblst import BlstP1Element, BlstP2Element, final_verify, miller_loop

    try:
        sig = BlstP1Element().uncompress(signature)
        key = BlstP2Element().uncompress(public_key)
    except Exception:  # pyblst raises on a point off the curve or a bad encoding
        return False
    g2 = BlstP2Element().uncompress(G2_GENERATOR)
    h = BlstP1Element().hash_to_group(message, BLS_DST)
    return bool(final_verify(miller_loop(sig, g2), miller_loop(h, key)))


def _raw_key(der: bytes) -> bytes:
    if len(der) != len(ROOT_KEY_DER_PREFIX) + 96 or not der.startswith(ROOT_KEY_DER_PREFIX):
        raise CanisterAnswerError("certificate: the public key is not a DER BLS12-381 key")
    return der[len(ROOT_KEY_DER_PREFIX) :]


@dataclass(frozen=True)
class Certificate:
    tree: Any
    signature: bytes
    delegation: Mapping[str, Any] | None
    root_hash: bytes
    time_ns: int


def parse_certificate(data: bytes) -> Certificate:
    try:
        cert = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types on bad input
        raise CanisterAnswerError(f"certificate: not CBOR ({type(e).__name__})") from None
    if not isinstance(cert, Mapping) or "tree" not in cert or "signature" not in cert:
        raise CanisterAnswerError("certificate: expected a map with tree and signature")
    tree = cert["tree"]
    raw_time = lookup(tree, [b"time"])
    if raw_time is None:
        raise CanisterAnswerError("certificate: no /time")
    return Certificate(
        tree=tree,
        signature=bytes(cert["signature"]),
        delegation=cert.get("delegation"),
        root_hash=tree_digest(tree),
        time_ns=leb128(raw_time),
    )


def _check_signature(
    cert: Certificate, canister_id: bytes, root_key_der: bytes, nested: bool = False
) -> None:
    key_der = root_key_der
    if cert.delegation is not None:
        if nested:
            raise CanisterAnswerError("certificate: a delegation may not have a delegation")
        subnet_id = bytes(cert.delegation["subnet_id"])
        inner = parse_certificate(bytes(cert.delegation["certificate"]))
        _check_signature(inner, canister_id, root_key_der, nested=True)
        found = lookup(inner.tree, [b"subnet", subnet_id, b"public_key"])
        if found is None:
            raise CanisterAnswerError("certificate: the delegation has no subnet public key")
        ranges_raw = lookup(inner.tree, [b"subnet", subnet_id, b"canister_ranges"])
        if ranges_raw is None:
            raise CanisterAnswerError("certificate: the delegation has no canister ranges")
        ranges = cbor2.loads(ranges_raw)
        if not any(bytes(lo) <= canister_id <= bytes(hi) for lo, hi in ranges):
            raise CanisterAnswerError("certificate: the canister is outside the delegated subnet")
        key_der = found
    message = IC_STATE_ROOT_DOMAIN_SEPARATOR + cert.root_hash
    if not bls_verify(_raw_key(key_der), message, cert.signature):
        raise CanisterAnswerError(
            "certificate: the BLS signature does not verify with the root key "
            "(ROTOR_CANISTER_ROOT_KEY: empty for mainnet, fetch for a local replica)"
        )


def verify_certificate(
    data: bytes,
    *,
    canister_id: bytes,
    certified_data: bytes | None,
    verify: Verify,
    root_key_der: bytes,
    now: float,
    max_age: float,
) -> Certificate:
    """Check a certificate as ``verify`` says; ``certified_data`` (when given) must be the value
    at /canister/<canister_id>/certified_data."""
    cert = parse_certificate(data)
    if verify == "none":
        return cert
    if certified_data is not None:
        found = lookup(cert.tree, [b"canister", canister_id, b"certified_data"])
        if found is None:
            raise CanisterAnswerError("certificate: no certified_data for this canister")
        if found != certified_data:
            raise CanisterAnswerError(
                "certificate: the certified hash does not match the ACL in the answer"
            )
    age = now - cert.time_ns / 1e9
    if abs(age) > max_age:
        when = f"{age:.0f}s old" if age > 0 else f"{-age:.0f}s in the future"
        raise CanisterAnswerError(
            f"certificate: it is {when} (limit {max_age:.0f}s, ROTOR_CANISTER_CERT_MAX_AGE); "
            "the answer may come from a lagging or replayed source"
        )
    if verify == "strict":
        _check_signature(cert, canister_id, root_key_der)
    return cert


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


# -- the backend ----------------------------------------------------------------------------------
class CanisterAclBackend:
    """:class:`rotor.acl.AclBackend` over the ACL canister."""

    name = "canister"

    def __init__(self, client: IcClient, *, fetch_root_key: bool = False) -> None:
        self.client = client
        self._fetch_root_key = fetch_root_key

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
        return cls(client, fetch_root_key=fetch)

    async def _ready(self) -> None:
        if self._fetch_root_key:
            self.client.root_key_der = await self.client.fetch_root_key()
            self._fetch_root_key = False

    async def snapshot(self) -> AclSnapshot:
        await self._ready()
        data = await self.client.query("acl", candid_args())
        value = decode_one(data, CERTIFIED_ACL, f"{self.client.origin}: acl")
        acl = value["acl"]
        snap = to_snapshot(acl, self.client.origin)
        if self.client.verify != "none":
            cert = value["certificate"]
            if not cert:
                raise CanisterAnswerError(
                    f"{self.client.origin}: acl came without a certificate "
                    "(ROTOR_CANISTER_VERIFY=none skips the check)"
                )
            self.client.check_certificate(bytes(cert[0]), acl_hash(acl))
        return snap

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
