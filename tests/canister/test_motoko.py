"""The canister compiled by the Motoko compiler (npm `motoko`), its logic run by the interpreter."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.canister.conftest import CANISTER, Moc

pytestmark = pytest.mark.slow  # the Motoko compiler and interpreter

INTERPRETER_CHECKS = [
    "sha256_vectors",
    "installer_is_admin",
    "only_admins_approve",
    "request_idempotent",
    "unknown_secret_refused",
    "invalid_arguments",
    "revoke_removes_and_version_grows",
    "admins_manage_admins",
    "remove_operator",
    "certified_hash",
    "dns1123_names",
    "retire_secret",
]


def test_compiles_to_ic_wasm(built: Path) -> None:
    wasm = (built / "acl.wasm").read_bytes()
    assert wasm[:4] == b"\0asm"
    assert b"canister_query acl" in wasm
    assert b"canister_update approve" in wasm


@pytest.mark.parametrize("name", ["acl.did", "acl.most"])
def test_committed_interface_matches_compiler(built: Path, name: str) -> None:
    """acl.did (Candid) and acl.most (stable signature) are generated: regenerate with
    `node canister/scripts/moc.mjs build && cp canister/build/acl.{did,most} canister/`."""
    committed = (CANISTER / name).read_text()
    assert (built / name).read_text() == committed, f"canister/{name} is out of date"


@pytest.mark.parametrize(
    "release", sorted((CANISTER / "stable").glob("*.most")), ids=lambda p: p.stem
)
def test_upgrade_from_each_release_keeps_state(moc: Moc, built: Path, release: Path) -> None:
    """moc's stable-compatibility check (what dfx runs before an upgrade): every stable variable
    of the released canister is still there with a compatible type."""
    result = moc("compatible", str(release), str(built / "acl.most"))
    assert result.returncode == 0, result.stderr


def test_incompatible_upgrade_is_rejected(moc: Moc, built: Path, tmp_path: Path) -> None:
    changed = (built / "acl.most").read_text().replace("var version : Nat64", "var version : Text")
    assert changed != (built / "acl.most").read_text()
    (tmp_path / "new.most").write_text(changed)
    result = moc("compatible", str(built / "acl.most"), str(tmp_path / "new.most"))
    assert result.returncode == 1
    assert "version" in result.stderr


def test_interpreter_logic(interpreter_run: subprocess.CompletedProcess[str]) -> None:
    run = interpreter_run
    assert run.returncode == 0, run.stderr
    passed = re.findall(r"^PASS (\w+)$", run.stdout, re.M)
    assert passed == INTERPRETER_CHECKS


def test_interpreter_reports_a_failed_check(moc: Moc, tmp_path: Path) -> None:
    """A failing assertion in a Motoko test makes the run fail (so the test above can fail)."""
    probe = tmp_path / "ProbeFail.mo"
    probe.write_text('import State "../src/State";\nassert State.validRef("not-a-ref");\n')
    result = moc("run", str(probe))
    assert result.returncode == 1
    assert "assertion failure" in result.stderr


def test_certified_hash_is_the_same_in_motoko_and_python(
    interpreter_run: subprocess.CompletedProcess[str],
) -> None:
    """The controller recomputes exactly the hash the canister certifies (State.aclHash)."""
    from controller.acl.canister import acl_hash

    # the ACL AclTest.mo builds in its last check
    acl = {
        "version": 8,
        "secrets": ["a-b/x", "shop/db"],
        "grants": [],
        "requests": [
            {
                "secret": "a-b/x",
                "principal": "shop/web",
                "mode": {"ro": None},
                "state": {"denied": None},
            },
            {
                "secret": "shop/db",
                "principal": "shop/web",
                "mode": {"ro": None},
                "state": {"pending": None},
            },
        ],
    }
    (motoko,) = re.findall(r"^HASH ([0-9a-f]{64})$", interpreter_run.stdout, re.M)
    assert acl_hash(acl).hex() == motoko


def test_actor_shell_in_the_interpreter(moc: Moc) -> None:
    """src/Main.mo itself, with a stand-in for CertifiedData that prints what is certified: the
    installer is the first admin, and the certified data follows every successful update."""
    from controller.acl.canister import acl_hash

    run = moc("run", "--fake-certified-data", "test/ActorTest.mo")
    assert run.returncode == 0, run.stderr
    assert re.findall(r"^PASS (\w+)$", run.stdout, re.M) == [
        "installer_is_first_admin",
        "shell_methods",
    ]
    certified = re.findall(r"^CERTIFIED ([0-9a-f]{64})$", run.stdout, re.M)
    (expected,) = re.findall(r"^EXPECT ([0-9a-f]{64})$", run.stdout, re.M)
    empty = {"version": 0, "secrets": [], "grants": [], "requests": []}
    # on install, then after each of the 3 successful updates; none after the 2 refused ones
    assert len(certified) == 4
    assert certified[0] == acl_hash(empty).hex()
    assert certified[-1] == expected


# One naming rule for the canister and the controller (DNS-1123, rotor/names.py): both sides judge
# the same list. "a..b", "a.-b" and "a-.b" were accepted by the canister and refused by the
# controller, which then could decode no ACL at all.
NAMES = [
    "shop/db",
    "shop/a.b-c.d",
    "a-b/x.y",
    "0/9",
    "shop/a..b",
    "shop/a.-b",
    "shop/a-.b",
    "shop/.a",
    "shop/a.",
    "shop/-a",
    "shop/a-",
    "Shop/db",
    "shop/DB",
    "sh.op/db",
    "shop/a_b",
    "shop/a b",
    "shop/a\n",
    "shop\n/a",
    "shop/",
    "/a",
    "shop/a/b",
    "a" * 63 + "/x",
    "a" * 64 + "/x",
    "shop/" + "a" * 253,
    "shop/" + "a" * 254,
    "shop/" + ".".join(["a" * 63] * 4)[:253],
]


def _controller_accepts(text: str) -> bool:
    from rotor.errors import InvalidSpec
    from rotor.names import Principal, SecretRef

    try:
        secret = SecretRef.parse(text, None, "secret")
        principal = Principal.parse(text)
    except InvalidSpec:
        return False
    return str(secret) == text and str(principal) == text


def test_canister_and_controller_share_one_naming_rule(moc: Moc, tmp_path: Path) -> None:
    lines = ['import Debug "mo:core/Debug";', 'import State "../src/State";']
    for i, text in enumerate(NAMES):
        literal = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'Debug.print("NAME {i} " # debug_show State.validRef("{literal}"));')
    probe = tmp_path / "ProbeNames.mo"
    probe.write_text("\n".join(lines) + "\n")
    run = moc("run", str(probe))
    assert run.returncode == 0, run.stderr
    canister = {int(i): v == "true" for i, v in re.findall(r"^NAME (\d+) (\w+)$", run.stdout, re.M)}
    assert len(canister) == len(NAMES)
    disagree = [
        (text, canister[i])
        for i, text in enumerate(NAMES)
        if canister[i] != _controller_accepts(text)
    ]
    assert disagree == []
    assert canister[NAMES.index("shop/a.b-c.d")]
    assert not canister[NAMES.index("shop/a..b")]
