"""A plain `pip install .` has only the agent's dependencies: the other console scripts say in
one line which extra to install instead of ending in ModuleNotFoundError."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

BLOCK = "import sys; sys.modules[{module!r}] = None; "
SCRIPTS = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
    "scripts"
]


def script_call(command: str) -> str:
    """Python that runs ``command``'s console script as pip's wrapper does."""
    module, func = SCRIPTS[command].split(":")
    return f"from {module} import {func} as main; sys.exit(main())"


@pytest.mark.parametrize(
    ("command", "module", "extra"),
    [
        ("rotor-controller", "kubernetes", "controller"),
        ("rotor-controller", "kopf", "controller"),
        ("rotor-webhook", "aiohttp", "webhook"),
        ("rotor-audit-receiver", "aiohttp", "audit"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(command: str, module: str, extra: str) -> None:
    code = BLOCK.format(module=module) + script_call(command)
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"{command}: the Python package {module!r} is missing")
    assert f"pip install '.[{extra}]'" in lines[0]


def test_with_its_extra_the_entry_point_runs_the_command() -> None:
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from webhook.launch import main; sys.exit(main())",
            "--version",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "rotor-webhook" in p.stdout
