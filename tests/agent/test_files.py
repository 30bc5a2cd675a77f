"""The atomic file writer: layout, modes, previous files, and a reader process that never sees
a torn, empty or mixed set while the writer rotates thousands of times."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.files import DATA, METADATA, AtomicWriter, files_for
from rotor.layout import SecretState
from tests.agent.torn_reader import expected


def visible(folder: Path) -> dict[str, str]:
    return {
        e: os.readlink(folder / e) for e in sorted(os.listdir(folder)) if not e.startswith("..")
    }


def test_layout_links_mode_and_old_folders_removed(tmp_path: Path) -> None:
    w = AtomicWriter(tmp_path / "db", mode=0o440)
    w.write({"password": b"one", "key.pub": b"pub"})
    first = w.current_payload()
    assert first is not None
    assert first.startswith("..20")
    assert visible(tmp_path / "db") == {"key.pub": "..data/key.pub", "password": "..data/password"}
    assert (tmp_path / "db" / "password").read_bytes() == b"one"
    assert stat.S_IMODE(os.stat(tmp_path / "db" / "password").st_mode) == 0o440

    w.write({"password": b"two", "password.previous": b"one"})
    assert w.current_payload() != first
    assert not (tmp_path / "db" / first).exists()
    assert visible(tmp_path / "db") == {
        "password": "..data/password",
        "password.previous": "..data/password.previous",
    }
    assert w.read() == {"password": b"two", "password.previous": b"one"}
    payloads = [e for e in os.listdir(tmp_path / "db") if e.startswith("..") and e != DATA]
    assert payloads == [w.current_payload()]


@pytest.mark.parametrize("mode", [0o400, 0o440, 0o644])
def test_mode_is_applied_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o077)
    try:
        AtomicWriter(tmp_path, mode=mode).write({"k": b"v"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == mode


@pytest.mark.parametrize("name", ["", "a/b", "..data", "..", "."])
def test_rejects_names_that_escape_or_clash(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="cannot be a file name"):
        AtomicWriter(tmp_path).write({name: b"x"})
    assert os.listdir(tmp_path) == []


def test_remove_leaves_an_empty_folder(tmp_path: Path) -> None:
    w = AtomicWriter(tmp_path / "s")
    w.write({"a": b"1"})
    w.remove()
    assert os.listdir(tmp_path / "s") == []
    assert w.read() == {}


def test_files_for_adds_previous_suffix() -> None:
    state = SecretState(
        version=2, current={"k": b"new", "k.pub": b"P2"}, previous={"k": b"old", "k.pub": b"P1"}
    )
    out = files_for(state)
    del out[METADATA]
    assert out == {
        "k": b"new",
        "k.pub": b"P2",
        "k.previous": b"old",
        "k.pub.previous": b"P1",
    }


def test_every_payload_holds_the_metadata_of_its_own_version(tmp_path: Path) -> None:
    """``.rotor.json`` sits in the same payload as the values: read through ``..data`` it
    always names the version of the files beside it, and when to re-read."""
    w = AtomicWriter(tmp_path / "s")
    for version in (1, 2):
        state = SecretState(
            version=version,
            current={"password": f"v{version}".encode()},
            previous={"password": b"v1"} if version == 2 else {},
            rotated_at=1_700_000_000.0 + version,
            previous_expires=1_700_000_600.0 if version == 2 else None,
        )
        w.write(files_for(state, next_rotation=1_700_003_600.0))
        payload = tmp_path / "s" / os.readlink(tmp_path / "s" / DATA)
        meta = json.loads((payload / METADATA).read_text())
        assert (payload / "password").read_bytes() == f"v{version}".encode()
        assert meta["version"] == version
        assert meta["rotatedAt"] == f"2023-11-14T22:13:2{version}Z"
        assert meta["nextRotation"] == "2023-11-14T23:13:20Z"
    assert meta["previousVersion"] == 1
    assert meta["previousExpires"] == "2023-11-14T22:23:20Z"
    assert meta["files"] == ["password", "password.previous"]
    # the visible name is a link through ..data like every file, mode 0440
    assert os.readlink(tmp_path / "s" / METADATA) == f"{DATA}/{METADATA}"
    assert stat.S_IMODE(os.stat(tmp_path / "s" / METADATA).st_mode) == 0o440
    first = SecretState(version=1, current={"password": b"x"})
    assert json.loads(files_for(first)[METADATA]) == {
        "version": 1, "rotatedAt": None, "nextRotation": None, "previousVersion": None,
        "previousExpires": None, "files": ["password"],
    }  # fmt: skip


@pytest.mark.slow  # a reader process against 2000 rotations
def test_reader_process_never_sees_a_torn_empty_or_mixed_read(tmp_path: Path) -> None:
    folder, stop = tmp_path / "s", tmp_path / "stop"
    w = AtomicWriter(folder)

    def files(v: int) -> dict[str, bytes]:
        out = {n: expected(n, v) for n in ("a", "b", "c")}
        if v % 2:
            out["a.previous"] = expected("a", v - 1)
        return out

    w.write(files(1))
    reader = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("torn_reader.py")), str(folder), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        for v in range(2, 2002):
            w.write(files(v))
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    finally:
        reader.kill()
    result = json.loads(out)
    assert result["bad"] == []
    # The reader really ran during the rotations: it read many sets, of several versions.
    assert result["sets"] > 100
    assert result["singles"] > 100
    assert result["versions"] > 1
    assert w.read() == files(2001)
