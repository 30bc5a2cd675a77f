"""The ``rotor`` command.

::

    rotor acl list|approve|deny|revoke ...   the access-control list (controller.cli, unchanged)
    rotor demo [--rotate-every 20s] [--duration 5m] [--dir DIR] [--real]
                                              the whole system on this machine (docs/demo.md)
    rotor kube [--port N] [--kubeconfig FILE]  the Kubernetes API emulator alone, for kubectl
    rotor kube --real [--kubeconfig FILE]      a real control plane alone (make kube-bin)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from controller import cli as acl_cli
from rotor.durations import duration_arg
from rotor.errors import InvalidSpec, RotorError
from rotor.settings.controller import ControllerSettings

DEFAULT_DEMO_DIR = "rotor-demo-cluster"  # rotor-agent standalone --demo keeps ./rotor-demo
DEMO_MIN_INTERVAL = 2.0
"""The demo's shortest rotation interval: each rotation must reach the reader before the next."""


def build_parser(settings: ControllerSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rotor", description="Rotor: generate, rotate and deliver secrets to Kubernetes."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    acl_cli.add_acl_commands(sub, settings)  # `rotor acl ...` exactly as controller.cli has it
    demo = sub.add_parser(
        "demo",
        help="run the whole system on this machine (emulated Kubernetes API)",
        description="Start a Kubernetes API emulator (kmock), the webhook, the controller, "
        "OpenBao (when `bao` is installed) and two workloads whose injected agents run as local "
        "processes; show rotations as they reach the readers. Ctrl-C stops everything.",
    )
    demo.add_argument(
        "--rotate-every",
        type=duration_arg("--rotate-every", minimum=DEMO_MIN_INTERVAL),
        default=20.0,
        metavar="DURATION",
        help="rotation interval of the demo secret, e.g. 20s or 1m (default: 20s; at least 2s)",
    )
    demo.add_argument(
        "--duration",
        type=duration_arg("--duration"),
        default=0.0,
        metavar="DURATION",
        help="stop by itself after this long, e.g. 90s or 5m (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--dir",
        default=DEFAULT_DEMO_DIR,
        help="a folder of the demo's own for pods' files and logs; an earlier `rotor demo`'s "
        "folder is emptied, any other non-empty folder is refused (default: ./%(default)s)",
    )
    demo.add_argument(
        "--no-vault", action="store_true", help="do not start OpenBao even if it is installed"
    )
    demo.add_argument(
        "--real",
        action="store_true",
        help="run on a real control plane (etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler; `make kube-bin` builds them) instead of the emulator",
    )
    demo.set_defaults(handler=_demo)
    from rotorctl import kubeserve

    kubeserve.add_command(sub)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from rotorctl import demo

    return demo.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = ControllerSettings.from_env()
    except InvalidSpec as e:
        print(f"rotor: {e}", file=sys.stderr)
        return acl_cli.EXIT_USAGE
    args = build_parser(settings).parse_args(argv)
    acl_cli.quiet_urllib3()
    handler: acl_cli.Handler = args.handler
    try:
        return handler(args)
    except ModuleNotFoundError as e:  # an optional part (an extra) is not installed
        print(f"rotor: {acl_cli.missing_part(e, 'rotor ' + args.command)}", file=sys.stderr)
        return acl_cli.EXIT_FAILED
    except (acl_cli.UsageError, InvalidSpec) as e:
        print(f"rotor: {e}", file=sys.stderr)
        return acl_cli.EXIT_USAGE
    except RotorError as e:
        print(f"rotor: {e}", file=sys.stderr)
        return acl_cli.EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
