"""The ``rotor`` command: ``rotor acl list|approve|deny|revoke|retire`` for admins.

::

    rotor acl list                                   grants and requests (a table, or -o json)
    rotor acl approve shop/db-password shop/web ro   grant (with or without a pending request)
    rotor acl deny    shop/db-password shop/web ro   deny a request (and drop the grant, if any)
    rotor acl revoke  shop/db-password shop/web ro   take a grant back
    rotor acl retire  shop/db-password               retire a secret, its grants and requests
                                                     (canister; also a name the controller
                                                     skips as unusable)

``--backend configmap`` (default; ROTOR_ACL_BACKEND) edits the ConfigMap through the current
kubeconfig context; ``--backend canister`` calls the ACL canister with an admin's identity PEM
(``dfx identity export NAME > admin.pem``). Defaults come from the controller's ``ROTOR_*``
settings. Exit codes: 0 done, 1 the backend failed or refused, 2 bad input.

Other commands (e.g. ``demo``) register themselves in :func:`build_parser` as further subparsers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from rotor.acl import AclBackend, AclSnapshot, Mode
from rotor.durations import duration_arg, format_duration
from rotor.errors import InvalidSpec, RotorError
from rotor.names import Principal, SecretRef
from rotor.settings.controller import ControllerSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad input on the command line: exit 2."""


INSTALL_HINT = "pip install '.[cli]' in a checkout of Rotor (it is not on PyPI)"
_EXTRA_OF = {
    "kubernetes": "the Kubernetes client (the configmap backend)",
    "ic": "ic-py (the canister backend)",
    "pyblst": "pyblst (the canister backend)",
    "cbor2": "cbor2 (the canister backend)",
    "kmock": "kmock (the demo's Kubernetes API emulator)",
    "jsonpatch": "jsonpatch (the demo)",
    "hvac": "hvac (Vault stores)",
}


def missing_part(e: ModuleNotFoundError, command: str) -> str:
    """One line for an optional dependency that is not installed, naming the fix."""
    top = (e.name or "?").split(".")[0]
    what = _EXTRA_OF.get(top, f"the Python package {top!r}")
    return f"{command} needs {what}, which is not installed; {INSTALL_HINT}"


def quiet_urllib3() -> None:
    """urllib3 logs a warning for each retry of a connection; the command prints one line."""
    logging.getLogger("urllib3").setLevel(logging.ERROR)


# -- backends -------------------------------------------------------------------------------------
def _configmap_backend(args: argparse.Namespace) -> AclBackend:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    from controller.acl.configmap import ConfigMapAclBackend

    path = args.kubeconfig
    if not path and not _in_cluster():
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser(
            config.KUBE_CONFIG_DEFAULT_LOCATION
        )
    if path:
        flag = "--kubeconfig" if args.kubeconfig else "KUBECONFIG or ~/.kube/config"
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise UsageError(
                f"{flag}: cannot read {path} ({e.strerror}); pass --kubeconfig FILE "
                "(e.g. the kubeconfig `rotor demo` prints)"
            ) from None
    try:
        if path:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=path, context=args.context
            )
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
    except (ConfigException, OSError, ValueError, TypeError) as e:
        raise UsageError(
            f"--kubeconfig: cannot load {path or 'the in-cluster config'} ({e})"
        ) from None
    # One retry, not urllib3's three with a warning each: a stopped server is reported once
    # (controller.kube.mapped_errors names it and the cause).
    api.configuration.retries = 1
    return ConfigMapAclBackend(client.CoreV1Api(api), args.namespace, args.configmap)


def _in_cluster() -> bool:
    return Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()


def _canister_backend(args: argparse.Namespace) -> AclBackend:
    from controller.acl.canister import CanisterAclBackend, load_identity

    if not args.identity:
        raise UsageError(
            "--identity: the canister backend needs an admin's PEM key "
            "(dfx identity export NAME > admin.pem)"
        )
    try:
        pem = Path(args.identity).read_bytes()
    except OSError as e:
        raise UsageError(f"--identity: cannot read {args.identity} ({e.strerror})") from None
    return CanisterAclBackend.connect(
        host=args.host,
        canister_id=args.canister_id,
        identity=load_identity(pem, f"--identity {args.identity}"),
        verify=args.verify,
        root_key=args.root_key,
        max_age=args.cert_max_age,
    )


def make_cli_backend(args: argparse.Namespace) -> AclBackend:
    if args.backend == "canister":
        return _canister_backend(args)
    return _configmap_backend(args)


# -- output ---------------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def render_snapshot(snap: AclSnapshot, origin: str) -> str:
    out = [f"ACL version {snap.version} ({origin})", "", "GRANTS"]
    grants = [(str(g.secret), str(g.principal), g.mode) for g in sorted(snap.grants)]
    out.append(_table(("SECRET", "PRINCIPAL", "MODE"), grants) if grants else "(none)")
    out += ["", "REQUESTS"]
    requests = [(str(r.secret), str(r.principal), r.mode, r.state) for r in snap.requests]
    out.append(_table(("SECRET", "PRINCIPAL", "MODE", "STATE"), requests) if requests else "(none)")
    secrets = sorted(str(s) for s in snap.secrets)
    out += ["", "SECRETS", "\n".join(secrets) if secrets else "(none)"]
    if snap.skipped:
        out += ["", "SKIPPED (unusable entries, not applied; `rotor acl retire` removes them)"]
        out += [str(e) for e in snap.skipped]
    return "\n".join(out)


def snapshot_json(snap: AclSnapshot) -> dict[str, Any]:
    from controller.acl.configmap import snapshot_document  # the same document, as JSON

    return snapshot_document(snap)


def _origin(args: argparse.Namespace) -> str:
    if args.backend == "canister":
        return f"canister {args.canister_id} at {args.host}"
    return f"configmap {args.namespace}/{args.configmap}"


# -- commands -------------------------------------------------------------------------------------
def cmd_acl_list(args: argparse.Namespace) -> int:
    backend = make_cli_backend(args)
    snap = asyncio.run(backend.snapshot())
    if args.output == "json":
        print(json.dumps(snapshot_json(snap), indent=2))
    else:
        print(render_snapshot(snap, _origin(args)))
    return EXIT_OK


def _triple(args: argparse.Namespace) -> tuple[SecretRef, Principal, Mode]:
    secret = SecretRef.parse(args.secret, None, "SECRET")
    principal = Principal.parse(args.principal, "PRINCIPAL")
    mode = cast(Mode, args.mode)
    if mode == "rw" and principal.namespace != secret.namespace:
        raise InvalidSpec(
            "PRINCIPAL",
            f"{principal} cannot write {secret} (another namespace)",
            "a writer must be in the secret's namespace; use mode ro",
        )
    return secret, principal, mode


def _change(verb: str, past: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        secret, principal, mode = _triple(args)
        backend = make_cli_backend(args)
        asyncio.run(getattr(backend, verb)(secret, principal, mode))
        print(f"{past}: {principal} {mode} {secret} ({_origin(args)})")
        return EXIT_OK

    return run


def cmd_acl_retire(args: argparse.Namespace) -> int:
    from controller.acl.canister import CanisterAclBackend

    secret = args.secret
    if not secret or secret != secret.strip():
        raise UsageError("SECRET: give the secret exactly as `rotor acl list` shows it")
    if args.backend != "canister":
        raise UsageError(
            "retire: only the canister backend has it; with the ConfigMap, delete the secret's "
            f"lines: kubectl -n {args.namespace} edit configmap {args.configmap}"
        )
    backend = make_cli_backend(args)
    assert isinstance(backend, CanisterAclBackend)
    asyncio.run(backend.retire_secret(secret))
    print(f"retired: {secret} with its grants and requests ({_origin(args)})")
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------
def _backend_options(settings: ControllerSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--backend",
        choices=("configmap", "canister"),
        default=settings.acl_backend,
        help="the ACL backend (default: %(default)s, ROTOR_ACL_BACKEND)",
    )
    cm = p.add_argument_group("configmap backend")
    cm.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
    cm.add_argument("--context", help="kubeconfig context (default: the current one)")
    cm.add_argument(
        "--namespace",
        default=settings.namespace,
        help="Rotor's namespace, where the ACL ConfigMap lives (default: %(default)s)",
    )
    cm.add_argument(
        "--configmap", default=settings.acl_configmap, help="ConfigMap name (default: %(default)s)"
    )
    ic = p.add_argument_group("canister backend")
    ic.add_argument(
        "--canister-id", default=settings.canister_id, help="ACL canister id (ROTOR_CANISTER_ID)"
    )
    ic.add_argument(
        "--host", default=settings.canister_host, help="IC API host (default: %(default)s)"
    )
    ic.add_argument("--identity", help="PEM file of an admin identity (dfx identity export NAME)")
    ic.add_argument(
        "--verify",
        choices=("strict", "hash-tree", "none"),
        default=settings.canister_verify,
        help="how answers are checked (default: %(default)s)",
    )
    ic.add_argument(
        "--root-key",
        default=settings.canister_root_key,
        help="IC root key, hex DER; empty: mainnet; 'fetch': ask a local replica",
    )
    ic.add_argument(
        "--cert-max-age",
        type=duration_arg("--cert-max-age"),
        default=settings.canister_cert_max_age,
        metavar="DURATION",
        help="oldest certificate accepted, e.g. 5m "
        f"(default: {format_duration(settings.canister_cert_max_age)})",
    )
    return p


def add_acl_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: ControllerSettings
) -> None:
    common = _backend_options(settings)
    acl = sub.add_parser("acl", help="read and change the access-control list")
    acl_sub = acl.add_subparsers(dest="acl_command", required=True, metavar="COMMAND")
    ls = acl_sub.add_parser("list", parents=[common], help="grants, requests and known secrets")
    ls.add_argument("--output", "-o", choices=("table", "json"), default="table")
    ls.set_defaults(handler=cmd_acl_list)
    for verb, past, text in (
        ("approve", "approved", "grant access (a pending request is not needed)"),
        ("deny", "denied", "deny a request (an existing grant is removed too)"),
        ("revoke", "revoked", "take a grant back; access goes within one ACL poll"),
    ):
        p = acl_sub.add_parser(verb, parents=[common], help=text)
        p.add_argument("secret", metavar="SECRET", help="namespace/name of a RotatingSecret")
        p.add_argument("principal", metavar="PRINCIPAL", help="namespace/serviceaccount")
        p.add_argument("mode", metavar="MODE", choices=("rw", "ro"), help="rw or ro")
        p.set_defaults(handler=_change(verb, past))
    retire = acl_sub.add_parser(
        "retire",
        parents=[common],
        help="retire a secret with its grants and requests (canister backend, admins)",
    )
    retire.add_argument(
        "secret",
        metavar="SECRET",
        help="the secret as stored (also a name the controller skips as unusable)",
    )
    retire.set_defaults(handler=cmd_acl_retire)


def build_parser(settings: ControllerSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rotor", description="Rotor: generate, rotate and deliver secrets to Kubernetes."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_acl_commands(sub, settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = ControllerSettings.from_env()
    except InvalidSpec as e:
        print(f"rotor: {e}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(settings)
    args = parser.parse_args(argv)  # exits 2 on bad usage
    quiet_urllib3()
    handler: Handler = args.handler
    try:
        return handler(args)
    except ModuleNotFoundError as e:
        print(f"rotor: {missing_part(e, 'rotor ' + args.command)}", file=sys.stderr)
        return EXIT_FAILED
    except (UsageError, InvalidSpec) as e:
        print(f"rotor: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RotorError as e:
        print(f"rotor: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
