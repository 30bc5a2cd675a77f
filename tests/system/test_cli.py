"""``rotor`` (rotorctl.cli): ``acl`` behaves as controller.cli's, ``demo`` parses its flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeemu.emulator import EmulatorThread
from rotorctl import cli


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


@pytest.mark.parametrize(("flag", "seconds"), [("20s", 20.0), ("90s", 90.0), ("1m", 60.0)])
def test_demo_rotate_every_and_duration_take_durations(flag: str, seconds: float) -> None:
    parser = cli.build_parser(cli.ControllerSettings())
    args = parser.parse_args(["demo", "--rotate-every", flag, "--duration", "1m"])
    assert args.rotate_every == seconds
    assert args.duration == 60.0


def test_kube_and_demo_take_duration_the_same_way(capsys) -> None:
    """`rotor kube --duration 5s` and `rotor demo --duration 5s` both work; both refuse a bare
    number (one rule for every duration flag, rotor/durations.py)."""
    parser = cli.build_parser(cli.ControllerSettings())
    assert parser.parse_args(["kube", "--duration", "5s"]).duration == 5.0
    assert parser.parse_args(["demo", "--duration", "5s"]).duration == 5.0
    for command in ("kube", "demo"):
        with pytest.raises(SystemExit) as e:
            parser.parse_args([command, "--duration", "5"])
        assert e.value.code == 2
        assert "--duration" in capsys.readouterr().err


def test_demo_rejects_a_bad_interval(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--rotate-every", "5x"])
    assert e.value.code == 2
    assert "--rotate-every" in capsys.readouterr().err


def test_demo_defaults_to_a_folder_other_than_the_agents_demo() -> None:
    args = cli.build_parser(cli.ControllerSettings()).parse_args(["demo"])
    assert args.dir == "rotor-demo-cluster"  # rotor-agent standalone --demo keeps ./rotor-demo


def test_demo_never_deletes_a_folder_it_did_not_create(tmp_path: Path, capsys) -> None:
    theirs = tmp_path / "rotor-demo"
    (theirs / ".rotor").mkdir(parents=True)
    (theirs / ".rotor" / "demo.json").write_text("{}")  # e.g. rotor-agent standalone's state
    assert cli.main(["demo", "--dir", str(theirs), "--duration", "1s", "--no-vault"]) == 2
    err = capsys.readouterr().err
    assert f"--dir {theirs}: exists and was not created by `rotor demo`" in err
    assert (theirs / ".rotor" / "demo.json").read_text() == "{}"


def test_demo_empties_only_its_own_folder(tmp_path: Path) -> None:
    from rotorctl.demo import MARKER, prepare_dir

    ours = tmp_path / "d"
    prepare_dir(ours)  # created, with the marker
    (ours / "logs").mkdir()
    (ours / "logs" / "old.log").write_text("old run")
    prepare_dir(ours)  # an earlier run's folder: emptied
    assert sorted(p.name for p in ours.iterdir()) == [MARKER]
    empty = tmp_path / "e"
    empty.mkdir()
    prepare_dir(empty)  # an empty folder is taken
    assert (empty / MARKER).is_file()


def test_demo_status_line_says_what_each_number_counts_down() -> None:
    import time

    from rotor.layout import format_time
    from rotorctl import demo

    class FakeSystem:
        def __init__(self, status: dict) -> None:
            self._status = status

        def version(self, ns: str, name: str) -> int:
            return 3

        def status(self, ns: str, name: str) -> dict:
            return self._status

    nxt = format_time(time.time() + 10)
    line = demo._status_line(FakeSystem({"nextRotation": nxt}), time.monotonic() + 45)
    assert line.startswith("version 3; next rotation in ")
    assert f"s (status.nextRotation {nxt}); the demo ends in " in line
    assert line.endswith("s (--duration)")
    line = demo._status_line(FakeSystem({}), None)
    assert line == "version 3; next rotation not scheduled yet; Ctrl-C stops the demo"


def test_the_chart_is_found_in_the_checkout_a_plain_install_runs_in(
    tmp_path: Path, monkeypatch
) -> None:
    """`pip install '.[cli]'` (not editable) puts rotorctl in site-packages, without charts/:
    `rotor demo` run in the checkout finds charts/rotor there; elsewhere it says in one line
    where the chart is and how to point at it."""
    from rotorctl import chartrbac

    checkout = tmp_path / "checkout"
    (checkout / "charts").mkdir(parents=True)
    (checkout / "charts" / "rotor").symlink_to(chartrbac.CHART)
    monkeypatch.setattr(chartrbac, "CHART", tmp_path / "site-packages" / "charts" / "rotor")
    monkeypatch.delenv(chartrbac.CHART_ENV, raising=False)
    monkeypatch.chdir(checkout)
    assert chartrbac.chart_dir() == checkout / "charts" / "rotor"
    assert any(d["kind"] == "ClusterRole" for d in chartrbac.identities("rotor-system"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(chartrbac.ChartUnavailable) as e:
        chartrbac.chart_dir()
    assert "run this in the checkout, or set ROTOR_CHART=CHECKOUT/charts/rotor" in str(e.value)
    monkeypatch.setenv(chartrbac.CHART_ENV, str(checkout / "charts" / "rotor"))
    assert chartrbac.chart_dir() == checkout / "charts" / "rotor"


def test_demo_prints_rotor_as_the_users_shell_runs_it(tmp_path: Path, monkeypatch) -> None:
    """`make demo` puts .venv/bin on the PATH of its own recipe only: the printed `rotor acl
    list` must carry the path then, and be plain `rotor` where the user's shell finds it."""
    import sys

    from rotorctl.demo import command

    bin_dir = Path(sys.executable).parent
    monkeypatch.chdir(bin_dir.parent.parent)  # the checkout, with .venv/ in it
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("MAKELEVEL", raising=False)
    assert command() == "rotor"
    monkeypatch.setenv("MAKELEVEL", "1")
    printed = command()
    assert Path(printed).resolve() == (bin_dir / "rotor").resolve()
    monkeypatch.delenv("MAKELEVEL")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command() == printed
    assert command("pip") == str(Path(printed).parent / "pip")
