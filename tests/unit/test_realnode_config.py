"""The real node's configuration (rotorctl/nodeconfig.py) as containerd, the CNI plugins and the
kubelet read it, and `rotor kube --node`'s refusals; the node itself runs in tests/e2e."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from rotorctl import cli, nodeconfig
from rotorctl.nodeconfig import NodeLayout


def test_containerd_runs_runc_under_cgroupfs_with_the_pinned_local_pause_image(
    tmp_path: Path,
) -> None:
    doc = tomllib.loads(nodeconfig.containerd_toml(NodeLayout(tmp_path), "/usr/sbin/runc"))
    assert doc["version"] == 3
    plugins = doc["plugins"]
    runc = plugins["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"SystemdCgroup": False, "BinaryName": "/usr/sbin/runc"}
    images = plugins["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "localhost/rotor-pause:1"
    cni = plugins["io.containerd.cri.v1.runtime"]["cni"]
    assert cni["conf_dir"] == str(tmp_path / "cni" / "net.d")
    assert doc["grpc"]["address"].startswith(str(tmp_path))  # nothing machine-wide


def test_pod_network_never_masquerades_out_of_the_machine(tmp_path: Path) -> None:
    (bridge,) = json.loads(nodeconfig.cni_conflist(NodeLayout(tmp_path)))["plugins"]
    assert bridge["type"] == "bridge"
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}]]


def test_kubelet_uses_cgroupfs_keeps_imported_images_and_authenticates_the_api_server(
    tmp_path: Path,
) -> None:
    doc = yaml.safe_load(nodeconfig.kubelet_yaml(NodeLayout(tmp_path), tmp_path / "ca", 1, 2))
    assert doc["cgroupDriver"] == "cgroupfs"
    assert doc["failSwapOn"] is False
    assert doc["imageGCHighThresholdPercent"] == 100  # nothing could be pulled back
    assert doc["authentication"]["anonymous"] == {"enabled": False}
    assert doc["readOnlyPort"] == 0


def test_node_without_real_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["kube", "--node", "--kubeconfig", str(tmp_path / "kc")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "rotor kube: --node needs --real (a node joins a real control plane)"
