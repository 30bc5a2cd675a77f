"""Console scripts that need an optional extra: one line naming the extra when it is missing.

A plain ``pip install .`` installs every console script but only the agent's dependencies, so
``rotor-controller`` (kopf, kubernetes), ``rotor-webhook`` and ``rotor-audit-receiver`` (aiohttp)
would end in ``ModuleNotFoundError``. Their entry points load the real ``main`` through
:func:`launch`, which turns a missing third-party module into one line and exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

OURS = ("rotor", "agent", "webhook", "controller", "audit", "rotorctl")
Main = Callable[[], int | None]


def missing_extra(command: str, extra: str, module: str) -> str:
    """The line for a missing third-party ``module`` of ``extra``."""
    return (
        f"{command}: the Python package {module!r} is missing: install the {extra!r} extra, "
        f"pip install '.[{extra}]' in a checkout of Rotor (a plain `pip install .` has only "
        "the agent's dependencies)"
    )


def launch(load: Callable[[], Main], command: str, extra: str) -> int | None:
    """Import the real entry point with ``load`` and run it; a module missing from outside
    Rotor is reported as the extra to install, on stderr, with exit status 1."""
    try:
        main = load()
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if not top or top in OURS:
            raise
        print(missing_extra(command, extra, top), file=sys.stderr)
        return 1
    return main()
