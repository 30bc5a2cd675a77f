"""Standalone folders with symlinks planted in them: nothing is written through a link, and a
foreign visible link is replaced by the agent's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.files import AtomicWriter
from agent.store import FileStore
from rotor.layout import SecretState

AGENT = [sys.executable, "-m", "agent", "standalone"]


@pytest.mark.parametrize("planted", ["db", ".rotor"])
def test_a_symlinked_folder_is_refused_and_nothing_is_written_through_it(tmp_path, planted):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / planted).symlink_to("../elsewhere")
    r = subprocess.run(
        [*AGENT, "--name", "db", "--key", "password", "--dir", "out", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert f"out/{planted} is a symlink (to ../elsewhere)" in r.stderr
    assert f"remove out/{planted}" in r.stderr
    assert "Traceback" not in r.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_foreign_visible_link_is_replaced(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"not the secret")
    target = tmp_path / "db"
    target.mkdir()
    (target / "password").symlink_to(foreign)
    AtomicWriter(target).write({"password": b"the-real-value"})
    assert os.readlink(target / "password") == "..data/password"
    assert (target / "password").read_bytes() == b"the-real-value"
    assert foreign.read_bytes() == b"not the secret"


async def test_a_planted_temporary_state_file_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    state = tmp_path / "state"
    state.mkdir()
    (state / "db.json.tmp").symlink_to(victim)
    store = FileStore(state / "db.json")
    await store.write(SecretState(version=1, current={"password": b"v" * 16}), "")
    assert victim.read_bytes() == b"precious"
    assert (await store.read()).state.version == 1
