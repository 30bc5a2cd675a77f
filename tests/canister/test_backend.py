"""controller.acl.canister against a real IC certificate and the local IC server."""

from __future__ import annotations

import base64
import copy
import hashlib
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ecdsa
import pytest
from ic.constants import IC_ROOT_KEY
from ic.principal import Principal as IcPrincipal
from kubernetes.client import ApiException

from controller.acl import make_backend
from controller.acl.canister import (
    CanisterAclBackend,
    CanisterAnswerError,
    load_identity,
    lookup,
    tree_digest,
    verify_certificate,
)
from rotor.acl import Grant
from rotor.errors import (
    ForbiddenError,
    InvalidSpec,
    NotFoundError,
    PermanentError,
    RotorError,
    UnavailableError,
)
from rotor.names import Principal, SecretRef
from rotor.settings.controller import ControllerSettings
from tests.canister import ic_vector
from tests.canister.conftest import STRANGER_KEY, backend_for, identity
from tests.canister.ic_server import IcServer, IcServerThread, fork, labeled

DB = SecretRef("shop", "db")
WEB = Principal("shop", "web")
VECTOR_TIME = 1643206874.9  # the vector's /time


# -- certificates ---------------------------------------------------------------------------------
def vector(**overrides: Any) -> Any:
    options: dict[str, Any] = {
        "canister_id": IcPrincipal.from_str(ic_vector.CANISTER_ID).bytes,
        "certified_data": ic_vector.CERTIFIED_DATA,
        "verify": "strict",
        "root_key_der": ic_vector.ROOT_KEY,
        "now": VECTOR_TIME,
        "max_age": 60.0,
        **overrides,
    }
    return verify_certificate(ic_vector.CERTIFICATE, **options)


def test_real_ic_certificate_with_delegation_verifies() -> None:
    cert = vector()
    assert int(cert.time_ns / 1e9) == int(VECTOR_TIME)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"root_key_der": IC_ROOT_KEY}, "BLS signature does not verify"),
        ({"certified_data": bytes(32)}, "does not match the ACL"),
        ({"now": VECTOR_TIME + 3600}, "3600s old"),
        (
            {"canister_id": IcPrincipal.from_str("rrkah-fqaaa-aaaaa-aaaaq-cai").bytes},
            "no certified",
        ),
    ],
    ids=["other-root-key", "other-data", "too-old", "other-canister"],
)
def test_real_ic_certificate_rejects(override: dict[str, Any], message: str) -> None:
    with pytest.raises(CanisterAnswerError, match=message):
        vector(**override)


def test_hash_tree_mode_skips_only_the_signature() -> None:
    vector(root_key_der=IC_ROOT_KEY, verify="hash-tree")
    with pytest.raises(CanisterAnswerError, match="does not match"):
        vector(verify="hash-tree", certified_data=bytes(32))


def test_tree_digest_and_lookup() -> None:
    leaf = labeled(b"a", b"x")
    tree = fork(leaf, labeled(b"b", b"y"))
    pruned = fork([4, tree_digest(leaf)], labeled(b"b", b"y"))
    assert tree_digest(pruned) == tree_digest(tree)  # pruning keeps the root hash
    assert lookup(tree, [b"a"]) == b"x"
    assert lookup(pruned, [b"a"]) is None  # pruned: unknown, never trusted
    assert lookup(tree, [b"c"]) is None
    expected = hashlib.sha256(b"\x10ic-hashtree-leaf" + b"x").digest()
    assert tree_digest([3, b"x"]) == expected


# -- snapshots from the local IC server -----------------------------------------------------------
async def seeded(server: IcServer, controller_identity: Any, admin_identity: Any) -> Any:
    backend = backend_for(server, controller_identity)
    await backend.register_secret(DB)
    await backend.request_access(DB, WEB, "ro")
    await backend_for(server, admin_identity).approve(DB, WEB, "ro")
    return backend


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("wrong-type", CanisterAnswerError, "nat64 expected, the answer has text"),
        ("missing-field", CanisterAnswerError, "the field grants is missing"),
        ("stale", CanisterAnswerError, "3600s old"),
        ("future", CanisterAnswerError, "3600s in the future"),
        ("mismatch", CanisterAnswerError, "certified hash does not match"),
        ("bad-signature", CanisterAnswerError, "BLS signature does not verify"),
        ("no-certificate", CanisterAnswerError, "without a certificate"),
        ("http-500", UnavailableError, "HTTP 500"),
        ("reject", PermanentError, "rejected"),
    ],
)
async def test_bad_answers_are_clear_errors(
    ic_server: IcServer,
    controller_identity: Any,
    admin_identity: Any,
    fault: str,
    error: type[Exception],
    message: str,
) -> None:
    backend = await seeded(ic_server, controller_identity, admin_identity)
    good = await backend.snapshot()
    ic_server.fault = fault
    with pytest.raises(error, match=message) as info:
        await backend.snapshot()
    assert ic_server.canister_id in str(info.value)
    ic_server.fault = None
    assert await backend.snapshot() == good


@pytest.mark.parametrize(
    ("fault", "error", "status", "delay"),
    [
        ("throttle", UnavailableError, 429, 0.0),
        ("http-500", UnavailableError, 500, None),
        ("http-403", ForbiddenError, 403, None),
    ],
)
async def test_http_answers_carry_the_status_through_the_one_table(
    ic_server: IcServer,
    controller_identity: Any,
    fault: str,
    error: type[RotorError],
    status: int,
    delay: float | None,
) -> None:
    ic_server.fault = fault
    backend = backend_for(ic_server, controller_identity, attempts=2, backoff=0.01)
    with pytest.raises(error) as info:
        await backend.snapshot()
    assert info.value.status == status
    assert getattr(info.value, "delay", None) == delay
    assert isinstance(info.value.payload, str)
    if fault == "throttle":
        assert info.value.headers["retry-after"] == "0"
        assert "after 2 attempts" in str(info.value)


async def test_answer_errors_are_retryable(ic_server: IcServer, controller_identity: Any) -> None:
    """The controller keeps the last good ACL on an UnavailableError (rotor.acl.AclBackend)."""
    ic_server.fault = "mismatch"
    with pytest.raises(UnavailableError):
        await backend_for(ic_server, controller_identity).snapshot()


@pytest.mark.parametrize(
    ("verify", "fault"),
    [("hash-tree", "bad-signature"), ("none", "mismatch"), ("none", "no-certificate")],
)
async def test_weaker_verify_levels_accept(
    ic_server: IcServer, controller_identity: Any, verify: str, fault: str
) -> None:
    ic_server.fault = fault
    snap = await backend_for(ic_server, controller_identity, verify=verify).snapshot()
    assert snap.version == 1  # add_operator by the installer


async def test_timeout_is_unavailable(ic_server: IcServer, controller_identity: Any) -> None:
    ic_server.fault = "hang"
    backend = backend_for(ic_server, controller_identity, timeout=0.3, attempts=2, backoff=0.01)
    with pytest.raises(UnavailableError, match=r"no answer within 0.3s \(after 2 attempts\)"):
        await backend.snapshot()


async def test_retries_with_backoff(ic_server: IcServer, controller_identity: Any) -> None:
    ic_server.fail_next = 2
    backend = backend_for(ic_server, controller_identity, attempts=3, backoff=0.01)
    await backend.register_secret(DB)
    assert DB in (await backend.snapshot()).secrets
    ic_server.fail_next = 3
    with pytest.raises(UnavailableError, match="HTTP 503"):
        await backend.snapshot()


async def test_delegated_certificates_verify(
    canister_wasm: Path, admin_identity: Any, controller_identity: Any
) -> None:
    with IcServerThread(
        IcServer(admin_identity.sender().bytes, delegated=True, wasm=canister_wasm)
    ) as server:
        backend = backend_for(server, admin_identity)
        await backend.register_secret(DB)
        await backend.approve(DB, WEB, "ro")
        assert (await backend.snapshot()).grants == frozenset({Grant(DB, WEB, "ro")})


async def test_root_key_fetched_from_a_local_replica(
    ic_server: IcServer, controller_identity: Any
) -> None:
    backend = CanisterAclBackend.connect(
        host=ic_server.url,
        canister_id=ic_server.canister_id,
        identity=controller_identity,
        root_key="fetch",
    )
    assert (await backend.snapshot()).version == 1  # add_operator by the installer
    assert backend.client.root_key_der == ic_server.root.der


async def test_mainnet_root_key_rejects_a_local_certificate(
    ic_server: IcServer, controller_identity: Any
) -> None:
    backend = CanisterAclBackend.connect(
        host=ic_server.url, canister_id=ic_server.canister_id, identity=controller_identity
    )
    with pytest.raises(CanisterAnswerError, match="BLS signature"):
        await backend.snapshot()


# -- update calls and their error variants --------------------------------------------------------
async def test_error_variants(
    ic_server: IcServer, controller_identity: Any, admin_identity: Any
) -> None:
    controller = backend_for(ic_server, controller_identity)
    admin = backend_for(ic_server, admin_identity)
    with pytest.raises(NotFoundError, match="shop/db is not known"):
        await controller.request_access(DB, WEB, "ro")
    await controller.register_secret(DB)
    with pytest.raises(PermanentError, match=r"is not an admin.*add_admin") as info:
        await controller.approve(DB, WEB, "ro")
    assert controller_identity.sender().to_str() in str(info.value)
    with pytest.raises(InvalidSpec, match="cannot write shop/db"):
        await admin.approve(DB, Principal("other", "api"), "rw")
    stranger = backend_for(ic_server, identity(STRANGER_KEY))
    with pytest.raises(PermanentError, match=r"is not an operator.*add_operator"):
        await stranger.register_secret(SecretRef("shop", "x"))
    assert (await admin.snapshot()).grants == frozenset()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("reject", "code 5: canister trapped"),
        ("refuse-call", "code 4, IC0406: caller is not allowed"),
    ],
)
async def test_rejected_call(
    ic_server: IcServer, admin_identity: Any, fault: str, message: str
) -> None:
    ic_server.fault = fault
    with pytest.raises(PermanentError, match=f"create_secret was rejected \\({message}\\)"):
        await backend_for(ic_server, admin_identity).register_secret(DB)


# -- identity and settings ------------------------------------------------------------------------
EC_PARAMETERS = b"-----BEGIN EC PARAMETERS-----\nBgUrgQQACg==\n-----END EC PARAMETERS-----\n"


@pytest.mark.parametrize("kind", ["dfx-secp256k1", "secp256k1", "ed25519"])
def test_identity_from_pem(kind: str) -> None:
    """`dfx identity export` writes secp256k1 with an EC PARAMETERS block (older: Ed25519)."""
    if kind == "ed25519":
        pem = ecdsa.SigningKey.generate(curve=ecdsa.Ed25519).to_pem(format="pkcs8")
    else:
        pem = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1).to_pem()
        if kind == "dfx-secp256k1":
            pem = EC_PARAMETERS + pem
    ident = load_identity(pem)
    assert ident.key_type == kind.removeprefix("dfx-")
    assert len(ident.sender().bytes) == 29  # a self-authenticating principal


def test_bad_pem_is_a_clear_error_without_the_key() -> None:
    junk = b"-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END EC PRIVATE KEY-----\n"
    with pytest.raises(InvalidSpec, match="is not a PEM private key; store the output") as info:
        load_identity(junk, "secret rotor-system/id key identity.pem")
    assert "c2VjcmV0" not in str(info.value)


class FakeCoreV1:
    def __init__(self, data: dict[str, str] | None, status: int = 200) -> None:
        self.data = data
        self.status = status

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        if self.status != 200:
            raise type("ApiException", (Exception,), {"status": self.status})()
        return SimpleNamespace(data=self.data)


def settings(**kw: Any) -> ControllerSettings:
    return ControllerSettings(acl_backend="canister", **kw)


def test_make_backend_builds_the_canister_backend(ic_server: IcServer) -> None:
    pem = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1).to_pem()
    core = FakeCoreV1({"identity.pem": base64.b64encode(pem).decode()})
    backend = make_backend(
        settings(canister_id=ic_server.canister_id, canister_host=ic_server.url), core
    )
    assert isinstance(backend, CanisterAclBackend)
    assert backend.client.host == ic_server.url
    assert backend.client.verify == "strict"


@pytest.mark.parametrize(
    ("core", "kw", "message"),
    [
        (FakeCoreV1(None, 404), {}, "does not exist; create it: kubectl -n rotor-system"),
        (FakeCoreV1({}), {}, "has no key identity.pem"),
        (FakeCoreV1({"identity.pem": "bm90IGEga2V5"}), {}, "is not a PEM private key"),
        (None, {"canister_id": ""}, "ROTOR_CANISTER_ID: is not set"),
        (None, {"canister_id": "rrkah-fqaaa-aaaaa-aaaaq-caa"}, "is not a canister id"),
        (None, {"canister_root_key": "abcd"}, "ROTOR_CANISTER_ROOT_KEY"),
    ],
    ids=["no-secret", "no-key", "bad-pem", "no-canister-id", "bad-canister-id", "bad-root-key"],
)
def test_settings_errors(core: Any, kw: dict[str, Any], message: str) -> None:
    if core is None:
        pem = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1).to_pem()
        core = FakeCoreV1({"identity.pem": base64.b64encode(pem).decode()})
    options = {"canister_id": "rrkah-fqaaa-aaaaa-aaaaq-cai", **kw}
    with pytest.raises(InvalidSpec, match=message):
        CanisterAclBackend.from_settings(settings(**options), core)


# -- the current IC interface (issue 14) ----------------------------------------------------------
async def test_the_current_endpoints_are_used(
    ic_server: IcServer, controller_identity: Any
) -> None:
    """v3 query and read_state, v4 call: the interface specification deprecates v2 query and
    read_state, and a v4 call answers with its certificate at once."""
    backend = backend_for(ic_server, controller_identity)
    await backend.register_secret(DB)
    assert DB in (await backend.snapshot()).secrets
    assert ic_server.calls == ["v4 call create_secret", "v3 query acl"]


async def test_an_accepted_call_is_polled_on_v3_read_state(
    ic_server: IcServer, controller_identity: Any
) -> None:
    ic_server.fault = "call-pending"  # v4 answers 202: accepted, not done within its wait
    await backend_for(ic_server, controller_identity).register_secret(DB)
    assert ic_server.calls[:2] == ["v4 call create_secret", "v3 read_state"]
    ic_server.fault = None
    assert DB in (await backend_for(ic_server, controller_identity).snapshot()).secrets


@pytest.mark.parametrize("delegated", [False, True], ids=["root", "delegated"])
async def test_a_v2_only_host_is_still_understood(
    canister_wasm: Path, admin_identity: Any, delegated: bool
) -> None:
    with IcServerThread(
        IcServer(
            admin_identity.sender().bytes, delegated=delegated, apis=("v2",), wasm=canister_wasm
        )
    ) as server:
        backend = backend_for(server, admin_identity)
        await backend.register_secret(DB)
        await backend.approve(DB, WEB, "ro")
        assert (await backend.snapshot()).grants == frozenset({Grant(DB, WEB, "ro")})
        assert server.calls[:2] == ["v2 call create_secret", "v2 read_state"]
        assert "v2 query acl" in server.calls


async def test_a_v2_refusal_is_a_rejection_at_once(
    canister_wasm: Path, admin_identity: Any
) -> None:
    """Spec "Request: Call" (v2): a refused call is 200 {reject_code, reject_message,
    error_code} with no status; it was taken for a call in flight and timed out."""
    with IcServerThread(
        IcServer(admin_identity.sender().bytes, apis=("v2",), wasm=canister_wasm)
    ) as server:
        server.fault = "refuse-call"
        backend = backend_for(server, admin_identity, call_timeout=3.0)
        with pytest.raises(PermanentError, match=r"code 4, IC0406: caller is not allowed"):
            await backend.register_secret(DB)
        assert server.calls == ["v2 call create_secret"]  # no read_state polling


@pytest.mark.parametrize("ranges", ["tree", "flat"])
def test_both_delegation_formats_verify(
    canister_wasm: Path, admin_identity: Any, ranges: str
) -> None:
    """The delegation's canister ranges at /canister_ranges/<subnet>/<shard> (v3 query,
    v3 read_state, v4 call) or /subnet/<subnet>/canister_ranges (v2)."""
    server = IcServer(admin_identity.sender().bytes, delegated=True, wasm=canister_wasm)
    data = b"\x01" * 32
    cert = server.certificate(
        labeled(b"canister", server.canister, b"certified_data", data), ranges=ranges
    )
    options: dict[str, Any] = {
        "canister_id": server.canister,
        "certified_data": data,
        "verify": "strict",
        "root_key_der": server.root.der,
        "now": time.time(),
        "max_age": 60.0,
    }
    verify_certificate(cert, **options)
    other = IcPrincipal.from_str("ryjl3-tyaaa-aaaaa-aaaba-cai").bytes  # outside both shards
    with pytest.raises(CanisterAnswerError, match="outside the delegated subnet"):
        verify_certificate(cert, **{**options, "canister_id": other, "certified_data": None})


async def test_delegated_answers_on_the_current_endpoints_verify(
    canister_wasm: Path,
    admin_identity: Any,
) -> None:
    with IcServerThread(
        IcServer(admin_identity.sender().bytes, delegated=True, wasm=canister_wasm)
    ) as server:
        backend = backend_for(server, admin_identity)
        await backend.register_secret(DB)
        await backend.approve(DB, WEB, "ro")
        assert (await backend.snapshot()).grants == frozenset({Grant(DB, WEB, "ro")})
        assert "v3 query acl" in server.calls


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("stale-delegation", "delegation is 31 days old"),
        ("future-delegation", "delegation is 3600s in the future"),
        ("stale", "3600s old"),
    ],
)
async def test_a_stale_delegation_is_refused(
    canister_wasm: Path, admin_identity: Any, fault: str, message: str
) -> None:
    """DFINITY's verifiers refuse a delegation older than 30 days, however fresh the
    certificate it signs."""
    with IcServerThread(
        IcServer(admin_identity.sender().bytes, delegated=True, wasm=canister_wasm)
    ) as server:
        backend = backend_for(server, admin_identity)
        await backend.register_secret(DB)
        server.fault = fault
        with pytest.raises(CanisterAnswerError, match=message):
            await backend.snapshot()
        with pytest.raises(CanisterAnswerError, match=message):  # a call's certificate too
            await backend.register_secret(SecretRef("shop", "other"))


@pytest.mark.parametrize("verify", ["none", "strict"])
async def test_a_missing_opt_field_decodes_as_null(
    ic_server: IcServer, controller_identity: Any, verify: str
) -> None:
    """Candid: a record may lack an opt field (a canister that dropped it or has not added it
    yet); it decodes as null, not as "Cannot find field"."""
    backend = backend_for(ic_server, controller_identity, verify=verify)
    await backend.register_secret(DB)
    ic_server.fault = "no-certificate-field"
    if verify == "none":
        assert DB in (await backend.snapshot()).secrets
    else:
        with pytest.raises(CanisterAnswerError, match="acl came without a certificate"):
            await backend.snapshot()


def test_opt_fields_follow_the_candid_rules() -> None:
    from ic.candid import Types, encode

    from controller.acl.canister.candid import ACL, CERTIFIED_ACL, decode_one

    Record = Types.Record  # ic-py encodes; the bounded decoder (wire.py) follows the rules

    acl = {"version": 3, "secrets": ["shop/db"], "grants": [], "requests": []}
    older = Record({"acl": ACL})
    newer = Record({"acl": ACL, "note": Types.Text, "certificate": Types.Opt(Types.Nat8)})
    got = decode_one(bytes(encode([{"type": older, "value": {"acl": acl}}])), CERTIFIED_ACL, "x")
    assert got == {"acl": acl, "certificate": []}
    wire = {"acl": acl, "note": "extra", "certificate": []}
    newer = Record(
        {"acl": ACL, "note": Types.Text, "certificate": Types.Opt(Types.Vec(Types.Nat8))}
    )
    got = decode_one(bytes(encode([{"type": newer, "value": wire}])), CERTIFIED_ACL, "x")
    assert got == {"acl": acl, "certificate": []}
    with pytest.raises(CanisterAnswerError, match="the field acl is missing"):
        decode_one(bytes(encode([{"type": Record({}), "value": {}}])), CERTIFIED_ACL, "x")


# -- the ACL version only grows (issue 13, item 4) -------------------------------------------------
async def test_a_replayed_older_acl_is_refused(
    model_server: IcServer, controller_identity: Any, admin_identity: Any
) -> None:
    """A valid, fresh certificate of an older ACL (a replayed answer, a lagging node) would
    bring a revoked grant back; the version may only grow."""
    backend = await seeded(model_server, controller_identity, admin_identity)
    granted = await backend.snapshot()
    assert Grant(DB, WEB, "ro") in granted.grants
    before = copy.deepcopy(model_server.model)
    await backend_for(model_server, admin_identity).revoke(DB, WEB, "ro")
    revoked = await backend.snapshot()
    assert revoked.grants == frozenset()
    assert revoked.version > granted.version
    model_server.model = before  # the canister's older state, certified afresh
    with pytest.raises(CanisterAnswerError, match=r"version \d+ is older than version \d+"):
        await backend.snapshot()
    model_server.model.version = revoked.version  # same version, other content
    with pytest.raises(CanisterAnswerError, match="another ACL of version"):
        await backend.snapshot()


# -- entries the controller cannot use -------------------------------------------------------------
async def test_an_entry_with_a_bad_name_is_skipped_and_named(
    ic_server: IcServer, controller_identity: Any, admin_identity: Any
) -> None:
    backend = await seeded(ic_server, controller_identity, admin_identity)
    ic_server.fault = "bad-name"  # a grant for "Not A/Name", certified with the rest
    snap = await backend.snapshot()
    assert snap.grants == frozenset({Grant(DB, WEB, "ro")})
    (entry,) = snap.skipped
    assert (entry.where, entry.secret) == ("acl.grants[1]", "Not A/Name")
    assert str(entry) == (
        "acl.grants[1] (secret 'Not A/Name'): secret 'Not A/Name': 'Not A' is not a valid namespace"
    )


# -- ... and across restarts (issue 24, item 14) --------------------------------------------------
class ConfigMaps:
    """The three ConfigMap calls of ConfigMapMark, answered as the API server does (404 for a
    missing one, 409 for creating one that exists)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        if (namespace, name) not in self.data:
            raise ApiException(status=404)
        return SimpleNamespace(data=dict(self.data[namespace, name]))

    def create_namespaced_config_map(self, namespace: str, body: dict[str, Any]) -> None:
        key = (namespace, body["metadata"]["name"])
        if key in self.data:
            raise ApiException(status=409)
        self.data[key] = dict(body["data"])

    def patch_namespaced_config_map(self, name: str, namespace: str, body: Any) -> None:
        if (namespace, name) not in self.data:
            raise ApiException(status=404)
        self.data[namespace, name].update(body["data"])


MARK = ("rotor-system", "rotor-acl-canister-version")


async def test_a_replayed_older_acl_is_refused_after_a_restart(
    model_server: IcServer, controller_identity: Any, admin_identity: Any
) -> None:
    """The highest version read is kept in a ConfigMap: a new controller process refuses an
    older ACL too (before, only the process that had read the newer one did)."""
    from controller.acl.canister.mark import ConfigMapMark

    api = ConfigMaps()

    def process() -> Any:  # a controller process: its own backend, the same ConfigMap
        mark = ConfigMapMark(api, *MARK, model_server.canister_id)
        return backend_for(model_server, controller_identity, mark=mark)

    backend = process()
    await backend.register_secret(DB)
    await backend.request_access(DB, WEB, "ro")
    await backend_for(model_server, admin_identity).approve(DB, WEB, "ro")
    granted = await backend.snapshot()
    assert Grant(DB, WEB, "ro") in granted.grants
    before = copy.deepcopy(model_server.model)
    await backend_for(model_server, admin_identity).revoke(DB, WEB, "ro")
    revoked = await backend.snapshot()
    assert api.data[MARK]["version"] == str(revoked.version)
    assert await process().snapshot() == revoked  # a restart reads the same version
    model_server.model = before  # the older state, certified afresh, after a restart
    with pytest.raises(CanisterAnswerError, match=r"version \d+ is older than version \d+") as e:
        await process().snapshot()
    assert "kept in configmap rotor-system/rotor-acl-canister-version" in str(e.value)
    assert "delete it only if the canister was reinstalled" in str(e.value)
    other = ConfigMapMark(api, *MARK, "ryjl3-tyaaa-aaaaa-aaaba-cai")  # another canister's mark
    assert await other.load() is None


def test_the_controller_keeps_the_version_in_a_configmap_of_its_namespace(
    ic_server: IcServer,
) -> None:
    pem = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1).to_pem()
    core = FakeCoreV1({"identity.pem": base64.b64encode(pem).decode()})
    backend = make_backend(
        settings(canister_id=ic_server.canister_id, canister_host=ic_server.url), core
    )
    mark = backend.mark  # type: ignore[attr-defined]
    assert mark.origin == "configmap rotor-system/rotor-acl-canister-version"
