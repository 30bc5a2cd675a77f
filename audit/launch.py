"""``rotor-audit-receiver``'s entry point: :func:`audit.main.main`, or one line naming the
``audit`` extra when its dependencies are not installed (:mod:`rotor.extras`)."""

from __future__ import annotations

from rotor.extras import Main, launch


def _load() -> Main:
    from audit.main import main

    return main


def main() -> int | None:
    return launch(_load, "rotor-audit-receiver", "audit")
