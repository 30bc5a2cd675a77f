"""IC certificates, verified without I/O: the hash tree, its time, the BLS signature and the
subnet delegation (interface specification, "Certificate" and "Delegation")."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cbor2
from ic.constants import IC_STATE_ROOT_DOMAIN_SEPARATOR

from controller.acl.canister.errors import CanisterAnswerError

Verify = Literal["strict", "hash-tree", "none"]

ROOT_KEY_DER_PREFIX = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100"
)
DELEGATION_MAX_AGE = 30 * 86400  # seconds; as DFINITY's certificate verifiers
BLS_DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
# The BLS12-381 G2 generator (compressed), the base point of IC public keys.
G2_GENERATOR = bytes.fromhex(
    "93e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57e5ac7d055d042b7e"
    "024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d1770bac0326a805bbefd48056c8c121bdb8"
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
    try:
        root_hash = tree_digest(tree)
    except RecursionError:  # a tree nested deeper than Python recurses: not a certificate
        raise CanisterAnswerError("certificate: the hash tree is nested too deep") from None
    return Certificate(
        tree=tree,
        signature=bytes(cert["signature"]),
        delegation=cert.get("delegation"),
        root_hash=root_hash,
        time_ns=leb128(raw_time),
    )


def _ranges(raw: bytes, where: str) -> list[tuple[bytes, bytes]]:
    try:
        ranges = cbor2.loads(raw)
        return [(bytes(lo), bytes(hi)) for lo, hi in ranges]
    except Exception:  # cbor2 raises several types; a malformed list is a malformed delegation
        raise CanisterAnswerError(f"certificate: the delegation's {where} is malformed") from None


def delegated_ranges(tree: Any, subnet_id: bytes) -> list[tuple[bytes, bytes]]:
    """The canister ranges a delegation certifies for ``subnet_id``, in either format: the
    sharded /canister_ranges/<subnet>/<lowest id of the shard> (v3 query and read_state, v4
    call) or the flat /subnet/<subnet>/canister_ranges (v2, deprecated). Every shard the tree
    holds is read; a pruned one is unknown and proves nothing."""
    found: list[tuple[bytes, bytes]] = []
    seen = False
    shards = subtree(tree, [b"canister_ranges", subnet_id])
    if shards is not None:
        for node in _flatten(shards):
            if node[0] == 2 and isinstance(node[2], list | tuple) and node[2][0] == 3:
                seen = True
                found.extend(_ranges(bytes(node[2][1]), "canister_ranges shard"))
    flat = lookup(tree, [b"subnet", subnet_id, b"canister_ranges"])
    if flat is not None:
        seen = True
        found.extend(_ranges(flat, "canister_ranges"))
    if not seen:
        raise CanisterAnswerError("certificate: the delegation has no canister ranges")
    return found


def _check_signature(
    cert: Certificate,
    canister_id: bytes,
    root_key_der: bytes,
    now: float,
    max_age: float,
    nested: bool = False,
) -> None:
    key_der = root_key_der
    if cert.delegation is not None:
        if nested:
            raise CanisterAnswerError("certificate: a delegation may not have a delegation")
        try:
            subnet_id = bytes(cert.delegation["subnet_id"])
            inner = parse_certificate(bytes(cert.delegation["certificate"]))
        except (KeyError, TypeError):
            raise CanisterAnswerError("certificate: malformed delegation") from None
        _check_signature(inner, canister_id, root_key_der, now, max_age, nested=True)
        # DFINITY's verifiers refuse a delegation older than 30 days: a subnet key that has
        # since been rotated out (or leaked) would otherwise sign for ever.
        age = now - inner.time_ns / 1e9
        if age > DELEGATION_MAX_AGE:
            raise CanisterAnswerError(
                f"certificate: the subnet delegation is {age / 86400:.0f} days old "
                f"(limit {DELEGATION_MAX_AGE // 86400} days)"
            )
        if -age > max_age:
            raise CanisterAnswerError(
                f"certificate: the subnet delegation is {-age:.0f}s in the future "
                f"(limit {max_age:.0f}s)"
            )
        found = lookup(inner.tree, [b"subnet", subnet_id, b"public_key"])
        if found is None:
            raise CanisterAnswerError("certificate: the delegation has no subnet public key")
        ranges = delegated_ranges(inner.tree, subnet_id)
        if not any(lo <= canister_id <= hi for lo, hi in ranges):
            raise CanisterAnswerError("certificate: the canister is outside the delegated subnet")
        key_der = found
    message = IC_STATE_ROOT_DOMAIN_SEPARATOR + cert.root_hash
    if not bls_verify(_raw_key(key_der), message, cert.signature):
        raise CanisterAnswerError(
            "certificate: the BLS signature does not verify with the root key "
            "(ROTOR_CANISTER_ROOT_KEY: empty for mainnet, fetch for a local replica)"
        )


def check_certified_data(cert: Certificate, canister_id: bytes, expected: bytes) -> None:
    """The value at /canister/<canister_id>/certified_data must be ``expected``."""
    found = lookup(cert.tree, [b"canister", canister_id, b"certified_data"])
    if found is None:
        raise CanisterAnswerError("certificate: no certified_data for this canister")
    if found != expected:
        raise CanisterAnswerError(
            "certificate: the certified hash does not match the ACL in the answer"
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
        check_certified_data(cert, canister_id, certified_data)
    age = now - cert.time_ns / 1e9
    if abs(age) > max_age:
        when = f"{age:.0f}s old" if age > 0 else f"{-age:.0f}s in the future"
        raise CanisterAnswerError(
            f"certificate: it is {when} (limit {max_age:.0f}s, ROTOR_CANISTER_CERT_MAX_AGE); "
            "the answer may come from a lagging or replayed source"
        )
    if verify == "strict":
        _check_signature(cert, canister_id, root_key_der, now, max_age)
    return cert
