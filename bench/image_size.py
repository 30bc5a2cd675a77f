"""Real sizes of the two images and their base, as ``podman image ls`` lists them.

Builds nothing: run ``make images LOCAL_BASE=1 IMAGE_TAG=TAG`` first (or pass ``--build``). For
each image it prints the size ``podman image ls`` shows, the ratio to the base measured in the
same run (the baseline), Rotor's own part (image minus base: the ``/opt/rotor`` venv), and the
largest packages in that venv (``du`` inside the image, as root, read-only). Then it checks each
image the way the chart runs it: every module of the packages its Dockerfile copies imports
under uid 65532 with a read-only root filesystem.

    python bench/image_size.py [--tag dev] [--build]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "tests" / "images" / "containers.conf"
BASE = "localhost/rotor-python:3.11-bookworm"
IMAGES = {
    # name: (image repository, packages its Dockerfile copies)
    "agent": ("localhost/rotor-agent", ("rotor", "agent")),
    "controller + webhook": ("localhost/rotor-controller", ("rotor", "controller", "webhook")),
}
SITE = "/opt/rotor/lib/python3.11/site-packages"
MB = 1000 * 1000  # podman image ls counts in decimal MB


def podman(*args: str) -> str:
    env = os.environ | {"CONTAINERS_CONF": str(CONF)}
    p = subprocess.run(["podman", *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"podman {args[0]}: exit {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p.stdout


def size(image: str) -> int:
    """Bytes, as `podman image ls` counts them (the sum of the unpacked layers)."""
    rows = json.loads(podman("image", "ls", "--format", "json", image))
    if not rows:
        sys.exit(f"{image} is not built: make images LOCAL_BASE=1 IMAGE_TAG=<tag>")
    return int(rows[0]["Size"])


def listed(image: str) -> str:
    return f"{image} {podman('image', 'inspect', '--format', '{{.Size}}', image).strip()} bytes"


def largest(image: str, n: int = 6) -> list[tuple[str, int]]:
    out = podman(
        "run", "--rm", "--read-only", "--network", "none", "--entrypoint", "sh", image,
        "-c", f"du -sk {SITE}/* | sort -rn | head -n {n * 2}",
    )  # fmt: skip
    rows = []
    for line in out.splitlines():
        kib, path = line.split(maxsplit=1)
        name = Path(path).name
        if not name.endswith((".dist-info", ".pth")):
            rows.append((name, int(kib) * 1024))
    return rows[:n]


def imports(image: str, packages: tuple[str, ...]) -> str:
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkgs = {list(packages)!r}\n"
        "bad = []\n"
        "for p in pkgs:\n"
        "    m = importlib.import_module(p)\n"
        "    for i in pkgutil.walk_packages(m.__path__, p + '.'):\n"
        "        if i.name.endswith('__main__'): continue\n"
        "        try: importlib.import_module(i.name)\n"
        "        except Exception as e: bad.append(f'{i.name}: {type(e).__name__}')\n"
        "print('every module imports' if not bad else '; '.join(bad))\n"
    )
    return podman(
        "run", "--rm", "--read-only", "--cap-drop", "ALL", "--user", "65532:65532",
        "--network", "none", "--entrypoint", "python", image, "-c", code,
    ).strip()  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", default="dev", help="IMAGE_TAG the images were built with")
    ap.add_argument("--build", action="store_true", help="run make images LOCAL_BASE=1 first")
    args = ap.parse_args()
    if args.build:
        subprocess.run(
            ["make", "-C", str(ROOT), "images", "LOCAL_BASE=1", f"IMAGE_TAG={args.tag}"],
            check=True,
        )
    base = size(BASE)
    print(f"podman {podman('--version').split()[-1]}; podman image ls:")
    print(f"  {listed(BASE)}")
    for repo, _ in IMAGES.values():
        print(f"  {listed(f'{repo}:{args.tag}')}")
    print()
    print(
        "| image | podman image ls | / base | Rotor's part (image - base) | largest packages (MB) |"
    )
    print("|---|---|---|---|---|")
    print(f"| base `{BASE}` (baseline) | {base / MB:.0f} MB | 1.00 | - | - |")
    checks = []
    for name, (repo, packages) in IMAGES.items():
        image = f"{repo}:{args.tag}"
        total = size(image)
        top = ", ".join(f"{n} {b / MB:.1f}" for n, b in largest(image))
        print(
            f"| {name} `{image}` | {total / MB:.0f} MB | {total / base:.2f} | "
            f"{(total - base) / MB:.0f} MB | {top} |"
        )
        checks.append(f"{name}: {imports(image, packages)}")
    print()
    for line in checks:
        print(line)


if __name__ == "__main__":
    main()
