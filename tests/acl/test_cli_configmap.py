"""``rotor acl`` with the ConfigMap backend, against the strict Kubernetes emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.cli import main
from tests.kubeemu import EmulatorThread


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[tuple[EmulatorThread, str]]:
    with EmulatorThread() as emu:
        path = tmp_path / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emu", "cluster": {"server": emu.url}}],
                    "users": [{"name": "admin", "user": {"token": "t"}}],
                    "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "admin"}}],
                    "current-context": "emu",
                }
            )
        )
        yield emu, str(path)


def test_approve_list_revoke(
    kubeconfig: tuple[EmulatorThread, str], capsys: pytest.CaptureFixture[str]
) -> None:
    emu, path = kubeconfig
    flags = ["--backend=configmap", f"--kubeconfig={path}"]
    assert main(["acl", "approve", "shop/db", "shop/web", "ro", *flags]) == 0
    assert "approved: shop/web ro shop/db (configmap rotor-system/rotor-acl)" in (
        capsys.readouterr().out
    )
    (cm,) = [o for o in emu.objects("v1", "configmaps") if o["metadata"]["name"] == "rotor-acl"]
    stored = yaml.safe_load(cm["data"]["acl.yaml"])
    assert stored["grants"] == [{"secret": "shop/db", "principal": "shop/web", "mode": "ro"}]

    assert main(["acl", "list", *flags]) == 0
    out = capsys.readouterr().out
    assert "shop/db  shop/web   ro" in out

    assert main(["acl", "revoke", "shop/db", "shop/web", "ro", *flags]) == 0
    capsys.readouterr()
    assert main(["acl", "list", "-o", "json", *flags]) == 0
    assert '"grants": []' in capsys.readouterr().out


def test_bad_kubeconfig_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["acl", "list", "--backend=configmap", f"--kubeconfig={tmp_path / 'none'}"])
    assert code == 2
    missing = tmp_path / "none"
    assert f"--kubeconfig: cannot read {missing} (No such file or directory)" in (
        capsys.readouterr().err
    )
