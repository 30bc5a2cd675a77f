"""``rotor demo`` as a user runs it: plain output off a terminal, live rotations, SIGTERM stops
every process it started (``rotor demo --real`` with ``--kube=real``: the control plane's too)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

DEADLINE = 90.0


def test_rotor_demo_shows_rotations_and_stops_every_process_on_sigterm(
    tmp_path: Path, kube: str
) -> None:
    real = ["--real"] if kube == "real" else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotorctl.cli",
            "demo",
            "--rotate-every",
            "4s",
            "--no-vault",
            "--dir",
            str(tmp_path / "demo"),
            *real,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        end = time.monotonic() + DEADLINE * (2 if real else 1)
        assert proc.stdout is not None
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "version 2 committed" in line:
                break
        out = "".join(lines)
        if real:
            assert "a real kube-apiserver with etcd, kube-controller-manager" in out
        else:
            assert "tokens, RBAC and admission enforced" in out
        assert re.search(r"kubectl: kubectl --kubeconfig \S+/kubeconfig get pods,secrets -A", out)
        assert "\x1b[" not in out, "no terminal escapes when stdout is not a terminal"
        assert re.search(
            r"version 2 committed by the writer -> web/web's files changed \d+ ms", out
        )
        assert re.search(
            r"ACL: +rotor acl list --kubeconfig \S+/kubeconfig --namespace rotor-system", out
        )
        assert (tmp_path / "demo" / ".rotor-demo").is_file()
        pids = [int(p) for p in re.findall(r"agent pid (\d+)", out)]
        assert len(pids) == 2
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + rest
        assert "stopped: every process is gone" in rest
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"agent {pid} left behind"
        assert _using(tmp_path / "demo") == [], "a process of the demo (etcd, ...) left behind"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _using(folder: Path) -> list[str]:
    """Command lines of live processes that name ``folder`` (etcd's data dir, the API server's
    certificates, an agent's files)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or _zombie(int(d.name)):
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmd:
            found.append(cmd)
    return found
