"""The Candid types of canister/acl.did, the ACL's canonical (certified) encoding, and the
conversion of a decoded ``Acl`` into an :class:`~rotor.acl.AclSnapshot`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast

from ic.candid import Types, encode

from controller.acl.canister.errors import CanisterAnswerError
from controller.acl.canister.wire import CandidLimit, decode_first
from rotor.acl import AccessRequest, AclSnapshot, Grant, Mode, RequestState, SkippedEntry
from rotor.errors import InvalidSpec
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
CERTIFICATE = Types.Opt(Types.Vec(Types.Nat8))
CERTIFIED_ACL = Types.Record({"acl": ACL, "certificate": CERTIFICATE})
CERTIFICATE_ONLY = Types.Record({"acl": Types.Reserved, "certificate": CERTIFICATE})
"""The answer of ``acl`` read for its certificate only: the ACL is skipped, nothing of it built."""
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
    """Decode the first Candid value of ``data`` as ``typ`` with the bounded decoder (wire.py:
    linear in the bytes, a step budget); any mismatch or excess names ``what``."""
    try:
        return decode_first(data, typ)
    except CandidLimit as e:
        raise CanisterAnswerError(f"{what}: not the expected Candid ({e})") from None


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


class _Names:
    """Parses the names of one ACL record once each, and collects the entries left out."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.seen: dict[tuple[str, str], SecretRef | Principal | str] = {}
        self.skipped: list[SkippedEntry] = []

    def parse(self, kind: str, text: str) -> SecretRef | Principal | str:
        """The name, or why it is not one."""
        found = self.seen.get((kind, text))
        if found is None:
            value: SecretRef | Principal
            try:
                if kind == "secret":
                    value = SecretRef.parse(text, None, "name")
                else:
                    value = Principal.parse(text, "name")
                # SecretRef.parse strips spaces: the stored name must be the one that parsed
                found = value if str(value) == text else f"{kind} {text!r}: spaces around it"
            except InvalidSpec as e:
                found = f"{kind} {text!r}: {e.problem}"
            self.seen[(kind, text)] = found
        return found

    def secrets(self, raw: list[str]) -> set[SecretRef]:
        out: set[SecretRef] = set()
        for i, s in enumerate(raw):
            ref = self.parse("secret", s)
            if isinstance(ref, SecretRef):
                out.add(ref)
            else:
                self.skipped.append(SkippedEntry(f"acl.secrets[{i}]", s, str(ref)))
        return out

    def entry(self, where: str, e: dict[str, Any]) -> tuple[SecretRef, Principal, Mode] | None:
        """The secret, principal and mode that a grant and a request both carry."""
        secret = self.parse("secret", e["secret"])
        principal = self.parse("principal", e["principal"])
        mode = cast(Mode, _variant(e["mode"], ("rw", "ro"), f"{self.origin}: {where}.mode"))
        if isinstance(secret, SecretRef) and isinstance(principal, Principal):
            return secret, principal, mode
        problems = [p for p in (secret, principal) if isinstance(p, str)]
        self.skipped.append(SkippedEntry(where, e["secret"], "; ".join(problems)))
        return None

    def requests(self, raw: list[dict[str, Any]]) -> list[AccessRequest]:
        out: list[AccessRequest] = []
        for i, r in enumerate(raw):
            where = f"acl.requests[{i}]"
            triple = self.entry(where, r)
            state = cast(
                RequestState,
                _variant(r["state"], ("pending", "denied"), f"{self.origin}: {where}.state"),
            )
            if triple is not None:
                out.append(AccessRequest(*triple, state))
        return out


def to_snapshot(acl: dict[str, Any], origin: str) -> AclSnapshot:
    """A decoded ``Acl`` record as an :class:`AclSnapshot`. An entry whose names are not
    Kubernetes names (rotor.names) is left out and listed in ``skipped``; the rest applies."""
    names = _Names(origin)
    secrets = names.secrets(acl["secrets"])
    grants: set[Grant] = set()
    for i, g in enumerate(acl["grants"]):
        triple = names.entry(f"acl.grants[{i}]", g)
        if triple is not None:
            grants.add(Grant(*triple))
    requests = names.requests(acl["requests"])
    return AclSnapshot(
        version=int(acl["version"]),
        grants=frozenset(grants),
        requests=tuple(sorted(requests)),
        secrets=frozenset(secrets),
        skipped=tuple(names.skipped),
    )
