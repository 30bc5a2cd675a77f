"""A small local server that speaks the Internet Computer HTTP interface for one ACL canister.

No IC replica runs here (PocketIC and dfx download their binaries), so tests of the canister
client use this: aiohttp, ``/api/v2/status`` and the query, call and read_state endpoints in
their v2, v3 and v4 forms (``ENDPOINTS``; ``apis=("v2",)`` plays an older replica), CBOR
envelopes whose sender signature is checked, and certificates: a hash tree holding
``/canister/<id>/certified_data`` and ``/time``, signed with a test BLS12-381 key (pyblst),
optionally through a subnet delegation whose canister ranges take the format of the endpoint
(flat for v2, sharded for v3 and v4), as a replica does. Each answer's docstring names the part
of the interface specification it follows.

Behind it runs the compiled canister (``wasm=``: canister/build/acl.wasm on wasmtime, see
wasm_host.py), so the certified data is what the canister itself set; or, for state the current
canister cannot hold, an in-memory model of canister/src/State.mo (``AclModel``) with Candid
typed from the committed ``canister/acl.did`` (parsed with ic-py's DID parser, not the client's
types).

``server.fault`` makes it answer badly (wrong Candid, missing field, stale or mismatching
certificate, bad signature, HTTP 500, a hang, a rejection, a refusal...) to test the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import ecdsa
from aiohttp import web
from antlr4 import CommonTokenStream, ParseTreeWalker
from antlr4.InputStream import InputStream
from ic.candid import Types, decode, encode
from ic.constants import IC_REQUEST_DOMAIN_SEPARATOR
from ic.parser.DIDEmitter import DIDEmitter, DIDLexer, DIDParser
from ic.principal import Principal as IcPrincipal
from ic.utils import labelHash, to_request_id
from pyblst import BlstP1Element, BlstP2Element

from tests.canister.wasm_host import EMPTY_ARGS, CanisterReject, CanisterTrap, WasmCanister
from tests.conftest import free_port

DID = Path(__file__).resolve().parents[2] / "canister" / "acl.did"
DER_PREFIX = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100"
)
DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
G2 = bytes.fromhex(
    "93e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57e5ac7d055d042b7e"
    "024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d1770bac0326a805bbefd48056c8c121bdb8"
)
BLS_ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
CANISTER_ID = "rrkah-fqaaa-aaaaa-aaaaq-cai"
SUBNET_ID = b"\x0a" * 29

FAULTS = (
    "wrong-type",  # acl answers version as text
    "missing-field",  # acl answers without requests
    "bad-name",  # a grant names a secret that is not namespace/name (certified nonetheless)
    "stale",  # the certificate's /time is an hour old
    "future",  # the certificate's /time is an hour ahead
    "stale-delegation",  # the delegation's own /time is 31 days old (its signature is valid)
    "future-delegation",  # the delegation's own /time is an hour ahead
    "mismatch",  # certified_data is not the hash of the ACL in the answer
    "bad-signature",  # signed with another key
    "no-certificate",  # certificate = null
    "no-certificate-field",  # CertifiedAcl without its opt field (an older or newer canister)
    "http-500",  # every request answers 500
    "throttle",  # every request answers 429 with Retry-After: 0
    "http-403",  # every request answers 403 (a boundary node refusing the sender)
    "hang",  # every request waits 30 s
    "reject",  # queries and calls are rejected (canister error)
    "refuse-call",  # a call is refused at once (200 and a CBOR rejection, in its endpoint's form)
    "call-pending",  # a v3/v4 call answers 202 (not done in time): the client polls read_state
)
# Faults that change the acl() answer itself: the server builds it (from the canister's ACL).
ANSWER_FAULTS = (
    "wrong-type",
    "missing-field",
    "bad-name",
    "no-certificate",
    "no-certificate-field",
)

# The endpoints of the IC interface specification ("HTTPS Interface") this server answers. A real
# replica answers v2 query and read_state (deprecated) with a delegation whose canister ranges are
# at /subnet/<id>/canister_ranges ("flat"), and v3 query, v3 read_state and v4 call with them at
# /canister_ranges/<subnet id>/<lowest canister id of the shard> ("tree").
ENDPOINTS = {
    ("v2", "query"): "flat",
    ("v2", "call"): "flat",
    ("v2", "read_state"): "flat",
    ("v3", "query"): "tree",
    ("v3", "read_state"): "tree",
    ("v3", "call"): "flat",
    ("v4", "call"): "tree",
}


# -- Candid types from the committed acl.did ------------------------------------------------------
def _unquote(t: Any, seen: set[int]) -> None:
    """ic-py's DID parser keeps quotes in quoted field names ("principal"); drop them."""
    if id(t) in seen:
        return
    seen.add(id(t))
    fields = getattr(t, "_fields", None)
    if isinstance(fields, dict):
        t._fields = dict(
            sorted(((k.strip('"'), v) for k, v in fields.items()), key=lambda kv: labelHash(kv[0]))
        )
        for v in t._fields.values():
            _unquote(v, seen)
    inner = getattr(t, "_type", None)
    if inner is not None:
        _unquote(inner, seen)


def load_interface(path: Path = DID) -> dict[str, Any]:
    """method name -> ic-py FuncClass, from acl.did. ic-py's parser predates named arguments:
    they are dropped first."""
    text = re.sub(
        r"\(([^()]*)\) ->",
        lambda m: "(" + re.sub(r'(?:"\w+"|\w+):\s*', "", m.group(1)) + ") ->",
        path.read_text(),
    )
    emitter = DIDEmitter()
    parser = DIDParser(CommonTokenStream(DIDLexer(InputStream(text))))
    ParseTreeWalker().walk(emitter, parser.program())
    methods: dict[str, Any] = emitter.getActor()["methods"]
    seen: set[int] = set()
    for m in methods.values():
        for t in [*m.argTypes, *m.retTypes]:
            _unquote(t, seen)
    return methods


# -- the ACL model (canister/src/State.mo) --------------------------------------------------------
_PART = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_REF = re.compile(rf"{_PART}/{_PART}(\.{_PART})*")  # DNS-1123, as Kubernetes (fullmatch)


def _ok(v: int) -> dict[str, Any]:
    return {"ok": v}


def _err(kind: str, value: Any = None) -> dict[str, Any]:
    return {"err": {kind: value}}


@dataclass
class AclModel:
    admins: set[bytes]
    operators: set[bytes] = field(default_factory=set)
    version: int = 0
    secrets: set[str] = field(default_factory=set)
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _bump(self) -> dict[str, Any]:
        self.version += 1
        return _ok(self.version)

    def _denied(self, caller: bytes, needs: str) -> dict[str, Any]:
        text = IcPrincipal(bytes=caller).to_str()
        return _err("not_authorized", {"caller": text, "needs": {needs: None}})

    def _check(self, secret: str, principal: str, mode: str) -> dict[str, Any] | None:
        if not _REF.fullmatch(secret) or len(secret.split("/")[1]) > 253:
            return _err("invalid", f"secret {secret!r} is not namespace/name")
        if not _REF.fullmatch(principal) or len(principal.split("/")[1]) > 253:
            return _err("invalid", f"principal {principal!r} is not namespace/serviceaccount")
        if mode == "rw" and secret.split("/")[0] != principal.split("/")[0]:
            return _err("invalid", f"principal {principal} cannot write {secret}")
        return None

    def call(self, method: str, caller: bytes, args: list[Any]) -> dict[str, Any]:
        admin = caller in self.admins
        operator = admin or caller in self.operators
        if method == "create_secret":
            (secret,) = args
            if not operator:
                return self._denied(caller, "operator")
            if self._check(secret, "x/y", "ro"):
                return _err("invalid", f"secret {secret!r} is not namespace/name")
            if secret in self.secrets:
                return _ok(self.version)
            self.secrets.add(secret)
            return self._bump()
        if method == "retire_secret":
            (secret,) = args
            if not admin:
                return self._denied(caller, "admin")
            keys = [k for k, g in self.grants.items() if g["secret"] == secret]
            rkeys = [k for k, r in self.requests.items() if r["secret"] == secret]
            if secret not in self.secrets and not keys and not rkeys:
                return _ok(self.version)
            self.secrets.discard(secret)
            for k in keys:
                del self.grants[k]
            for k in rkeys:
                del self.requests[k]
            return self._bump()
        if method in ("add_admin", "remove_admin", "add_operator", "remove_operator"):
            if not admin:
                return self._denied(caller, "admin")
            (who,) = args
            p = IcPrincipal.from_str(who.to_str() if hasattr(who, "to_str") else who).bytes
            group = self.admins if method.endswith("admin") else self.operators
            if method.startswith("add"):
                if p in group:
                    return _ok(self.version)
                group.add(p)
                return self._bump()
            if p not in group:
                return _ok(self.version)
            if group is self.admins and len(group) == 1:
                return _err("last_admin")
            group.discard(p)
            return self._bump()
        secret, principal, mode_v = args
        (mode,) = mode_v
        needs = "operator" if method == "request_access" else "admin"
        if not (operator if needs == "operator" else admin):
            return self._denied(caller, needs)
        key = f"{secret} {principal} {mode}"
        entry = {"secret": secret, "principal": principal, "mode": {mode: None}}
        if method == "revoke":  # whatever is stored can be removed: names are not checked
            if self.grants.pop(key, None) is None:
                return _ok(self.version)
            return self._bump()
        bad = self._check(secret, principal, mode)
        if bad:
            return bad
        if secret not in self.secrets:
            return _err("unknown_secret", secret)
        if method == "request_access":
            if key in self.grants or key in self.requests:
                return _ok(self.version)
            self.requests[key] = {**entry, "state": {"pending": None}}
            return self._bump()
        if method == "approve":
            had_request = self.requests.pop(key, None) is not None
            if key in self.grants and not had_request:
                return _ok(self.version)
            self.grants[key] = entry
            return self._bump()
        if method == "deny":
            had_grant = self.grants.pop(key, None) is not None
            current = self.requests.get(key)
            if current and "denied" in current["state"] and not had_grant:
                return _ok(self.version)
            self.requests[key] = {**entry, "state": {"denied": None}}
            return self._bump()
        raise KeyError(method)

    def view(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "secrets": sorted(self.secrets),
            "grants": [self.grants[k] for k in sorted(self.grants)],
            "requests": [self.requests[k] for k in sorted(self.requests)],
        }


def encode_acl(acl: dict[str, Any]) -> bytes:
    """State.encode, written again here so a client bug is not mirrored by the server."""
    out = f"rotor-acl/1\nversion {acl['version']}\n"
    out += "".join(f"secret {s}\n" for s in acl["secrets"])
    for g in acl["grants"]:
        out += f"grant {g['secret']} {g['principal']} {next(iter(g['mode']))}\n"
    for r in acl["requests"]:
        mode, state = next(iter(r["mode"])), next(iter(r["state"]))
        out += f"request {r['secret']} {r['principal']} {mode} {state}\n"
    return out.encode()


# -- certificates ---------------------------------------------------------------------------------
def _ds(tag: str) -> bytes:
    return bytes([len(tag)]) + tag.encode()


def digest(t: list[Any]) -> bytes:
    h = hashlib.sha256
    if t[0] == 0:
        return h(_ds("ic-hashtree-empty")).digest()
    if t[0] == 1:
        return h(_ds("ic-hashtree-fork") + digest(t[1]) + digest(t[2])).digest()
    if t[0] == 2:
        return h(_ds("ic-hashtree-labeled") + t[1] + digest(t[2])).digest()
    if t[0] == 3:
        return h(_ds("ic-hashtree-leaf") + t[1]).digest()
    return bytes(t[1])


def labeled(*path_and_leaf: Any) -> list[Any]:
    *path, value = path_and_leaf
    node: list[Any] = [3, value]
    for label in reversed(path):
        node = [2, label, node]
    return node


def fork(*nodes: list[Any]) -> list[Any]:
    node = nodes[-1]
    for n in reversed(nodes[:-1]):
        node = [1, n, node]
    return node


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class BlsKey:
    def __init__(self, secret: int | None = None) -> None:
        self.secret = secret or int.from_bytes(os.urandom(32), "big") % BLS_ORDER
        self.public = BlstP2Element().uncompress(G2).scalar_mul(self.secret).compress()

    @property
    def der(self) -> bytes:
        return DER_PREFIX + self.public

    def sign(self, message: bytes) -> bytes:
        return BlstP1Element().hash_to_group(message, DST).scalar_mul(self.secret).compress()


# -- the server -----------------------------------------------------------------------------------
class IcServer:
    """An IC HTTP endpoint for one ACL canister (run it with :class:`IcServerThread`)."""

    def __init__(
        self,
        installer: bytes,
        *,
        delegated: bool = False,
        apis: tuple[str, ...] = ("v2", "v3", "v4"),
        wasm: Path | None = None,
    ) -> None:
        """``wasm``: run that compiled canister (canister/build/acl.wasm, see wasm_host.py);
        None: the Python model of State.mo, for state only an older canister could hold (names
        under the old rule) or that tests set directly (a replayed older state)."""
        self.canister_id = CANISTER_ID
        self.canister = IcPrincipal.from_str(CANISTER_ID).bytes
        self.methods = load_interface()
        self.model = AclModel(admins={installer})
        self.wasm = WasmCanister(wasm, self.canister, installer) if wasm else None
        self.installer = installer
        self.root = BlsKey()
        self.subnet = BlsKey() if delegated else None
        self.fault: str | None = None
        self.acl_reply: bytes | None = None  # answer acl() with these bytes (a hostile reply)
        self.query_body: bytes | None = None  # answer every query with this HTTP body
        self.fail_next = 0  # answer 503 to this many requests first
        self.replies: dict[bytes, tuple[str, bytes]] = {}
        self.calls: list[str] = []  # "<api> <endpoint> <method>"
        self.apis = apis  # an older replica: ("v2",)
        self.url = ""

    # certificates
    def _sign(self, tree: list[Any], key: BlsKey) -> bytes:
        return key.sign(b"\x0dic-state-root" + digest(tree))

    def certificate(
        self, tree_part: list[Any], *, time_ns: int | None = None, ranges: str = "flat"
    ) -> bytes:
        """Spec "Certificate": /time and ``tree_part`` signed by the root key, or by a subnet key
        that a delegation ("Delegation") certifies, its canister ranges in the ``ranges`` form."""
        now = time_ns if time_ns is not None else time.time_ns()
        if self.fault == "stale":
            now -= 3600 * 10**9
        if self.fault == "future":
            now += 3600 * 10**9
        tree = fork(tree_part, labeled(b"time", leb128(now)))
        signer = self.subnet or self.root
        if self.fault == "bad-signature":
            signer = BlsKey()
        cert: dict[str, Any] = {"tree": tree, "signature": self._sign(tree, signer)}
        if self.subnet is not None:
            cert["delegation"] = self.delegation(now, ranges)
        return bytes(cbor2.dumps(cert))

    def delegation(self, now: int, ranges: str) -> dict[str, Any]:
        """The root key's certificate of the subnet's public key and canister ranges."""
        if self.fault == "stale-delegation":
            now -= 31 * 86400 * 10**9
        if self.fault == "future-delegation":
            now += 3600 * 10**9
        blob = cbor2.dumps(cbor2.CBORTag(55799, [[self.canister, self.canister]]))
        below = IcPrincipal.from_str("aaaaa-aa").bytes  # another shard, before this canister's
        subnet_fields = [labeled(b"public_key", self.subnet.der)] if self.subnet else []
        if ranges == "flat":
            subnet_fields.insert(0, labeled(b"canister_ranges", blob))
        parts: list[list[Any]] = []
        if ranges == "tree":
            shards = fork(
                labeled(below, cbor2.dumps(cbor2.CBORTag(55799, [[below, below]]))),
                labeled(self.canister, blob),
            )
            parts.append([2, b"canister_ranges", [2, SUBNET_ID, shards]])
        parts.append([2, b"subnet", [2, SUBNET_ID, fork(*subnet_fields)]])
        parts.append(labeled(b"time", leb128(now)))
        inner_tree = fork(*parts)
        inner = {"tree": inner_tree, "signature": self._sign(inner_tree, self.root)}
        return {"subnet_id": SUBNET_ID, "certificate": cbor2.dumps(inner)}

    def add_operator(self, principal: bytes) -> None:
        """As the installer (the first admin) would: add_operator through the canister."""
        if self.wasm is None:
            self.model.operators.add(principal)
            return
        arg = encode([{"type": Types.Principal, "value": IcPrincipal(bytes=principal).to_str()}])
        result = decode(
            self.wasm.update("add_operator", self.installer, arg),
            Types.Variant({"ok": Types.Nat64, "err": Types.Reserved}),
        )
        assert "ok" in result[0]["value"], result

    def acl_answer(self, ranges: str = "flat", caller: bytes = b"") -> bytes:
        if self.wasm is not None:
            data = self.wasm.certified_data
            if self.fault == "mismatch":
                data = hashlib.sha256(b"another ACL").digest()
            if self.fault not in ANSWER_FAULTS:  # the canister's own answer, byte for byte
                cert = self.certificate(
                    labeled(b"canister", self.canister, b"certified_data", data), ranges=ranges
                )
                return self.wasm.query("acl", caller, EMPTY_ARGS, cert)
            reply = self.wasm.query("acl", caller, EMPTY_ARGS, None)
            acl = decode(reply, self.methods["acl"].retTypes)[0]["value"]["acl"]
            return self._answer(acl, data, ranges)
        acl = self.model.view()
        data = hashlib.sha256(encode_acl(acl)).digest()
        if self.fault == "mismatch":
            data = hashlib.sha256(b"another ACL").digest()
        return self._answer(acl, data, ranges)

    def _answer(self, acl: dict[str, Any], data: bytes, ranges: str) -> bytes:
        """An acl() answer built here, the faults applied."""
        if self.fault == "bad-name":
            acl["grants"] = [
                *acl["grants"],
                {"secret": "Not A/Name", "principal": "shop/x", "mode": {"ro": None}},
            ]
            data = hashlib.sha256(encode_acl(acl)).digest()
        cert = self.certificate(
            labeled(b"canister", self.canister, b"certified_data", data), ranges=ranges
        )
        value: dict[str, Any] = {
            "acl": acl,
            "certificate": [] if self.fault == "no-certificate" else [cert],
        }
        rtype = self.methods["acl"].retTypes[0]
        if self.fault == "wrong-type":
            acl_t = Types.Record(
                {
                    "version": Types.Text,
                    "secrets": Types.Vec(Types.Text),
                    "grants": Types.Vec(Types.Reserved),
                    "requests": Types.Vec(Types.Reserved),
                }
            )
            rtype = Types.Record({"acl": acl_t, "certificate": Types.Opt(Types.Vec(Types.Nat8))})
            value = {
                "acl": {**acl, "version": str(acl["version"]), "grants": [], "requests": []},
                "certificate": [cert],
            }
        if self.fault == "no-certificate-field":
            rtype = Types.Record({"acl": self.methods["acl"].retTypes[0].getType()._fields["acl"]})
            value = {"acl": acl}
        if self.fault == "missing-field":
            acl_t = Types.Record({"version": Types.Nat64, "secrets": Types.Vec(Types.Text)})
            rtype = Types.Record({"acl": acl_t, "certificate": Types.Opt(Types.Vec(Types.Nat8))})
            value = {
                "acl": {"version": acl["version"], "secrets": acl["secrets"]},
                "certificate": [cert],
            }
        return bytes(encode([{"type": rtype, "value": value}]))

    # HTTP
    async def _envelope(self, request: web.Request) -> dict[str, Any]:
        if self.fault == "http-500":
            raise web.HTTPInternalServerError(text="injected failure")
        if self.fault == "throttle":
            raise web.HTTPTooManyRequests(text="slow down", headers={"Retry-After": "0"})
        if self.fault == "http-403":
            raise web.HTTPForbidden(text="sender refused")
        if self.fail_next > 0:
            self.fail_next -= 1
            raise web.HTTPServiceUnavailable(text="injected overload")
        if self.fault == "hang":
            await asyncio.sleep(30)
        if request.match_info["canister"] != self.canister_id:
            raise web.HTTPNotFound(text="canister not found")
        envelope = cbor2.loads(await request.read())
        content = dict(envelope["content"])
        sender = bytes(content["sender"])
        pubkey = bytes(envelope["sender_pubkey"])
        if IcPrincipal.self_authenticating(pubkey).bytes != sender:
            raise web.HTTPForbidden(text="sender does not match the public key")
        key = ecdsa.VerifyingKey.from_der(pubkey, hashfunc=hashlib.sha256)
        message = IC_REQUEST_DOMAIN_SEPARATOR + to_request_id(content)
        try:
            key.verify(bytes(envelope["sender_sig"]), message)
        except ecdsa.BadSignatureError:
            raise web.HTTPForbidden(text="invalid signature") from None
        return content

    def _args(self, method: str, arg: bytes) -> list[Any]:
        types = self.methods[method].argTypes
        if not types:
            return []
        return [v["value"] for v in decode(arg, types)]

    async def status(self, request: web.Request) -> web.Response:
        body = {
            "ic_api_version": "0.18.0",
            "root_key": self.root.der,
            "replica_health_status": "healthy",
        }
        return web.Response(body=cbor2.dumps(body), content_type="application/cbor")

    def _api(self, request: web.Request, endpoint: str) -> tuple[str, str]:
        """The API version of the request and the delegation format its answer carries."""
        api = request.match_info["api"]
        if api not in self.apis or (api, endpoint) not in ENDPOINTS:
            raise web.HTTPNotFound(text=f"no such endpoint /api/{api}/.../{endpoint}")
        return api, ENDPOINTS[(api, endpoint)]

    async def query(self, request: web.Request) -> web.Response:
        """Spec "Request: Query call": 200 and {status: replied, reply} or {status: rejected}."""
        api, ranges = self._api(request, "query")
        content = await self._envelope(request)
        method = content["method_name"]
        self.calls.append(f"{api} query {method}")
        if self.query_body is not None:
            return web.Response(body=self.query_body, content_type="application/cbor")
        if self.acl_reply is not None and method == "acl":
            answer: dict[str, Any] = {"status": "replied", "reply": {"arg": self.acl_reply}}
        elif self.fault == "reject":
            answer: dict[str, Any] = {
                "status": "rejected",
                "reject_code": 5,
                "reject_message": "canister trapped",
                "error_code": "IC0503",
            }
        elif self.wasm is not None:
            answer = self._wasm_query(method, content, ranges)
        elif method == "acl":
            answer = {"status": "replied", "reply": {"arg": self.acl_answer(ranges)}}
        elif method == "members":
            value = {
                "admins": [IcPrincipal(bytes=p).to_str() for p in sorted(self.model.admins)],
                "operators": [IcPrincipal(bytes=p).to_str() for p in sorted(self.model.operators)],
            }
            reply = encode([{"type": self.methods["members"].retTypes[0], "value": value}])
            answer = {"status": "replied", "reply": {"arg": reply}}
        else:
            answer = {
                "status": "rejected",
                "reject_code": 3,
                "reject_message": f"no query {method}",
                "error_code": "IC0302",
            }
        return web.Response(body=cbor2.dumps(answer), content_type="application/cbor")

    def _wasm_query(self, method: str, content: dict[str, Any], ranges: str) -> dict[str, Any]:
        caller = bytes(content["sender"])
        if not self.wasm.has(f"canister_query {method}"):  # type: ignore[union-attr]
            return {
                "status": "rejected",
                "reject_code": 3,
                "reject_message": f"the canister has no query method {method!r}",
                "error_code": "IC0536",
            }
        try:
            if method == "acl":
                reply = self.acl_answer(ranges, caller)
            else:
                reply = self.wasm.query(method, caller, bytes(content["arg"]), None)  # type: ignore[union-attr]
        except CanisterTrap as e:
            return {
                "status": "rejected",
                "reject_code": 5,
                "reject_message": f"canister trapped: {e}",
                "error_code": "IC0503",
            }
        except CanisterReject as e:
            return {
                "status": "rejected",
                "reject_code": 4,
                "reject_message": str(e),
                "error_code": "IC0406",
            }
        return {"status": "replied", "reply": {"arg": reply}}

    def _refusal(self, api: str) -> dict[str, Any]:
        """A call refused before it is accepted. Spec "Request: Call" (v2): 200 and
        {reject_code, reject_message, error_code}, no status; "Request: Synchronous call"
        (v3, v4): the same with status non_replicated_rejection."""
        answer: dict[str, Any] = {
            "reject_code": 4,
            "reject_message": "caller is not allowed",
            "error_code": "IC0406",
        }
        if api != "v2":
            answer["status"] = "non_replicated_rejection"
        return answer

    def _status_node(self, request_id: bytes) -> list[Any]:
        state, payload = self.replies.get(request_id, ("unknown", b""))
        if state == "replied":
            return fork(labeled(b"reply", payload), labeled(b"status", b"replied"))
        if state == "rejected":
            return fork(
                labeled(b"error_code", b"IC0503"),
                labeled(b"reject_code", leb128(5)),
                labeled(b"reject_message", payload),
                labeled(b"status", b"rejected"),
            )
        return [0]

    async def call(self, request: web.Request) -> web.Response:
        """v2: 202 and read_state for the reply; v3/v4 ("Synchronous call"): 200 and
        {status: replied, certificate} holding /request_status/<id>, or 202 when not done."""
        api, ranges = self._api(request, "call")
        content = await self._envelope(request)
        method = content["method_name"]
        self.calls.append(f"{api} call {method}")
        request_id = to_request_id(content)
        if self.fault == "refuse-call":
            return web.Response(
                body=cbor2.dumps(self._refusal(api)), content_type="application/cbor"
            )
        if self.fault == "reject":
            self.replies[request_id] = ("rejected", b"canister trapped")
        elif self.wasm is not None:
            try:
                reply = self.wasm.update(method, bytes(content["sender"]), bytes(content["arg"]))
                self.replies[request_id] = ("replied", reply)
            except (CanisterTrap, CanisterReject) as e:
                self.replies[request_id] = ("rejected", f"canister trapped: {e}".encode())
        else:
            result = self.model.call(
                method, bytes(content["sender"]), self._args(method, bytes(content["arg"]))
            )
            reply = encode([{"type": self.methods[method].retTypes[0], "value": result}])
            self.replies[request_id] = ("replied", bytes(reply))
        if api == "v2" or self.fault == "call-pending":
            return web.Response(status=202)
        tree = [2, b"request_status", [2, request_id, self._status_node(request_id)]]
        answer = {"status": "replied", "certificate": self.certificate(tree, ranges=ranges)}
        return web.Response(body=cbor2.dumps(answer), content_type="application/cbor")

    async def read_state(self, request: web.Request) -> web.Response:
        """Spec "Request: Read state": 200 and {certificate}."""
        api, ranges = self._api(request, "read_state")
        content = await self._envelope(request)
        (path,) = content["paths"]
        request_id = bytes(path[1])
        self.calls.append(f"{api} read_state")
        tree = [2, b"request_status", [2, request_id, self._status_node(request_id)]]
        cert = self.certificate(tree, ranges=ranges)
        return web.Response(
            body=cbor2.dumps({"certificate": cert}), content_type="application/cbor"
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v2/status", self.status)
        app.router.add_post("/api/{api}/canister/{canister}/query", self.query)
        app.router.add_post("/api/{api}/canister/{canister}/call", self.call)
        app.router.add_post("/api/{api}/canister/{canister}/read_state", self.read_state)
        return app


class IcServerThread:
    """Runs an :class:`IcServer` on 127.0.0.1 in a background thread with its own event loop, so
    async tests, synchronous code and subprocesses (the ``rotor`` CLI) share one URL."""

    def __init__(self, server: IcServer) -> None:
        self.server = server
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.server.app(), shutdown_timeout=0.5)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(site.start())
        self.server.url = f"http://127.0.0.1:{self.port}"
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> IcServer:
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the IC test server did not start")
        return self.server

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self.runner is not None:
                await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def running(installer: bytes, *, delegated: bool = False) -> Iterator[IcServer]:
    with IcServerThread(IcServer(installer, delegated=delegated)) as server:
        yield server
