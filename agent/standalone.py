"""Standalone mode: rotate secrets into a local folder, with no cluster.

``rotor-agent standalone --config FILE`` (or flags for one secret, or ``--demo``) keeps each
secret in ``<dir>/<name>/`` (written by :class:`agent.files.AtomicWriter`) and its state in
``<dir>/.rotor/<name>.json`` (:class:`agent.store.FileStore`, mode 0600), so a restart keeps the
values that are still valid and the versions keep counting. One agent per folder: a second one
is refused (``<dir>/.rotor/agent.lock``).

The config file is YAML or JSON: a list of secrets, one secret, several YAML documents, or a
``kind: List`` with ``items``. A secret is ``{name, namespace?, spec}`` or a RotatingSecret
manifest (``{apiVersion, kind, metadata: {name, namespace?}, spec, status?}``); ``spec`` is read
by :meth:`rotor.spec.RotatingSecretSpec.from_dict`, so an error names the field and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rotor import API_GROUP
from rotor.annotations import Reload
from rotor.errors import InvalidSpec, RotorError
from rotor.names import check_name, check_namespace
from rotor.settings.agent import AgentSettings
from rotor.spec import RotatingSecretSpec, reject_unknown

log = logging.getLogger("rotor.agent")

STATE_DIR = ".rotor"
LOCK_FILE = "agent.lock"
KIND = "RotatingSecret"
DEMO_DIR = "rotor-demo"
DEMO_NAME = "demo"
DEMO_SPEC: dict[str, Any] = {
    "keys": [
        {"name": "password", "generator": {"type": "password", "length": 24}},
        {"name": "signing-key", "generator": {"type": "ed25519"}},
    ],
    "rotation": {"interval": "30s", "overlap": "10s"},
}


@dataclass(frozen=True)
class StandaloneSecret:
    name: str
    spec: RotatingSecretSpec
    namespace: str | None = None


@dataclass(frozen=True)
class Options:
    """What ``rotor-agent standalone`` was asked to do (parsed and checked by :mod:`agent.cli`)."""

    secrets: tuple[StandaloneSecret, ...]
    dir: Path
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9753
    once: bool = False
    demo: bool = False
    apply_hook: str = ""
    reload: Reload = field(default_factory=Reload)
    reload_process: str = ""
    reload_pid: int | None = None
    settings: AgentSettings = field(default_factory=AgentSettings)


# -- config ------------------------------------------------------------------------------------
def _secret(item: object, where: str) -> StandaloneSecret:
    if not isinstance(item, Mapping):
        raise InvalidSpec(
            where,
            f"expected a mapping, got {type(item).__name__}",
            "write {name: ..., spec: {...}} or a RotatingSecret manifest",
        )
    if "metadata" in item or "kind" in item or "apiVersion" in item:
        allowed = {"apiVersion", "kind", "metadata", "spec", "status"}
        kind = item.get("kind", KIND)
        if kind != KIND:
            raise InvalidSpec(f"{where}.kind", f"{kind!r} is not {KIND}", f"use kind: {KIND}")
        api = item.get("apiVersion", f"{API_GROUP}/v1alpha1")
        if not isinstance(api, str) or not api.startswith(API_GROUP + "/"):
            raise InvalidSpec(
                f"{where}.apiVersion", f"{api!r} is not {API_GROUP}", f"use {API_GROUP}/v1alpha1"
            )
        meta = item.get("metadata")
        if not isinstance(meta, Mapping):
            raise InvalidSpec(
                f"{where}.metadata", "metadata is required", "add metadata: {name: ...}"
            )
        name = check_name(meta.get("name"), f"{where}.metadata.name")
        ns = meta.get("namespace")
        ns_field = f"{where}.metadata.namespace"
    else:
        allowed = {"name", "namespace", "spec"}
        name = check_name(item.get("name"), f"{where}.name")
        ns = item.get("namespace")
        ns_field = f"{where}.namespace"
    reject_unknown(item, allowed, where)
    if "spec" not in item:
        raise InvalidSpec(f"{where}.spec", "spec is required", "add spec: {keys: [...]}")
    namespace = check_namespace(ns, ns_field) if ns is not None else None
    return StandaloneSecret(
        name, RotatingSecretSpec.from_dict(item["spec"], f"{where}.spec"), namespace
    )


def parse_config(docs: Sequence[object]) -> tuple[StandaloneSecret, ...]:
    """Secrets from the documents of a config file (see the module docstring for the shapes)."""
    items: list[tuple[object, str]] = []
    for d, doc in enumerate(docs):
        prefix = f"[{d}]" if len(docs) > 1 else ""
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            doc = doc.get("items")
            prefix += ".items"
        if isinstance(doc, list):
            items += [(x, f"{prefix}[{i}]") for i, x in enumerate(doc)]
        else:
            items.append((doc, prefix or "(top)"))
    if not items:
        raise InvalidSpec(
            "config", "lists no secret", "list at least one {name: ..., spec: {keys: [...]}}"
        )
    out = [_secret(x, where) for x, where in items]
    seen: dict[str, str] = {}
    for s, (_, where) in zip(out, items, strict=True):
        if s.name in seen:
            raise InvalidSpec(
                f"{where}.name",
                f"{s.name!r} is already used by {seen[s.name]}",
                "give every secret its own name (each gets the folder <dir>/<name>)",
            )
        seen[s.name] = where
    return tuple(out)


def load_config(path: Path) -> tuple[StandaloneSecret, ...]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidSpec(
            "--config", f"{path}: no such file", "give the path of a YAML or JSON file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidSpec("--config", f"{path}: cannot be read ({e})", "check the file") from None
    docs: list[object]
    if path.suffix == ".json":
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError as e:
            raise InvalidSpec(
                str(path), f"is not valid JSON (line {e.lineno}: {e.msg})", "fix the syntax"
            ) from None
    else:
        import yaml  # only when a YAML file is read

        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise InvalidSpec(
                str(path), f"is not valid YAML{at}", "fix the syntax (indentation, colons, quotes)"
            ) from None
    try:
        return parse_config(docs)
    except InvalidSpec as e:
        raise InvalidSpec(f"{path}: {e.field}", e.problem, e.fix) from None


def demo_secret() -> StandaloneSecret:
    return StandaloneSecret(DEMO_NAME, RotatingSecretSpec.from_dict(DEMO_SPEC))


# -- running -----------------------------------------------------------------------------------
def _refuse_links(folder: Path, names: Sequence[str]) -> None:
    """The state folder and each secret's folder must be real folders (or absent): a symlink
    planted there (``<dir>/db -> ../elsewhere``) would send the values, or the state, elsewhere."""
    for name in (STATE_DIR, *names):
        path = folder / name
        if path.is_symlink():
            raise InvalidSpec(
                "--dir",
                f"{path} is a symlink (to {os.readlink(path)}); Rotor writes only into folders "
                "of its own",
                f"remove {path}, or give another --dir",
            )
        if path.exists() and not path.is_dir():
            raise InvalidSpec("--dir", f"{path} is not a folder", f"remove {path}")


def prepare_dir(folder: Path, names: Sequence[str] = ()) -> int:
    """Create ``folder`` and its state folder; lock it for this agent. Returns the lock's fd.
    Symlinks in place of the state folder or of a secret's folder (``names``) are refused."""
    fix = "choose a folder you can write with --dir"
    _refuse_links(folder, names)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STATE_DIR).mkdir(mode=0o700, exist_ok=True)
        fd = os.open(folder / STATE_DIR / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise InvalidSpec("--dir", f"cannot write to {folder} ({e.strerror})", fix) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        os.close(fd)
        raise InvalidSpec("--dir", f"cannot write to {folder} (permission denied)", fix)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise InvalidSpec(
            "--dir",
            f"another rotor-agent (pid {other}) is already rotating into {folder}",
            "stop it first, or give this one another --dir",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_standalone(secrets: Sequence[StandaloneSecret], jitter: float) -> None:
    """Refuse what standalone mode cannot do (read a Kubernetes Secret) and an overlap that
    outlasts the shortest interval with this agent's jitter, naming the field."""
    for s in secrets:
        s.spec.rotation.check_jitter(jitter, f"{s.name}: spec.rotation.overlap")
        pg = s.spec.target.postgres if s.spec.target is not None else None
        if pg is not None and pg.admin.secret_ref is not None:
            raise InvalidSpec(
                f"{s.name}: spec.target.postgres.admin.secretRef",
                "standalone mode cannot read a Kubernetes Secret",
                "give admin.passwordFile (a file holding the password) instead",
            )


def _target(s: StandaloneSecret, opts: Options) -> Any:
    if s.spec.target is None:
        return None
    from agent.targets import build_target, file_admin

    pg = s.spec.target.postgres
    admin = file_admin(pg.admin.user, pg.admin.password_file) if pg is not None else None
    return build_target(s.name, s.spec.target, admin, opts.settings.hook_timeout)


def build_agent(opts: Options) -> Any:
    """The :class:`agent.engine.Agent` for ``opts`` and its metrics registry."""
    from prometheus_client import CollectorRegistry

    from agent.engine import Agent, SecretRotator, SystemClock
    from agent.files import AtomicWriter
    from agent.hooks import ApplyHook, Reloader
    from agent.metrics import AgentMetrics
    from agent.store import FileStore

    check_standalone(opts.secrets, opts.settings.jitter)
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    clock = SystemClock()
    writer_id = f"standalone/{socket.gethostname()}"
    hook = ApplyHook(opts.apply_hook, opts.settings.hook_timeout) if opts.apply_hook else None
    reloader = (
        Reloader(
            opts.reload,
            process=opts.reload_process,
            pid=opts.reload_pid,
            timeout=opts.settings.hook_timeout,
        )
        if opts.reload.kind != "none"
        else None
    )
    rotators = [
        SecretRotator(
            s.name,
            s.spec,
            FileStore(opts.dir / STATE_DIR / f"{s.name}.json"),
            AtomicWriter(opts.dir / s.name, opts.settings.file_mode),
            settings=opts.settings,
            metrics=metrics,
            clock=clock,
            writer_id=writer_id,
            apply_hook=hook,
            reloader=reloader,
            target=_target(s, opts),
        )
        for s in opts.secrets
    ]
    return Agent(rotators), registry


def _demo_banner(opts: Options, port: int | None, out: TextIO) -> None:
    s = opts.secrets[0]
    folder = opts.dir / s.name
    files = ", ".join(s.spec.files)
    interval = s.spec.rotation.to_dict()
    lines = [
        f"Rotor demo: secret {s.name!r} rotates every {interval['interval']} into {folder}/",
        f"  files:      {files}  (+ <file>.previous for {interval['overlap']} after each rotation)",
        f"  watch:      watch -n1 'ls -l {folder}/; cat {folder}/password; echo'",
    ]
    if port:
        base = f"http://{opts.metrics_host}:{port}"
        lines += [
            f"  metrics:    {base}/metrics   (ready: {base}/readyz)",
            f"  rotate now: curl -X POST {base}/rotate   or   kill -USR1 {os.getpid()}",
        ]
    else:
        lines.append(f"  rotate now: kill -USR1 {os.getpid()}")
    lines.append(f"Ctrl-C stops it; the state in {opts.dir / STATE_DIR} survives a restart.")
    print("\n".join(lines), file=out, flush=True)


async def run(opts: Options, out: TextIO = sys.stdout) -> int:
    """Run the agent until SIGTERM/SIGINT (or once, with ``opts.once``). Returns the exit code."""
    lock = prepare_dir(opts.dir, [s.name for s in opts.secrets])
    try:
        agent, registry = build_agent(opts)
        try:
            return await _run(opts, agent, registry, out)
        finally:
            await agent.close()
    finally:
        os.close(lock)


async def _run(opts: Options, agent: Any, registry: Any, out: TextIO) -> int:
    if opts.once:
        await agent.start()
        waiting = [name for name, ok in agent.readiness().items() if not ok]
        if waiting:
            log.error("no value yet for %s (see the lines above)", ", ".join(waiting))
            return 1
        log.info("done: %d secret(s) in %s", len(agent.rotators), opts.dir)
        return 0
    # Handlers before the first files: a SIGUSR1 sent as soon as they appear must not kill us.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, agent.request_rotation)
    try:
        if opts.metrics_port and not opts.demo:
            _check_port(opts.metrics_host, opts.metrics_port)  # before version 1 is written
        await agent.start()
        return await _serve(opts, agent, registry, out, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            loop.remove_signal_handler(sig)


def _check_port(host: str, port: int) -> None:
    """Refuse a ``--metrics-port`` that cannot be listened on, before anything is rotated."""
    try:
        socket.create_server((host, port)).close()
    except OSError as e:
        raise InvalidSpec(
            "--metrics-port",
            f"cannot listen on {host}:{port} ({e.strerror})",
            "choose another port, or 0 to turn the metrics server off",
        ) from None


async def _serve(opts: Options, agent: Any, registry: Any, out: TextIO, stop: asyncio.Event) -> int:
    runner = None
    port: int | None = None
    if opts.metrics_port or opts.demo:
        from agent.server import BACKGROUND, make_app, serve  # after the first files

        allow_rotate = opts.metrics_host in ("127.0.0.1", "localhost", "::1")
        app = make_app(registry, agent, allow_rotate=allow_rotate, background=agent.run)
        try:
            runner = await serve(app, opts.metrics_host, opts.metrics_port)
        except OSError as e:
            if not opts.demo:
                raise InvalidSpec(
                    "--metrics-port",
                    f"cannot listen on {opts.metrics_host}:{opts.metrics_port} ({e.strerror})",
                    "choose another port, or 0 to turn the metrics server off",
                ) from None
            runner = await serve(app, opts.metrics_host, 0)  # the demo takes any free port
        port = int(runner.addresses[0][1])
        background = app[BACKGROUND]
    else:
        background = asyncio.ensure_future(agent.run())
    log.info(
        "agent started secrets=%s dir=%s metrics=%s",
        ",".join(agent.rotators),
        opts.dir,
        f"http://{opts.metrics_host}:{port}/metrics" if port else "off",
    )
    if opts.demo:
        _demo_banner(opts, port, out)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopper, background}, return_when=asyncio.FIRST_COMPLETED)
        if background.done() and not background.cancelled():
            exc = background.exception()
            if exc is not None:
                raise exc
    finally:
        stopper.cancel()
        if runner is not None:
            await runner.cleanup()
        else:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
    log.info("agent stopped")
    return 0


__all__ = ["Options", "RotorError", "StandaloneSecret", "load_config", "parse_config", "run"]
