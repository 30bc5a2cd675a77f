"""The first hour of a new user, from a fresh virtual environment: `pip install '.[cli]'` (what
README.md, docs/install.md and the chart's NOTES print; not editable, so nothing is found beside
the sources), then `rotor demo` in the checkout, then every command the demo prints, run as
printed in a shell whose PATH does not have the new environment's bin/ (as the user's other
terminal), and the README's kubectl line. pip uses its cache (warm on a developer's machine and
in CI after the first run); the time from `rotor demo` to its first rotation is printed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
SHELL_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The PATH of the user's other terminal: no virtual environment on it."""
PROMPT_WAIT = 240.0


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with `pip install '.[cli]'` of this checkout (a copy of its
    tracked files, so no build/ or egg-info of the working tree is reused)."""
    base = tmp_path_factory.mktemp("first-hour")
    checkout = base / "checkout"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            dst = checkout / name.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    started = time.monotonic()
    pip = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "--disable-pip-version-check", ".[cli]"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    print(f"pip install '.[cli]' from the checkout: {time.monotonic() - started:.0f}s")
    # the project's own setuptools warnings (the license as a TOML table) are gone
    assert "project.license` as a TOML table is deprecated" not in pip.stdout + pip.stderr
    return checkout


def _run_printed(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKELEVEL")}
    env["PATH"] = SHELL_PATH
    return subprocess.run(
        line, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_every_command_printed_runs_as_printed_from_a_fresh_install(
    venv: Path, tmp_path: Path
) -> None:
    require_tool("kubectl", "install kubectl")
    checkout = venv
    rotor = checkout.parent / "venv" / "bin" / "rotor"
    out_path = tmp_path / "demo.out"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKELEVEL")}
    env["PATH"] = SHELL_PATH
    started = time.monotonic()
    with out_path.open("w") as out:
        demo = subprocess.Popen(
            [str(rotor), "demo", "--duration", "3m", "--rotate-every", "10s", "--no-vault"],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + PROMPT_WAIT
        text = ""
        while "committed by the writer" not in text:
            assert demo.poll() is None, out_path.read_text()[-3000:]
            assert time.monotonic() < end, text[-3000:]
            time.sleep(0.5)
            text = out_path.read_text()
        print(f"rotor demo to its first rotation on screen: {time.monotonic() - started:.0f}s")
        printed = _commands(text)
        assert {"kubectl", "ls", "curl", "acl"} <= set(printed), text
        for what, line in printed.items():
            r = _run_printed(line, checkout)
            assert r.returncode == 0, f"{what}: {line}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        # README: `kubectl --kubeconfig rotor-demo-cluster/kubeconfig` works (in the checkout)
        readme = (checkout / "README.md").read_text()
        (kubeconfig,) = re.findall(r"`kubectl --kubeconfig (\S+)` works", readme)
        r = _run_printed(f"kubectl --kubeconfig {kubeconfig} get rsec -A", checkout)
        assert r.returncode == 0, r.stderr
        assert "db-password" in r.stdout
    finally:
        demo.terminate()
        demo.wait(60)
    log = (checkout / "rotor-demo-cluster" / "logs" / "controller.log").read_text()
    assert "InvalidStateError" not in log


def _commands(text: str) -> dict[str, str]:
    """The commands the demo prints, by what they are for."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = re.sub(r"^\[\s*[\d.]+s\]\s*", "", raw)
        if line.startswith("kubectl: "):
            found["kubectl"] = line.removeprefix("kubectl: ").split(" (admin)")[0]
        elif line.strip().startswith("files:"):
            found["ls"] = line.split("files:", 1)[1].split("   (")[0].strip()
        elif line.strip().startswith("metrics:"):
            found["curl"] = line.split("metrics:", 1)[1].split("   (")[0].strip()
        elif line.strip().startswith("ACL:"):
            found["acl"] = line.split("ACL:", 1)[1].strip()
    return found


@pytest.mark.slow
def test_the_readmes_other_commands_run_from_the_same_install(venv: Path, tmp_path: Path) -> None:
    """`rotor-agent standalone --demo` (README, "The agent") and `rotor kube --duration 5s`
    (docs/demo.md) from the fresh install; each stops cleanly."""
    bin_dir = venv.parent / "venv" / "bin"
    kube = subprocess.run(
        [str(bin_dir / "rotor"), "kube", "--duration", "5s", "--kubeconfig", "kc"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert kube.returncode == 0, kube.stderr
    assert (tmp_path / "kc").is_file()
    agent = subprocess.Popen(
        [str(bin_dir / "rotor-agent"), "standalone", "--demo"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert agent.stdout is not None
        banner = ""
        end = time.monotonic() + 60
        while "Ctrl-C stops it" not in banner and time.monotonic() < end:
            banner += agent.stdout.readline()
        assert "rotates every 30s into rotor-demo/demo/" in banner, banner
        assert (tmp_path / "rotor-demo" / "demo" / "password").is_file()
        agent.terminate()
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()
