"""The Candid types of canister/acl.did, the ACL's canonical (certified) encoding, and the
conversion of a decoded ``Acl`` into an :class:`~rotor.acl.AclSnapshot`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast

from ic.candid import Types, decode, encode

from controller.acl.canister.errors import CanisterAnswerError
from rotor.acl import AccessRequest, AclSnapshot, Grant, Mode, RequestState
from rotor.errors import (
    InvalidSpec,
)
from rotor.names import Principal, SecretRef

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
