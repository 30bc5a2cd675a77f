"""A real node for the real control plane (:mod:`rotorctl.realkube`): containerd 2.x with runc
and the CNI bridge plugin, the kubelet 1.34 and kube-proxy (iptables), all from
``tools/kube/build.sh`` except runc and the CNI plugins (Debian), running pods of images
imported from podman (no registry is reachable: ``imagePullPolicy: IfNotPresent``).

Root only: it creates the bridge ``rotor-cni0`` (10.77.0.1, the node's address), sets
``ip_forward`` and ``bridge-nf-call-iptables``, and adds one iptables chain that drops pod
traffic to anything outside the pod network (so nothing leaves the machine) and the API
server's port from outside interfaces. :meth:`Node.stop` removes the pods' containers, the
chain, kube-proxy's rules and the bridge. The configuration files: :mod:`rotorctl.nodeconfig`.

Use::

    with NodeControlPlane(work / "cp") as cp, Node(cp, work / "node") as node:
        node.import_images(["localhost/rotor-agent:0.1.0"])
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rotorctl import kubepki, nodeconfig
from rotorctl.nodeconfig import BRIDGE, GATEWAY, NODE_NAME, PAUSE_IMAGE, POD_CIDR, NodeLayout
from rotorctl.processes import STOP_TIMEOUT, HarnessError, Proc, Started, free_port, wait_for
from rotorctl.realkube import ControlPlane, bin_dir

__all__ = ["NODE_BINARIES", "Node", "NodeControlPlane", "NodeUnavailable", "node_missing"]

NODE_BINARIES = ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr")
DEBIAN = {"runc": "runc", "iptables": "iptables", "conntrack": "conntrack", "podman": "podman"}
PAUSE_SOURCE = Path(__file__).resolve().parents[1] / "tools" / "node" / "pause.c"
CHAIN = "ROTOR-NODE"
READY_TIMEOUT = 180.0
VERSION = importlib.metadata.version("kube-rotor")


class NodeUnavailable(HarnessError):
    """This machine cannot run the node (the message says what is missing and how to fix it)."""


def node_missing() -> str | None:
    """Why the node cannot run here (root, Debian tools, the CNI plugins, gcc), or None."""
    if os.geteuid() != 0:
        return "the real node needs root (bridges, iptables, mounts)"
    missing = [pkg for tool, pkg in DEBIAN.items() if shutil.which(tool) is None]
    if not (nodeconfig.CNI_BIN / "bridge").exists():
        missing.append("containernetworking-plugins")
    if shutil.which("gcc") is None:
        missing.append("gcc libc6-dev")
    if missing:
        return f"missing Debian packages: apt-get install {' '.join(missing)}"
    return None


def _run(argv: Sequence[str], *, stdin: Any = None, check: bool = True) -> str:
    out = subprocess.run(
        list(argv), stdin=stdin, capture_output=True, text=True, timeout=600, check=False
    )
    if check and out.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


class NodeControlPlane(ControlPlane):
    """The control plane as a node needs it: the API server advertised at :data:`GATEWAY`
    (the ``kubernetes`` Service's endpoint, which pods reach through kube-proxy) and so
    listening on every address; :class:`Node` drops its port on outside interfaces."""

    def _apiserver_args(self) -> list[str]:
        drop = ("--bind-address=", "--advertise-address=")
        args = [a for a in super()._apiserver_args() if not a.startswith(drop)]
        return [
            *args,
            "--bind-address=0.0.0.0",
            f"--advertise-address={GATEWAY}",
            "--kubelet-preferred-address-types=InternalIP",  # no DNS name for the node here
        ]


class Node(Started):
    """containerd, the kubelet and kube-proxy for ``cp`` (a started
    :class:`rotorctl.realkube.ControlPlane` advertising :data:`GATEWAY`), files in
    ``workdir``. :meth:`start` returns once the node is Ready."""

    def __init__(
        self,
        cp: Any,
        workdir: Path,
        *,
        binaries: Path | None = None,
        progress: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.cp = cp  # rotorctl.realkube.ControlPlane
        self.layout = NodeLayout(workdir.resolve())
        self.binaries = binaries
        self.progress = progress or (lambda _msg: None)
        self.cancel = cancel or threading.Event()
        self.procs: dict[str, Proc] = {}
        self.name = NODE_NAME
        self.pod_logs_before: set[Path] | None = None  # set by start()

    def log(self, name: str) -> Path:
        return self.layout.root / "logs" / f"{name}.log"

    # -- start ---------------------------------------------------------------------------
    def start(self) -> Node:
        if why := node_missing():
            raise NodeUnavailable(why)
        self.binaries = self.binaries or bin_dir(NODE_BINARIES)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.pod_logs_before = set(_pod_logs())
        self.progress(f"node network: bridge {BRIDGE} {GATEWAY}, pods {POD_CIDR}")
        self._network()
        self.progress("starting containerd (runc, cgroupfs, CNI bridge)")
        self._start_containerd()
        self.progress(f"building and importing the pause image {PAUSE_IMAGE}")
        self._pause_image()
        self.progress("starting the kubelet")
        self._start_kubelet()
        self.progress("starting kube-proxy (iptables)")
        self._start_kube_proxy()
        self.progress(f"waiting for node {NODE_NAME} to be Ready")
        self.wait_ready()
        return self

    def _network(self) -> None:
        for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
            Path("/proc/sys", key).write_text("1\n")
        if not Path("/sys/class/net", BRIDGE).exists():
            _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        self._chain_remove()
        port = str(self.cp.port)
        rules = [
            # replies (the API server calling a webhook through its Service gets its answer)
            ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
            # the API server listens on every address: only loopback and the pods reach it
            ["-p", "tcp", "--dport", port, "-i", "lo", "-j", "RETURN"],
            ["-p", "tcp", "--dport", port, "-i", BRIDGE, "-j", "RETURN"],
            ["-p", "tcp", "--dport", port, "-j", "DROP"],
            # pods talk to pods, Services (DNATed before this) and the node only
            ["-d", POD_CIDR, "-j", "RETURN"],
            ["-s", POD_CIDR, "-j", "DROP"],
        ]
        _run(["iptables", "-N", CHAIN])
        for rule in rules:
            _run(["iptables", "-A", CHAIN, *rule])
        _run(["iptables", "-I", "FORWARD", "1", "-j", CHAIN])
        _run(["iptables", "-I", "INPUT", "1", "-j", CHAIN])

    def _chain_remove(self) -> None:
        for parent in ("FORWARD", "INPUT"):
            while _ok(["iptables", "-C", parent, "-j", CHAIN]):
                _run(["iptables", "-D", parent, "-j", CHAIN])
        if _ok(["iptables", "-L", CHAIN, "-n"]):
            _run(["iptables", "-F", CHAIN])
            _run(["iptables", "-X", CHAIN])

    def _proc(self, name: str, args: list[str]) -> Proc:
        assert self.binaries is not None
        env = {
            "PATH": f"{self.binaries}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.layout.root),
        }
        proc = Proc(name, [str(self.binaries / name), *args], env, self.log(name)).start()
        self.procs[name] = proc
        return proc

    def _wait(self, name: str, check: Callable[[], bool], what: str, timeout: float) -> None:
        proc = self.procs[name]

        def ready() -> bool:
            if not proc.running:
                raise HarnessError(f"{name} exited (log: {proc.log}):\n{proc.tail(3000)}")
            return check()

        try:
            wait_for(ready, what, timeout, self.cancel)
        except HarnessError as e:
            if proc.running:
                raise HarnessError(f"{e} (log: {proc.log}):\n{proc.tail(3000)}") from None
            raise

    def _start_containerd(self) -> None:
        lay = self.layout
        for d in (lay.containerd_root, lay.containerd_state, lay.cni_conf_dir, lay.cni_data_dir):
            d.mkdir(parents=True, exist_ok=True)
        runc = shutil.which("runc") or "runc"
        lay.containerd_config.write_text(nodeconfig.containerd_toml(lay, runc))
        (lay.cni_conf_dir / "10-rotor.conflist").write_text(nodeconfig.cni_conflist(lay))
        self._proc("containerd", ["--config", str(lay.containerd_config), "--log-level", "info"])
        self._wait(
            "containerd",
            lambda: _run(self._ctr("version"), check=False).count("Version") >= 2,
            f"containerd answering on {lay.containerd_socket}",
            60,
        )

    def _ctr(self, *args: str) -> list[str]:
        assert self.binaries is not None
        sock = str(self.layout.containerd_socket)
        return [str(self.binaries / "ctr"), "--address", sock, "--namespace", "k8s.io", *args]

    def _pause_image(self) -> None:
        """The sandbox image: tools/node/pause.c, static, alone in an image (FROM scratch)."""
        if PAUSE_IMAGE in self.images():
            return
        digest = hashlib.sha256(PAUSE_SOURCE.read_bytes()).hexdigest()[:12]
        with tempfile.TemporaryDirectory() as tmp:
            binary = Path(tmp) / "pause"
            _run(["gcc", "-Os", "-static", "-s", "-o", str(binary), str(PAUSE_SOURCE)])
            tar = Path(tmp) / "rootfs.tar"
            _run(["tar", "-C", tmp, "--owner=0", "--group=0", "-cf", str(tar), "pause"])
            _run(["podman", "import", "--change", 'ENTRYPOINT ["/pause"]',
                  "--message", f"rotor pause {digest}", str(tar), PAUSE_IMAGE])  # fmt: skip
        self.import_images([PAUSE_IMAGE])

    def images(self) -> dict[str, int]:
        """The images containerd holds in ``k8s.io``: name -> size in bytes (as ctr lists it,
        the compressed content of the image)."""
        out = _run(self._ctr("images", "list"))
        sizes: dict[str, int] = {}
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 6 and not cols[0].startswith("sha256:"):
                sizes[cols[0]] = _bytes(cols[3], cols[4])
        return sizes

    def import_rotor_images(self) -> list[str]:
        """Rotor's two images at this checkout's version, those podman holds; their names."""
        names = [f"localhost/rotor-{n}:{VERSION}" for n in ("controller", "agent")]
        present = [n for n in names if _ok(["podman", "image", "exists", n])]
        self.import_images(present)
        return present

    def import_images(self, names: Iterable[str]) -> None:
        """``podman save NAME | ctr -n k8s.io images import -`` for each image."""
        for name in names:
            save = subprocess.Popen(["podman", "save", name], stdout=subprocess.PIPE)
            try:
                _run(self._ctr("images", "import", "-"), stdin=save.stdout)
            finally:
                if save.stdout is not None:
                    save.stdout.close()
                if save.wait(600) != 0:
                    raise HarnessError(f"podman save {name} failed (is the image built?)")

    def _start_kubelet(self) -> None:
        lay = self.layout
        creds = self.cp.client("kubelet", f"system:node:{NODE_NAME}", ["system:nodes"])
        kubeconfig = kubepki.kubeconfig(
            lay.root / "kubelet.kubeconfig", self.cp.url, self.cp.ca_file,
            f"system:node:{NODE_NAME}", client=creds,
        )  # fmt: skip
        healthz = free_port()
        lay.kubelet_config.write_text(
            nodeconfig.kubelet_yaml(lay, self.cp.ca_file, free_port(), healthz)
        )
        self._proc(
            "kubelet",
            [
                f"--config={lay.kubelet_config}",
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                f"--root-dir={lay.kubelet_dir}",
                f"--cert-dir={lay.kubelet_dir / 'pki'}",
                "--v=2",
            ],
        )
        self._wait(
            "kubelet",
            lambda: _http_ok(f"http://127.0.0.1:{healthz}/healthz"),
            "the kubelet's /healthz",
            90,
        )

    def _start_kube_proxy(self) -> None:
        lay = self.layout
        creds = self.cp.client("kube-proxy", "system:kube-proxy")
        kubeconfig = kubepki.kubeconfig(
            lay.root / "kube-proxy.kubeconfig", self.cp.url, self.cp.ca_file,
            "system:kube-proxy", client=creds,
        )  # fmt: skip
        healthz = free_port()
        lay.kube_proxy_config.write_text(
            nodeconfig.kube_proxy_yaml(kubeconfig, healthz, free_port())
        )
        self._proc("kube-proxy", [f"--config={lay.kube_proxy_config}", "--v=2"])
        self._wait(
            "kube-proxy",
            lambda: _http_ok(f"http://127.0.0.1:{healthz}/healthz"),
            "kube-proxy's /healthz",
            90,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """The Node object reports Ready=True (the runtime and the network are up)."""
        api = self.cp.api()

        def ready() -> bool:
            try:
                node = api.get("v1", "nodes", None, NODE_NAME)
            except (HarnessError, OSError):
                return False
            conds = ((node or {}).get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

        self._wait("kubelet", ready, f"node {NODE_NAME} Ready", timeout)

    # -- stop ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything this node started and undo its changes to the machine: the pods'
        containers and shims, kube-proxy's rules, the chain, the bridge, the kubelet's mounts."""
        for name in ("kube-proxy", "kubelet"):
            if name in self.procs:
                self.procs[name].stop(STOP_TIMEOUT)
        if "containerd" in self.procs and self.procs["containerd"].running:
            self._remove_containers()
        if "containerd" in self.procs:
            self.procs["containerd"].stop(STOP_TIMEOUT)
        self._kill_shims()
        if self.binaries is not None and (self.binaries / "kube-proxy").exists():
            _run([str(self.binaries / "kube-proxy"), "--cleanup"], check=False)
        self._chain_remove()
        for tool in ("iptables", "ip6tables"):  # the kubelet's canary chains
            for table in ("nat", "mangle", "filter"):
                _run([tool, "-t", table, "-X", "KUBE-KUBELET-CANARY"], check=False)
        _run(["ip", "link", "del", BRIDGE], check=False)
        self._unmount(self.layout.root)
        self.procs.clear()

    def _remove_containers(self) -> None:
        tasks = _run(self._ctr("tasks", "list", "--quiet"), check=False).split()
        for task in tasks:
            _run(self._ctr("tasks", "kill", "--signal", "SIGKILL", task), check=False)
        for task in tasks:
            _run(self._ctr("tasks", "delete", "--force", task), check=False)
        for c in _run(self._ctr("containers", "list", "--quiet"), check=False).split():
            _run(self._ctr("containers", "delete", c), check=False)
        prefix = GATEWAY.rsplit(".", 1)[0] + "."
        for ns in Path("/var/run/netns").glob("cni-*"):
            # containerd's pod network namespaces (the tasks were killed, not stopped through
            # the CRI, so nothing removed them): ours hold an address of the pod network
            addrs = _run(["ip", "netns", "exec", ns.name, "ip", "-4", "-o", "addr"], check=False)
            if f" {prefix}" in addrs:
                _run(["ip", "netns", "delete", ns.name], check=False)
        before = set(_pod_logs()) if self.pod_logs_before is None else self.pod_logs_before
        for logs in set(_pod_logs()) - before:
            # the kubelet's pod logs (a fixed folder): those of the pods this node ran
            shutil.rmtree(logs, ignore_errors=True)

    def _kill_shims(self) -> None:
        """The runc shims run in sessions of their own; each names our socket on its
        command line."""
        sock = str(self.layout.containerd_socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock in argv:
                    os.kill(int(proc.name), signal.SIGKILL)

    @staticmethod
    def _unmount(root: Path) -> None:
        """Unmount everything under ``root`` (volumes, rootfs, sandbox shm), deepest first."""
        prefix = str(root) + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            _run(["umount", "-l", target], check=False)


def _pod_logs() -> list[Path]:
    return list(Path("/var/log/pods").glob("*"))


def _ok(argv: Sequence[str]) -> bool:
    return subprocess.run(list(argv), capture_output=True, check=False).returncode == 0


def _bytes(number: str, unit: str) -> int:
    scale = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    return int(float(number) * scale.get(unit, 1))


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False
