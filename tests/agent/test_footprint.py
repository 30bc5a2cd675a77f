"""What the resident agent loads: no aiohttp anywhere, no cryptography even after making key
pairs, no YAML for a JSON config, no hvac without external stores (the memory figures are in
bench/agent_footprint.py and docs/benchmarks.md; this checks the causes, not a timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("aiohttp", "cryptography", "yaml", "hvac", "requests", "argparse")

PROBE = """
import json, sys
import agent.cli
code = agent.cli.main(sys.argv[1:])
import agent.server, agent.incluster, agent.kube, agent.hooks  # every in-cluster part, too
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(HEAVY)))
print(json.dumps({"code": code, "loaded": heavy}))
"""


def _loaded(args: list[str], cwd: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.replace("HEAVY", repr(json.dumps(HEAVY))), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith(("ROTOR_", "KUBERNETES_"))},
    )
    doc: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def test_standalone_with_key_pairs_keeps_cryptography_and_aiohttp_out(tmp_path: Path) -> None:
    config = tmp_path / "secrets.json"
    keys = [
        {"name": "pw", "generator": {"type": "password"}},
        {"name": "ed", "generator": {"type": "ed25519"}},
        {"name": "tls", "generator": {"type": "rsa", "bits": 2048}},
    ]
    config.write_text(json.dumps([{"name": "app", "spec": {"keys": keys}}]))
    out = tmp_path / "out"
    doc = _loaded(["standalone", "--config", str(config), "--dir", str(out), "--once"], tmp_path)
    assert doc["code"] == 0
    assert sorted(p.name for p in (out / "app").iterdir() if not p.name.startswith(".")) == [
        "ed",
        "ed.pub",
        "pw",
        "tls",
        "tls.pub",
    ]
    assert (out / "app" / "ed").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert doc["loaded"] == ["argparse"]  # flags were parsed; nothing else heavy


def test_in_cluster_mode_loads_no_argparse(tmp_path: Path) -> None:
    # No cluster here: the agent stops at its first check, after choosing in-cluster mode.
    doc = _loaded([], tmp_path)
    assert doc["code"] == 2  # not in a pod: one line naming KUBERNETES_SERVICE_HOST
    assert doc["loaded"] == []


WRITER_ONLY = (
    "agent.writer",
    "agent.engine",
    "agent.generators",
    "agent.keygen",
    "agent.kubestore",
    "agent.store",
    "agent.targets",
    "rotor.spec",
    "rotor.external",
)

AGENT_OF = """
import json, sys
from prometheus_client import CollectorRegistry
from agent.config import InClusterConfig
from agent.incluster import InClusterAgent
from agent.kube import KubeClient
config = InClusterConfig.from_env(json.loads(sys.argv[1]))
agent = InClusterAgent(config.env, config.settings, KubeClient(config.kube), CollectorRegistry())
print(json.dumps({"rw": sorted(agent.rw), "ro": sorted(agent.ro), "loaded": sorted(sys.modules)}))
"""


def _agent_of(mode: str, tmp_path: Path) -> dict[str, list[str]]:
    env = {
        "ROTOR_MODE": mode,
        "ROTOR_SECRETS": "shop/db",
        "ROTOR_POD_NAME": "web-0",
        "ROTOR_POD_NAMESPACE": "shop" if mode == "rw" else "web",
        "ROTOR_MOUNT_PATH": str(tmp_path),
        "ROTOR_KUBE_URL": "http://127.0.0.1:1",
    }
    out = subprocess.run(
        [sys.executable, "-c", AGENT_OF, json.dumps(env)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=120,
    )
    doc: dict[str, list[str]] = json.loads(out.stdout)
    return doc


def test_a_reader_loads_none_of_the_writers_modules(tmp_path: Path) -> None:
    # Every consumer pod runs an RO agent: the engine, the generators, the spec types and the
    # targets cost it about 0.7 MiB (bench/agent_kube_client.py) and it never rotates.
    reader = _agent_of("ro", tmp_path)
    assert reader["ro"] == ["db"]
    assert [m for m in WRITER_ONLY if m in reader["loaded"]] == []
    writer = _agent_of("rw", tmp_path)  # the same probe sees them where they are used
    assert writer["rw"] == ["db"]
    assert [m for m in WRITER_ONLY if m in writer["loaded"]] == list(WRITER_ONLY)
