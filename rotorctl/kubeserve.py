"""``rotor kube``: the strict Kubernetes API emulator on its own (docs/demo.md, "kubectl").

It serves HTTPS on 127.0.0.1 with Rotor's CRDs, authentication and RBAC enforced (see
:mod:`kubeemu.emulator`), and writes an admin kubeconfig (mode 0600) that a real ``kubectl``
uses: ``kubectl --kubeconfig FILE get rotatingsecrets -A``, ``apply --validate=false``,
``patch``, ``delete``, ``auth can-i``. Ctrl-C or SIGTERM (or ``--duration``) stops it."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType


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
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop by itself after this many seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from kubeemu.emulator import EmulatorThread  # kmock: the demo extra, not `rotor acl`'s

    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
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
