"""Estimate the size of the images without Docker: build their /opt/rotor layer the way the
Dockerfiles do and measure it.

For each image, the sources the Dockerfile copies are staged in a temporary folder, a fresh venv
is created, ``pip install`` runs with the same requirement string (e.g. ``.[vault]``), pip and
setuptools are removed as in the Dockerfile, and the venv is measured on disk (``du``-style,
by allocated blocks) and as a gzip-compressed tar (what a registry stores for the layer). The
baseline, in the same run, is an empty venv with pip removed. The Python runtime that the base
image brings is estimated from this interpreter's own installation, trimmed as the official slim
images trim theirs (no ``test``/``tests``/``idle_test`` folders, no ``.pyc``, no static
``libpython*.a`` in ``config-*``, a stripped ``libpython``) plus the pip and setuptools it
keeps; the Debian part of the base image cannot be measured here (no Docker) and is quoted.

Each venv is also checked: every module of the packages the image copies is imported from it
with bytecode writing off, and files written under the venv are counted (expected: 0).

    python bench/image_size.py [--only agent]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMAGES = {
    # name: (packages the Dockerfile copies, requirement pip installs)
    "agent": (("rotor", "agent"), ".[vault]"),
    "agent (AGENT_EXTRAS= , no external stores)": (("rotor", "agent"), "."),
    "controller + webhook": (("rotor", "controller", "webhook"), ".[controller,webhook]"),
}
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
DEBIAN_SLIM_MIB = 74.8
"""debian:bookworm-slim unpacked, as `docker image ls` lists it (not measurable here)."""


def disk_bytes(path: Path, skip: set[str] | None = None) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if skip:
            dirnames[:] = [d for d in dirnames if d not in skip and not d.startswith("config-")]
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.lstat(p).st_blocks * 512
    return total


def stripped_bytes(lib: Path) -> int:
    """Size of a shared library without debug info (the official images link with
    --strip-all); unstripped when binutils' strip is absent."""
    strip = shutil.which("strip")
    if strip is None:
        return lib.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / lib.name
        shutil.copy(lib, copy)
        subprocess.run([strip, "--strip-all", str(copy)], check=True)
        return copy.stat().st_size


def gzip_bytes(path: Path) -> int:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        tar.add(path, arcname=path.name)
    return buf.tell()


def build_venv(
    work: Path, packages: tuple[str, ...], requirement: str | None, keep_pip: bool = False
) -> Path:
    venv = work / "opt" / "rotor"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    if requirement is not None:
        src = work / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, src / name)
        for pkg in packages:
            shutil.copytree(
                ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        subprocess.run([*pip, "install", "--no-cache-dir", requirement], cwd=src, check=True)
    if not keep_pip:
        subprocess.run([*pip, "uninstall", "-y", "pip", "setuptools"], check=True)
    return venv


IMPORT_ALL = """
import importlib, pkgutil, sys
for name in sys.argv[1:]:
    pkg = importlib.import_module(name)
    for m in pkgutil.walk_packages(pkg.__path__, name + "."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
"""


def smoke(venv: Path, packages: tuple[str, ...]) -> str:
    """Import every module of the image's packages from its venv, as the image would (bytecode
    writing off), and count files the imports created or changed under the venv (a read-only
    root filesystem would refuse them)."""
    before = {p: p.stat().st_mtime_ns for p in venv.rglob("*") if p.is_file()}
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORT_ALL, *packages],
        env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": str(venv / "bin")},
        capture_output=True,
        text=True,
    )
    after = {p: p.stat().st_mtime_ns for p in venv.rglob("*") if p.is_file()}
    writes = sum(1 for p, t in after.items() if before.get(p) != t)
    status = "ok" if out.returncode == 0 else "FAILED: " + out.stderr.strip().splitlines()[-1]
    return f"imports {status}, {writes} files written"


def top_entries(venv: Path, n: int = 8) -> list[tuple[str, int]]:
    site = next(venv.glob("lib/python*/site-packages"))
    sizes = [(p.name, disk_bytes(p)) for p in site.iterdir() if p.is_dir()]
    return sorted(sizes, key=lambda x: -x[1])[:n]


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="measure only images whose name starts with this")
    args = p.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    libdir = Path(str(sysconfig.get_config_var("LIBDIR")))
    with tempfile.TemporaryDirectory() as tmp:
        pip_bytes = disk_bytes(build_venv(Path(tmp), (), None, keep_pip=True))
    runtime = (
        disk_bytes(stdlib, SKIP_DIRS)
        + sum(stripped_bytes(p) for p in libdir.glob("libpython*.so*") if not p.is_symlink())
        + pip_bytes
    )
    print(f"python {sys.version.split()[0]} on {sys.platform}")
    print(
        f"base image estimate: Python runtime {mib(runtime)} MiB (this interpreter's stdlib, "
        f"lib-dynload, stripped libpython, pip and setuptools; no config-*, .pyc or tests, "
        f"as in the official slim image) + "
        f"debian:bookworm-slim {DEBIAN_SLIM_MIB} MiB (quoted) = "
        f"{runtime / 2**20 + DEBIAN_SLIM_MIB:.0f} MiB"
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = build_venv(Path(tmp), (), None)
        base_disk, base_gz = disk_bytes(base), gzip_bytes(base)
    print(f"baseline, empty venv without pip: {base_disk} bytes, {base_gz} bytes gzip")
    print()
    print("| image | /opt/rotor MiB | gzip MiB | largest packages (MiB) | every module imports |")
    print("|---|---|---|---|---|")
    for name, (packages, requirement) in IMAGES.items():
        if args.only and not name.startswith(args.only):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            venv = build_venv(Path(tmp), packages, requirement)
            disk, gz = disk_bytes(venv), gzip_bytes(venv)
            top = ", ".join(f"{n} {mib(s)}" for n, s in top_entries(venv))
            check = smoke(venv, packages)
        print(f"| {name} | {mib(disk)} | {mib(gz)} | {top} | {check} |")


if __name__ == "__main__":
    main()
