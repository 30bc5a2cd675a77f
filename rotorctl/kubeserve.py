"""``rotor kube``: the strict Kubernetes API emulator on its own (docs/demo.md, "kubectl");
``rotor kube --real``: a real control plane instead (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler; :mod:`rotorctl.realkube`; ``make kube-bin`` builds them).

The emulator serves HTTPS on 127.0.0.1 with Rotor's CRDs, authentication and RBAC enforced (see
:mod:`kubeemu.emulator`). Either writes an admin kubeconfig (mode 0600) that a real ``kubectl``
uses: ``kubectl --kubeconfig FILE get rotatingsecrets -A``, ``apply --validate=false``,
``patch``, ``delete``, ``auth can-i``. Ctrl-C or SIGTERM (or ``--duration``) stops it."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from rotor.durations import duration_arg


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "kube",
        help="serve the Kubernetes API emulator alone, with an admin kubeconfig for kubectl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: free)")
    p.add_argument(
        "--kubeconfig",
        default="rotor-kube.kubeconfig",
        help="where the admin kubeconfig is written (default: %(default)s)",
    )
    p.add_argument(
        "--duration",
        type=duration_arg("--duration"),
        default=0.0,
        metavar="DURATION",
        help="stop by itself after this long, e.g. 30s or 5m (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--real",
        action="store_true",
        help="serve a real control plane (etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler; built by `make kube-bin`) instead of the emulator",
    )
    p.add_argument(
        "--node",
        action="store_true",
        help="with --real: and a node (containerd, kubelet, kube-proxy; root) running pods of "
        "Rotor's images, imported from podman (`make images LOCAL_BASE=1`)",
    )
    p.add_argument(
        "--dir",
        default="",
        help="with --real: the folder for its data, certificates and logs (default: a "
        "temporary folder, removed at the end)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from kubeemu.emulator import EmulatorThread  # kmock: the demo extra, not `rotor acl`'s

    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.node and not args.real:
            print(
                "rotor kube: --node needs --real (a node joins a real control plane)",
                file=sys.stderr,
            )
            return 2
        if args.real:
            return _serve_real(args, stop)
        with EmulatorThread(secure=True, port=args.port or None) as emu:
            path = emu.write_kubeconfig(Path(args.kubeconfig).resolve())
            print(f"Kubernetes API emulator: {emu.url} (tokens and RBAC enforced)", flush=True)
            print(f"admin kubeconfig: {path}", flush=True)
            print(f"try: kubectl --kubeconfig {path} get rotatingsecrets -A", flush=True)
            stop.wait(args.duration if args.duration > 0 else None)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print("stopped", flush=True)
    return 0


@contextlib.contextmanager
def _folder(given: str) -> Iterator[Path]:
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        yield Path(given)
    else:
        with tempfile.TemporaryDirectory(prefix="rotor-kube-") as tmp:
            yield Path(tmp)


def _serve_real(args: argparse.Namespace, stop: threading.Event) -> int:
    from rotorctl.backends import RealBackend
    from rotorctl.processes import Cancelled, HarnessError
    from rotorctl.realkube import ControlPlane, bin_dir
    from rotorctl.realnode import (
        NODE_BINARIES,
        Node,
        NodeControlPlane,
        NodeUnavailable,
        node_missing,
    )

    try:
        binaries = bin_dir()  # before anything starts: without them, one line on building them
        if args.node:
            bin_dir(NODE_BINARIES)
            if why := node_missing():
                raise NodeUnavailable(f"the node cannot run here: {why}")
        with contextlib.ExitStack() as stack:
            work = stack.enter_context(_folder(args.dir))
            plane = NodeControlPlane if args.node else ControlPlane
            cp = stack.enter_context(plane(work, binaries=binaries, cancel=stop))
            RealBackend.install_crds_on(cp.api(), stop)  # Rotor's kinds, as the emulator has
            if args.node:
                node = stack.enter_context(Node(cp, work / "node", cancel=stop, progress=print))
                images = ", ".join(node.import_rotor_images()) or "none built"
                print(
                    f"node {node.name} Ready (logs in {work / 'node' / 'logs'}); images: {images}"
                )
            path = cp.write_kubeconfig(Path(args.kubeconfig).resolve())
            version = cp.version().get("gitVersion", "?")
            print(f"Kubernetes control plane {version}: {cp.url} (logs in {work / 'logs'})")
            print(f"admin kubeconfig: {path}", flush=True)
            print(f"try: kubectl --kubeconfig {path} version", flush=True)
            stop.wait(args.duration if args.duration > 0 else None)
    except Cancelled:
        pass
    except HarnessError as e:
        print(f"rotor kube: {e}", file=sys.stderr)
        return 1
    print("stopped", flush=True)
    return 0
