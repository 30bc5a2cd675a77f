"""The compiled canister (canister/build/acl.wasm) on wasmtime: what the interpreter cannot show
(the real build's Candid, certified data, traps, callers), and the issue-14 cases on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import wasmtime
from ic.candid import Types
from ic.principal import Principal as IcPrincipal

from controller.acl.canister import RESULT, acl_hash, candid_args, decode_one
from controller.acl.canister.candid import CERTIFIED_ACL
from rotor.acl import Grant
from rotor.errors import InvalidSpec, PermanentError
from rotor.names import Principal, SecretRef
from tests.canister.conftest import backend_for
from tests.canister.ic_server import IcServer
from tests.canister.wasm_host import EMPTY_ARGS, CanisterTrap, WasmCanister

DB = SecretRef("shop", "db")
WEB = Principal("shop", "web")
CANISTER = IcPrincipal.from_str("rrkah-fqaaa-aaaaa-aaaaq-cai").bytes
ADMIN = IcPrincipal.self_authenticating(b"\x01" * 44).bytes

# What the host implements (wasm_host.py); the rest of ic0 traps if the canister calls it.
PROVIDED = {
    "msg_arg_data_size", "msg_arg_data_copy", "msg_caller_size", "msg_caller_copy",
    "msg_reply_data_append", "msg_reply", "msg_reject", "canister_self_size",
    "canister_self_copy", "canister_status", "is_controller", "certified_data_set",
    "data_certificate_present", "data_certificate_size", "data_certificate_copy", "time",
    "performance_counter", "global_timer_set", "debug_print", "trap", "stable64_size",
    "stable64_grow", "stable64_read", "stable64_write",
}  # fmt: skip
UNUSED = {  # imported by the Motoko runtime, never reached by this canister's methods
    "call_new", "call_data_append", "call_cycles_add128", "call_with_best_effort_response",
    "call_perform", "call_on_cleanup", "msg_cycles_refunded128", "msg_reject_code",
    "msg_reject_msg_size", "msg_reject_msg_copy",
}  # fmt: skip


def update(c: WasmCanister, method: str, caller: bytes, *args: tuple[Any, Any]) -> Any:
    return decode_one(c.update(method, caller, candid_args(*args)), RESULT, method)


def test_the_host_covers_every_import(canister_wasm: Path) -> None:
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(canister_wasm))
    imported = {(i.module, i.name) for i in module.imports}
    assert {m for m, _ in imported} == {"ic0"}
    assert {n for _, n in imported} <= PROVIDED | UNUSED
    assert {n for _, n in imported} >= PROVIDED - {"is_controller", "canister_status"}


def test_certified_data_is_the_hash_of_the_acl(canister_wasm: Path) -> None:
    """The real build certifies sha256 of the canonical encoding the controller recomputes."""
    c = WasmCanister(canister_wasm, CANISTER, ADMIN)
    empty = {"version": 0, "secrets": [], "grants": [], "requests": []}
    assert c.certified_data == acl_hash(empty)  # on install
    assert update(c, "create_secret", ADMIN, (Types.Text, "shop/db")) == {"ok": 1}
    view = decode_one(c.query("acl", ADMIN, EMPTY_ARGS, b"cert"), CERTIFIED_ACL, "acl")
    assert bytes(view["certificate"][0]) == b"cert"  # the certificate the host was given
    assert c.certified_data == acl_hash(view["acl"])
    assert view["acl"]["secrets"] == ["shop/db"]


def test_a_query_has_no_certificate_in_an_update_and_changes_nothing(
    canister_wasm: Path,
) -> None:
    c = WasmCanister(canister_wasm, CANISTER, ADMIN)
    before = c.certified_data
    for _ in range(3):
        view = decode_one(c.query("acl", ADMIN, EMPTY_ARGS, None), CERTIFIED_ACL, "acl")
        assert view["certificate"] == []
    assert c.certified_data == before
    assert update(c, "create_secret", ADMIN, (Types.Text, "shop/db")) == {"ok": 1}


def test_a_trap_leaves_no_change(canister_wasm: Path) -> None:
    """A malformed argument traps in Candid decoding; as on the IC, nothing it did stays."""
    c = WasmCanister(canister_wasm, CANISTER, ADMIN)
    assert update(c, "create_secret", ADMIN, (Types.Text, "shop/db")) == {"ok": 1}
    data = c.certified_data
    with pytest.raises(CanisterTrap):
        c.update("create_secret", ADMIN, candid_args((Types.Nat64, 7)))
    assert c.certified_data == data
    assert update(c, "create_secret", ADMIN, (Types.Text, "shop/other")) == {"ok": 2}


def test_the_caller_decides_the_role(canister_wasm: Path) -> None:
    """Role checks by caller, which the interpreter (one principal) cannot exercise on Main.mo."""
    c = WasmCanister(canister_wasm, CANISTER, ADMIN)
    stranger = IcPrincipal.self_authenticating(b"\x02" * 44).bytes
    result = update(c, "create_secret", stranger, (Types.Text, "shop/db"))
    assert result["err"]["not_authorized"]["needs"] == {"operator": None}
    assert result["err"]["not_authorized"]["caller"] == IcPrincipal(bytes=stranger).to_str()


@pytest.mark.parametrize("name", ["a..b", "a.-b", "a-.b"])
async def test_the_compiled_canister_refuses_what_the_controller_refuses(
    ic_server: IcServer, admin_identity: Any, name: str
) -> None:
    """Issue 14, case 3: these names were accepted by the compiled canister, and every decode
    of acl() failed afterwards."""
    admin = backend_for(ic_server, admin_identity)
    with pytest.raises(InvalidSpec, match="is not namespace/name"):
        await admin.register_secret(SecretRef("shop", name))
    assert (await admin.snapshot()).secrets == frozenset()


async def test_retire_on_the_compiled_canister(
    ic_server: IcServer, controller_identity: Any, admin_identity: Any
) -> None:
    operator = backend_for(ic_server, controller_identity)
    admin = backend_for(ic_server, admin_identity)
    other = SecretRef("shop", "other")
    for secret in (DB, other):
        await operator.register_secret(secret)
        await admin.approve(secret, WEB, "ro")
    await operator.request_access(DB, Principal("shop", "api"), "rw")
    with pytest.raises(PermanentError, match="is not an admin"):
        await operator.retire_secret(str(DB))
    version = await admin.retire_secret(str(DB))
    snap = await admin.snapshot()
    assert snap.version == version
    assert snap.secrets == frozenset({other})
    assert snap.grants == frozenset({Grant(other, WEB, "ro")})
    assert snap.requests == ()
    assert await admin.retire_secret(str(DB)) == version  # idempotent


async def test_an_unknown_query_is_rejected_as_a_replica_does(
    ic_server: IcServer, controller_identity: Any
) -> None:
    client = backend_for(ic_server, controller_identity).client
    with pytest.raises(PermanentError, match=r"code 3, IC0536: the canister has no query"):
        await client.query("nope", EMPTY_ARGS)
    assert decode_one(await client.query("acl", EMPTY_ARGS), CERTIFIED_ACL, "acl")["certificate"]
