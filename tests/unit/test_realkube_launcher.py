"""The real control plane's launcher without the real binaries: what a user sees when they are
not built or when a component fails to start (no Go build needed; scripts stand in)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rotorctl import cli
from rotorctl.processes import HarnessError
from rotorctl.realkube import COMPONENTS, ControlPlane, KubeBinariesMissing, bin_dir, cache_folder


def test_rotor_kube_real_without_binaries_says_in_one_line_how_to_build_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROTOR_KUBE_BIN", str(tmp_path / "nothing-here"))
    code = cli.main(["kube", "--real", "--kubeconfig", str(tmp_path / "kc")])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "make kube-bin" in err
    assert "kube-apiserver" in err
    assert "Traceback" not in err
    assert not (tmp_path / "kc").exists()


def test_bin_dir_names_every_missing_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTOR_KUBE_BIN", str(tmp_path))
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    with pytest.raises(KubeBinariesMissing) as e:
        bin_dir()
    assert "etcd" not in str(e.value).split("(")[1].split(" missing")[0]
    for name in COMPONENTS[1:]:
        assert name in str(e.value)


def test_cache_folder_is_the_one_build_sh_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key build.sh computes: sha256 of build.sh, */go.mod, */go.sum (in that order)."""
    import hashlib

    tools = tmp_path / "kube"
    for sub in ("b", "a"):
        (tools / sub).mkdir(parents=True)
        (tools / sub / "go.mod").write_text(f"module {sub}\n")
        (tools / sub / "go.sum").write_text(f"sum {sub}\n")
    (tools / "build.sh").write_text("echo build\n")
    monkeypatch.setenv("ROTOR_KUBE_CACHE", str(tmp_path / "cache"))
    # what `cat build.sh */go.mod */go.sum` gives
    cat = b"echo build\nmodule a\nmodule b\nsum a\nsum b\n"
    key = hashlib.sha256(cat).hexdigest()[:16]
    assert cache_folder(tools, "go1.26.8") == tmp_path / "cache" / f"{key}-go1.26.8" / "bin"


def _fake_bins(folder: Path, etcd_script: str) -> Path:
    folder.mkdir()
    for name in COMPONENTS:
        (folder / name).write_text("#!/bin/sh\nsleep 30\n")
        (folder / name).chmod(0o755)
    (folder / "etcd").write_text(etcd_script)
    return folder


def test_a_component_that_exits_is_named_with_its_log(tmp_path: Path) -> None:
    bins = _fake_bins(
        tmp_path / "bin", "#!/bin/sh\necho 'etcd: cannot listen: address in use' >&2\nexit 3\n"
    )
    cp = ControlPlane(tmp_path / "work", binaries=bins)
    started = time.monotonic()
    with pytest.raises(HarnessError) as e, cp:
        pass
    message = str(e.value)
    assert "etcd exited while starting" in message
    assert "address in use" in message
    assert str(tmp_path / "work" / "logs" / "etcd.log") in message
    assert time.monotonic() - started < 10
    assert cp.procs == {}  # everything started is stopped


def test_a_component_that_never_gets_ready_times_out_with_its_log(tmp_path: Path) -> None:
    bins = _fake_bins(
        tmp_path / "bin", "#!/bin/sh\necho 'etcd: waiting for a peer'\nexec sleep 30\n"
    )
    cp = ControlPlane(tmp_path / "work", binaries=bins, start_timeout=1.0)
    with pytest.raises(HarnessError) as e, cp:
        pass
    message = str(e.value)
    assert "not reached within 1s: etcd's /health" in message
    assert "waiting for a peer" in message
    assert cp.procs == {}
