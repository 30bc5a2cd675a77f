"""``rotor`` (rotorctl.cli): ``acl`` behaves as controller.cli's, ``demo`` parses its flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rotorctl import cli
from rotorctl.kubeemu import EmulatorThread


def test_rotor_acl_goes_to_the_configmap_backend(tmp_path: Path, capsys) -> None:
    with EmulatorThread() as emu:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "e", "cluster": {"server": emu.url}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u"}}],
                    "current-context": "e",
                }
            )
        )
        common = ["--kubeconfig", str(kubeconfig)]
        assert cli.main(["acl", "approve", "shop/db", "web/web", "ro", *common]) == 0
        assert cli.main(["acl", "list", "-o", "json", *common]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out[out.index("{") :])
    assert listed["grants"] == [{"secret": "shop/db", "principal": "web/web", "mode": "ro"}]


def test_rotor_acl_bad_input_exits_2_naming_the_argument(capsys) -> None:
    assert cli.main(["acl", "approve", "shop/db", "web/web", "rw"]) == 2
    assert "PRINCIPAL" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "seconds"), [("20", 20.0), ("90s", 90.0), ("1m", 60.0)])
def test_demo_rotate_every_takes_seconds_or_a_duration(flag: str, seconds: float) -> None:
    parser = cli.build_parser(cli.ControllerSettings())
    args = parser.parse_args(["demo", "--rotate-every", flag, "--duration", "5"])
    assert args.rotate_every == seconds
    assert args.duration == 5.0


def test_demo_rejects_a_bad_interval(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--rotate-every", "5x"])
    assert e.value.code == 2
    assert "--rotate-every" in capsys.readouterr().err
