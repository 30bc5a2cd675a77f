"""The configuration files of the real node (:mod:`rotorctl.realnode`), pure: containerd's
``config.toml``, the CNI bridge network, the kubelet's ``KubeletConfiguration`` and
kube-proxy's ``KubeProxyConfiguration``. Everything lives under one work folder; nothing here
touches the machine.

Choices this VM needs (cgroup v1, no systemd, shared with other users), each found by running
the components: the cgroupfs driver in both containerd (``SystemdCgroup = false``) and the
kubelet; no swap check; the pod network a bridge of its own whose gateway address is the
node's address, so pods reach the API server (advertised there) and traffic stays on this
machine; the sandbox image a locally built pause image, pinned so the kubelet's image garbage
collection never removes it; image garbage collection and disk eviction off, since nothing can
be pulled back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "NodeLayout",
    "cni_conflist",
    "containerd_toml",
    "kube_proxy_yaml",
    "kubelet_yaml",
]

NODE_NAME = "rotor-node"
POD_CIDR = "10.77.0.0/24"
GATEWAY = "10.77.0.1"  # on the bridge: the node's InternalIP and the API server's address
BRIDGE = "rotor-cni0"
PAUSE_IMAGE = "localhost/rotor-pause:1"
CNI_BIN = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


@dataclass(frozen=True)
class NodeLayout:
    """Where each component of the node keeps its files, under ``root``."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a TOML basic string is a JSON string for these paths


def containerd_toml(layout: NodeLayout, runc: str, cni_bin: Path = CNI_BIN) -> str:
    """containerd 2.x (config version 3): CRI with runc under cgroupfs, the CNI folders, the
    pinned sandbox image; NRI off (its socket is machine-wide)."""
    cri_images = "plugins.'io.containerd.cri.v1.images'"
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    runc_table = f"{cri_runtime}.containerd.runtimes.runc"
    return f"""version = 3
root = {_toml_str(layout.containerd_root)}
state = {_toml_str(layout.containerd_state)}
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = {_toml_str(layout.containerd_socket)}

[{cri_images}]
  snapshotter = "overlayfs"

[{cri_images}.pinned_images]
  sandbox = {_toml_str(PAUSE_IMAGE)}

[{cri_runtime}]
  # the VM's root lacks CAP_SYS_RESOURCE: the kubelet's -998 for the sandbox would fail in
  # runc ("can't get final child's PID from pipe"); clamp to containerd's own score instead
  restrict_oom_score_adj = true

[{cri_runtime}.cni]
  bin_dirs = [{_toml_str(cni_bin)}]
  conf_dir = {_toml_str(layout.cni_conf_dir)}
  max_conf_num = 1

[{cri_runtime}.containerd]
  default_runtime_name = "runc"

[{runc_table}]
  runtime_type = "io.containerd.runc.v2"

[{runc_table}.options]
  SystemdCgroup = false
  BinaryName = {_toml_str(runc)}
"""


def cni_conflist(layout: NodeLayout) -> str:
    """One bridge network: the gateway on the bridge, no masquerade (nothing leaves the
    machine), addresses from host-local kept under the work folder."""
    doc = {
        "cniVersion": "1.0.0",
        "name": "rotor",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_data_dir),
                },
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def kubelet_yaml(layout: NodeLayout, ca_file: Path, port: int, healthz_port: int) -> str:
    """The kubelet 1.34: cgroupfs, no swap check, webhook authn/authz of the API server's
    requests (exec, logs), image GC and disk eviction off (no registry to pull back from)."""
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "podCIDR": POD_CIDR,
        "resolvConf": "/etc/resolv.conf",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%",
                         "imagefs.available": "0%"},
        "localStorageCapacityIsolation": False,
        "serializeImagePulls": False,
        "registerNode": True,
        "shutdownGracePeriod": "0s",
        "staticPodPath": "",
    }  # fmt: skip
    return yaml.safe_dump(doc, sort_keys=False)


def kube_proxy_yaml(kubeconfig: Path, healthz_port: int, metrics_port: int) -> str:
    """kube-proxy in iptables mode for Services' ClusterIPs; conntrack sysctls left alone
    (``maxPerCore: 0``; they are not writable on every VM)."""
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"masqueradeAll": False},
    }
    return yaml.safe_dump(doc, sort_keys=False)
