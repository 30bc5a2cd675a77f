"""The propagation probe (rotorctl.probe.PropagationProbe) that bench/propagation.py and the soak
(rotorctl.soak) count deliveries with: it must count a delivery whatever order it learns of the
commit and of the reader's new files in, start its clock when the emulator stores the commit,
and tell values that were never committed. Also the emulator's hooks it and the soak use."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.files import METADATA, AtomicWriter
from rotor.layout import SecretState, checksum
from rotorctl.backends import EmulatorBackend
from rotorctl.harness import Api, Pod, PropagationProbe, System, wait_for
from rotorctl.kubeemu import EmulatorThread

NS, NAME = "shop", "db"


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[System]:
    """A System with only the emulator (no webhook, controller or agents): the probe's part."""
    s = System(tmp_path / "sys")
    assert isinstance(s.backend, EmulatorBackend)
    s.backend.emulator = EmulatorThread().start()
    s.api = Api(s.backend.emulator.url)
    try:
        yield s
    finally:
        s.stop()


def committed(version: int, value: bytes) -> dict[str, object]:
    state = SecretState(version=version, current={"password": value})
    return {"data": state.secret_data(), "metadata": {"annotations": state.annotations()}}


def create_source(system: System) -> None:
    body = committed(1, b"first")
    body["metadata"] |= {"name": NAME, "namespace": NS}  # type: ignore[operator]
    system.api.create({"apiVersion": "v1", "kind": "Secret", **body})


def reader(tmp_path: Path) -> tuple[Pod, AtomicWriter]:
    pod = Pod("web", "web-1", {}, tmp_path / "web-1", mount=tmp_path / "web-1" / "files")
    return pod, AtomicWriter(pod.mount / NAME, 0o400)  # type: ignore[operator]


def payload(value: bytes, version: int) -> dict[str, bytes]:
    """What an agent writes: the value and the metadata file (which names the version)."""
    return {"password": value, METADATA: json.dumps({"version": version}).encode()}


def test_files_seen_before_the_commit_is_known_count_for_that_commit(
    bare: System, tmp_path: Path
) -> None:
    """The order bench/propagation.py once got wrong: the reader's files change before the
    probe learns of the commit. The delivery is the new version's."""
    create_source(bare)
    pod, files = reader(tmp_path)
    files.write(payload(b"first", 1))
    with PropagationProbe(bare, NS, NAME, [pod], resolution=0.005) as probe:
        wait_for(lambda: probe.last_version(pod.name) == 1, "the probe sees version 1", 5)
        files.write(payload(b"second", 2))
        wait_for(lambda: len(probe.held[pod.name]) == 2, "the new files seen", 5)
        bare.api.patch("v1", "secrets", NS, NAME, committed(2, b"second"))
        c = wait_for(lambda: probe.commits.get(2), "commit 2 recorded", 5)
        assert pod.name in c.seen, "the delivery seen before the commit counts for version 2"
        assert probe.last_version(pod.name) == 2
        # shown before its commit was stored: the checker flags it
        assert [p for p, _ in probe.never_committed()] == [pod.name]


def test_commit_clock_starts_at_the_store_and_uncommitted_values_are_flagged(
    bare: System, tmp_path: Path
) -> None:
    create_source(bare)
    pod, files = reader(tmp_path)
    files.write(payload(b"first", 1))
    with PropagationProbe(bare, NS, NAME, [pod], resolution=0.005) as probe:
        wait_for(lambda: probe.last_version(pod.name) == 1, "the probe sees version 1", 5)
        before = time.monotonic()
        bare.api.patch("v1", "secrets", NS, NAME, committed(2, b"second"))
        after = time.monotonic()
        c = probe.commits[2]  # recorded by the emulator before it answered the patch
        assert before <= c.at <= after
        assert c.checksum == checksum({"password": b"second"})
        files.write(payload(b"second", 2))
        wait_for(lambda: pod.name in c.seen, "reader counted for version 2", 5)
        assert probe.never_committed() == []
        (delay,) = probe.delays()
        assert delay > 0
        # a pending value must never reach a reader: if it did, the checker says so
        pending = base64.b64encode(b"third").decode()
        bare.api.patch("v1", "secrets", NS, NAME, {"data": {"password.pending": pending}})
        files.write(payload(b"third", 3))
        wait_for(lambda: probe.never_committed(), "the uncommitted value flagged", 5)
        assert probe.last_version(pod.name) is None


def test_drop_watches_closes_every_open_watch_stream(bare: System) -> None:
    """What the soak injects: the emulator closes each watch's connection; the client sees the
    stream end and must watch again."""
    assert bare.emulator is not None
    ended: list[str] = []

    def watch(ns: str) -> None:
        url = f"{bare.url}/api/v1/namespaces/{ns}/secrets?watch=true"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                for _ in r:
                    pass
        except OSError:
            pass
        ended.append(ns)

    threads = [threading.Thread(target=watch, args=(ns,), daemon=True) for ns in ("a", "b")]
    for t in threads:
        t.start()
    emu = bare.emulator
    wait_for(lambda: emu.call(lambda k8s: len(k8s._watches)) == 2, "two watches open", 5)
    assert emu.drop_watches() == 2
    for t in threads:
        t.join(5)
    assert sorted(ended) == ["a", "b"]
    assert emu.call(lambda k8s: len(k8s._watches)) == 0
