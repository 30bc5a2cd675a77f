"""``rotor acl`` with the canister backend, against the local IC server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from rotor.names import Principal, SecretRef
from tests.canister.conftest import STRANGER_KEY, backend_for, identity
from tests.canister.ic_server import IcServer
from tests.conftest import free_port

DB = SecretRef("shop", "db")
WEB = Principal("shop", "web")


def pem_file(tmp_path: Path, ident: Any, name: str) -> str:
    path = tmp_path / f"{name}.pem"
    path.write_bytes(ident.to_pem())
    return str(path)


@pytest.fixture
def flags(ic_server: IcServer, admin_identity: Any, tmp_path: Path) -> list[str]:
    return [
        "--backend=canister",
        f"--host={ic_server.url}",
        f"--canister-id={ic_server.canister_id}",
        f"--identity={pem_file(tmp_path, admin_identity, 'admin')}",
        f"--root-key={ic_server.root.der.hex()}",
    ]


def rotor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_approve_revoke(
    ic_server: IcServer,
    controller_identity: Any,
    flags: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    controller = backend_for(ic_server, controller_identity)
    asyncio.run(controller.register_secret(DB))
    asyncio.run(controller.request_access(DB, WEB, "ro"))

    code, out, _ = rotor(capsys, "acl", "list", *flags)
    assert code == 0
    assert "ACL version 3" in out
    assert "shop/db  shop/web   ro    pending" in out

    code, out, _ = rotor(capsys, "acl", "approve", "shop/db", "shop/web", "ro", *flags)
    assert (code, out.split(" (")[0]) == (0, "approved: shop/web ro shop/db")
    assert (asyncio.run(controller.snapshot())).allows(DB, WEB, "ro")

    code, out, _ = rotor(capsys, "acl", "list", "-o", "json", *flags)
    listed = json.loads(out)
    assert listed["grants"] == [{"secret": "shop/db", "principal": "shop/web", "mode": "ro"}]
    assert listed["requests"] == []

    code, out, _ = rotor(capsys, "acl", "revoke", "shop/db", "shop/web", "ro", *flags)
    assert code == 0
    assert not (asyncio.run(controller.snapshot())).allows(DB, WEB, "ro")


def test_deny(
    ic_server: IcServer,
    controller_identity: Any,
    flags: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    controller = backend_for(ic_server, controller_identity)
    asyncio.run(controller.register_secret(DB))
    asyncio.run(controller.request_access(DB, WEB, "ro"))
    code, _, _ = rotor(capsys, "acl", "deny", "shop/db", "shop/web", "ro", *flags)
    assert code == 0
    assert [r.state for r in (asyncio.run(controller.snapshot())).requests] == ["denied"]


def test_non_admin_is_refused(
    ic_server: IcServer, flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = pem_file(tmp_path, identity(STRANGER_KEY), "stranger")
    code, _, err = rotor(
        capsys, "acl", "approve", "shop/db", "shop/web", "ro", *flags, f"--identity={stranger}"
    )
    assert code == 1
    assert "is not an admin of the ACL canister" in err
    assert "Traceback" not in err


def test_unknown_secret_is_refused(
    ic_server: IcServer, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = rotor(capsys, "acl", "approve", "shop/nope", "shop/web", "ro", *flags)
    assert code == 1
    assert "shop/nope is not known to the ACL" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["approve", "db", "shop/web", "ro"],
            "SECRET: 'db' has no namespace; write namespace/name",
        ),
        (["approve", "shop/db", "web", "ro"], "PRINCIPAL: 'web' is not a principal"),
        (["approve", "shop/db", "other/api", "rw"], "PRINCIPAL: other/api cannot write shop/db"),
        (["revoke", "shop/DB", "shop/web", "ro"], "SECRET: 'DB' is not a valid name"),
    ],
)
def test_bad_input_exits_2(
    flags: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = rotor(capsys, "acl", *argv, *flags)
    assert code == 2
    assert message in err


def test_bad_mode_and_missing_identity_exit_2(
    ic_server: IcServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["acl", "approve", "shop/db", "shop/web", "rx", "--backend=canister"])
    assert info.value.code == 2
    assert "invalid choice: 'rx'" in capsys.readouterr().err
    code, _, err = rotor(
        capsys, "acl", "list", "--backend=canister", f"--canister-id={ic_server.canister_id}"
    )
    assert code == 2
    assert "--identity: the canister backend needs an admin's PEM key" in err
    (tmp_path / "junk.pem").write_text("not a key")
    code, _, err = rotor(
        capsys,
        "acl",
        "list",
        "--backend=canister",
        f"--canister-id={ic_server.canister_id}",
        f"--identity={tmp_path / 'junk.pem'}",
    )
    assert code == 2
    assert "is not a PEM private key" in err


def test_unreachable_host_exits_1(
    admin_identity: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = rotor(
        capsys,
        "acl",
        "list",
        "--backend=canister",
        f"--host=http://127.0.0.1:{free_port()}",
        "--canister-id=rrkah-fqaaa-aaaaa-aaaaq-cai",
        f"--identity={pem_file(tmp_path, admin_identity, 'admin')}",
    )
    assert code == 1
    assert "after 3 attempts" in err


def test_console_entry_point() -> None:
    """``python -m controller.cli`` (what the ``rotor`` script runs) exits 2 on bad input."""
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "acl", "revoke", "x", "shop/web", "ro"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "SECRET: 'x' has no namespace" in result.stderr


def test_retire_removes_a_name_the_controller_cannot_use(
    model_server: IcServer,
    controller_identity: Any,
    admin_identity: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An older canister accepted "shop/a..b"; the controller skips it and names it, and an
    admin retires it with its grants and requests, leaving the rest."""
    controller = backend_for(model_server, controller_identity)
    asyncio.run(controller.register_secret(DB))
    model_server.model.secrets.add("shop/a..b")  # stored under the old, looser rule
    model_server.model.grants["shop/a..b shop/web ro"] = {
        "secret": "shop/a..b",
        "principal": "shop/web",
        "mode": {"ro": None},
    }
    flags = [
        "--backend=canister",
        f"--host={model_server.url}",
        f"--canister-id={model_server.canister_id}",
        f"--identity={pem_file(tmp_path, admin_identity, 'admin')}",
        f"--root-key={model_server.root.der.hex()}",
    ]
    snap = asyncio.run(controller.snapshot())
    assert snap.secrets == frozenset({DB})
    assert [(e.where, e.secret) for e in snap.skipped] == [
        ("acl.secrets[0]", "shop/a..b"),
        ("acl.grants[0]", "shop/a..b"),
    ]
    code, out, _ = rotor(capsys, "acl", "list", *flags)
    assert code == 0
    assert "SKIPPED" in out
    assert "'shop/a..b'" in out

    code, out, err = rotor(capsys, "acl", "retire", "shop/a..b", *flags)
    assert (code, err) == (0, "")
    assert "retired: shop/a..b" in out
    snap = asyncio.run(controller.snapshot())
    assert snap.skipped == ()
    assert snap.secrets == frozenset({DB})
    assert model_server.model.grants == {}


def test_retire_needs_an_admin(
    ic_server: IcServer,
    controller_identity: Any,
    tmp_path: Path,
    flags: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(backend_for(ic_server, controller_identity).register_secret(DB))
    operator = [
        *(f for f in flags if not f.startswith("--identity")),
        f"--identity={pem_file(tmp_path, controller_identity, 'operator')}",
    ]
    code, _, err = rotor(capsys, "acl", "retire", "shop/db", *operator)
    assert code == 1
    assert "is not an admin" in err
    snap = asyncio.run(backend_for(ic_server, controller_identity).snapshot())
    assert DB in snap.secrets


def test_retire_with_the_configmap_backend_says_how(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = rotor(capsys, "acl", "retire", "shop/db", "--backend=configmap")
    assert code == 2
    assert "only the canister backend" in err
