"""The agent as its image installs it, for the benches that measure the agent.

The development venv holds Rotor as an *editable* install: a ``.pth`` import hook and every
module found through it, which the image does not carry (about 1 MiB more resident). The agent
image (Dockerfile.agent) runs ``pip install '.[vault,postgres]'`` into a fresh venv, with pip's
byte-compiled ``.pyc`` files, and copies nothing else. :func:`agent_python` builds the same
venv here (non-editable, the same extras), once per content of ``pyproject.toml``, ``rotor/``
and ``agent/``, under ``~/.cache/rotor-bench/`` (``ROTOR_BENCH_CACHE``), and returns its
interpreter; ``rotor-agent`` is the console script beside it.

    python bench/shipped.py            # builds it (if needed) and prints the interpreter
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = "vault,postgres"  # Dockerfile.agent's AGENT_EXTRAS
CACHE = Path(os.environ.get("ROTOR_BENCH_CACHE", Path.home() / ".cache" / "rotor-bench"))


def _digest() -> str:
    h = hashlib.sha256(EXTRAS.encode())
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    for package in ("rotor", "agent"):
        files += sorted(
            p for p in (ROOT / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def agent_python() -> Path:
    """The interpreter of a venv with Rotor installed as the agent image installs it."""
    venv = CACHE / f"agent-{_digest()}"
    python = venv / "bin" / "python"
    done = venv / "complete"
    if done.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)  # an earlier build that did not finish
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rotor-agent-src-") as tmp:
        # Only what the Dockerfile copies (a build from the checkout would see other packages).
        src = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        for package in ("rotor", "agent"):
            shutil.copytree(
                ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir"]
        subprocess.run([*pip, f"{src}[{EXTRAS}]"], check=True, cwd=tmp)
    done.write_text("")
    return python


def agent_interpreter(choice: str) -> str:
    """``shipped``: a venv installed as the agent image installs it (bench/shipped.py);
    ``dev``: this interpreter (the editable development install); else a path."""
    if choice == "shipped":
        return str(agent_python())
    return sys.executable if choice == "dev" else choice


if __name__ == "__main__":
    print(agent_python())
