"""``rotor-agent``: the command line.

``rotor-agent standalone ...`` rotates secrets into a local folder (see ``--help`` and
docs/agent.md). Exit codes: 0 done or stopped by SIGTERM/SIGINT; 1 a runtime failure (e.g.
``--once`` could not get a value); 2 invalid input (flags, config file, folder), with one line
that names the field and the fix, never a traceback.

Imports are kept lazy: ``--help`` and a bad flag cost no more than argparse, and the engine's
modules are loaded only once the input is known to be good; in-cluster mode (no arguments, or
``run``) does not load argparse at all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rotor.errors import InvalidSpec, RotorError

if TYPE_CHECKING:
    import argparse

PROG = "rotor-agent"
DEFAULT_DIR = "rotor-secrets"
EXAMPLES = """\
examples:
  rotor-agent standalone --demo
  rotor-agent standalone --config secrets.yaml --dir /run/secrets/app
  rotor-agent standalone --name db --key password --generator password:length=24 \\
      --key tls --generator ecdsa:curve=P-384 --interval 24h --overlap 1h --once
"""


C = TypeVar("C")
"""What a mode reads at start (in-cluster: its configuration; standalone: the options)."""


def _parser() -> argparse.ArgumentParser:
    import argparse

    from rotor.env import DEFAULT_METRICS_PORT

    p = argparse.ArgumentParser(prog=PROG, description="Rotor's secret rotation agent.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "standalone",
        help="rotate secrets into a local folder (no cluster)",
        description="Rotate secrets into a local folder, with no cluster.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = s.add_argument_group("what to rotate (one of)")
    what.add_argument(
        "--config", type=Path, help="YAML or JSON file of secrets (see docs/agent.md)"
    )
    what.add_argument(
        "--demo",
        action="store_true",
        help="rotate a demo secret (password + ed25519 key, every 30s) into ./rotor-demo",
    )
    what.add_argument("--name", help="flags for one secret: its name (the folder <dir>/<name>)")
    what.add_argument(
        "--key", action="append", default=[], metavar="KEY", help="a key (file) name; repeatable"
    )
    what.add_argument(
        "--generator",
        action="append",
        default=[],
        metavar="TYPE[:OPT=VAL,...]",
        help="generator of the --key before it (or of every key when given once), e.g. "
        "password:length=24, token:bytes=32,encoding=hex, rsa:bits=2048, ecdsa:curve=P-384, "
        "ed25519, uuid, hex:length=40, password:classes=lower+digit",
    )
    what.add_argument("--interval", default="24h", help="time between rotations (default 24h)")
    what.add_argument(
        "--overlap", help="how long <key>.previous stays (default: 1h or half the interval)"
    )
    s.add_argument(
        "--dir",
        type=Path,
        help=f"output folder (default ./{DEFAULT_DIR}; ./rotor-demo with --demo)",
    )
    s.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help=f"port of /metrics, /healthz, /readyz, POST /rotate (default {DEFAULT_METRICS_PORT};"
        " 0 turns the server off)",
    )
    s.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; POST /rotate only on loopback)",
    )
    s.add_argument("--once", action="store_true", help="make sure every secret has a value, exit")
    s.add_argument("--apply-hook", default="", metavar="URL", help="http://127.0.0.1:PORT/PATH")
    s.add_argument(
        "--reload", default="none", help="none (default), signal:HUP, or http://127.0.0.1:PORT/PATH"
    )
    s.add_argument(
        "--reload-process", default="", metavar="NAME", help="signal processes named NAME"
    )
    s.add_argument("--reload-pid", type=int, metavar="PID", help="signal this process")
    s.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    sub.add_parser("run", help="in-cluster mode (inside an injected pod)")
    return p


def _generator(text: str, field: str) -> dict[str, Any]:
    gtype, _, opts = text.partition(":")
    out: dict[str, Any] = {"type": gtype.strip()}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidSpec(
                field, f"{item!r} is not OPTION=VALUE", "write e.g. password:length=24"
            )
        key, value = key.strip(), value.strip()
        if key == "classes":
            out[key] = value.split("+")
        elif value.isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out


def secrets_from_flags(args: argparse.Namespace) -> Any:
    from agent.standalone import parse_config

    if not args.key:
        raise InvalidSpec("--key", "no key given", "add e.g. --key password --generator password")
    gens = args.generator or ["password"]
    if len(gens) not in (1, len(args.key)):
        raise InvalidSpec(
            "--generator",
            f"{len(gens)} generators for {len(args.key)} keys",
            "give one --generator after each --key, or one for all keys",
        )
    if len(gens) == 1:
        gens = gens * len(args.key)
    rotation = {"interval": args.interval}
    if args.overlap is not None:
        rotation["overlap"] = args.overlap
    spec = {
        "keys": [
            {"name": k, "generator": _generator(g, f"--generator {g}")}
            for k, g in zip(args.key, gens, strict=True)
        ],
        "rotation": rotation,
    }
    try:
        return parse_config([{"name": args.name, "spec": spec}])
    except InvalidSpec as e:
        raise InvalidSpec(_flag_for(e.field), e.problem, e.fix) from None


def _flag_for(field: str) -> str:
    """Name the flag a spec field came from (``(top).spec.keys[1].generator.length``)."""
    if field.endswith(".name") and ".keys[" not in field:
        return "--name"
    if ".keys[" in field:
        i = field.split(".keys[", 1)[1].split("]", 1)[0]
        rest = field.split("]", 1)[1].lstrip(".")
        what = "--key" if rest == "name" else "--generator"
        return f"{what} (key {int(i) + 1}: {rest})"
    for flag in ("interval", "overlap"):
        if field.endswith(flag):
            return f"--{flag}"
    return field


def _options(args: argparse.Namespace) -> Any:
    from agent.standalone import DEMO_DIR, Options, demo_secret, load_config

    # The same loopback-URL rule as the rotor.dev/apply-hook annotation (one reading of it).
    from rotor.annotations import _loopback_url, parse_reload
    from rotor.settings.agent import AgentSettings

    chosen = [
        n
        for n, on in (("--config", args.config), ("--demo", args.demo), ("--name", args.name))
        if on
    ]
    if len(chosen) != 1:
        raise InvalidSpec(
            "standalone",
            "no secret given" if not chosen else f"{' and '.join(chosen)} cannot be combined",
            "give one of --config FILE, --demo, or --name NAME --key KEY [--generator TYPE]",
        )
    if args.config:
        secrets = load_config(args.config)
    elif args.demo:
        secrets = (demo_secret(),)
    else:
        secrets = secrets_from_flags(args)
    if not 0 <= args.metrics_port <= 65535:
        raise InvalidSpec(
            "--metrics-port", f"{args.metrics_port} is out of range", "use 0 to 65535"
        )
    reload = parse_reload(args.reload, "--reload")
    if reload.kind == "signal" and not (args.reload_process or args.reload_pid):
        raise InvalidSpec(
            "--reload",
            f"{args.reload} needs a target process",
            "add --reload-process NAME or --reload-pid PID",
        )
    if args.apply_hook:
        _loopback_url(args.apply_hook, "--apply-hook", "the apply hook")
    settings = AgentSettings.from_env()
    if args.log_level:
        from dataclasses import replace

        settings = replace(settings, log_level=args.log_level)
    folder = args.dir or Path(DEMO_DIR if args.demo else DEFAULT_DIR)
    return Options(
        secrets=secrets,
        dir=folder,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        once=args.once,
        demo=args.demo,
        apply_hook=args.apply_hook,
        reload=reload,
        reload_process=args.reload_process,
        reload_pid=args.reload_pid,
        settings=settings,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if args_in in ([], ["run"]):
        # In a pod (what the webhook injects): no flags to parse, so argparse (about 0.4 MiB
        # resident, bench/agent_kube_client.py) is never loaded.
        return _incluster()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in (None, "run"):
        return _incluster()
    try:
        opts = _options(args)
    except RotorError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return _serve(lambda: opts, lambda o: o.settings.log_level, _standalone)


def _incluster() -> int:
    """In-cluster mode (no subcommand, or ``run``): configured by ``ROTOR_*`` env vars, read
    once here (:class:`agent.config.InClusterConfig`) and passed down."""
    import os

    from agent import incluster
    from agent.config import InClusterConfig
    from agent.harden import no_dumping

    no_dumping()  # before the token is read: the app may share the process namespace
    return _serve(
        lambda: InClusterConfig.from_env(os.environ),
        lambda config: config.settings.log_level,
        lambda config: incluster.run(config),
    )


def _serve(
    load: Callable[[], C],
    log_level: Callable[[C], str],
    start: Callable[[C], Coroutine[Any, Any, int]],
) -> int:
    """Read the configuration, set up logging and metrics, then run ``start(config)`` to its
    end. Rotor's errors become one line on stderr and an exit code: 2 for invalid input, 1
    otherwise; 130 when interrupted."""
    import asyncio

    from prometheus_client import disable_created_metrics

    from rotor.logs import setup

    try:
        config = load()
        setup(log_level(config))
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: a process-wide switch, so set here only
        return asyncio.run(start(config))
    except InvalidSpec as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except RotorError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _standalone(opts: Any) -> int:
    from agent.standalone import run

    code: int = await run(opts)
    return code


if __name__ == "__main__":
    sys.exit(main())
