"""``rotor-controller``'s entry point: :func:`controller.main.main`, or one line naming the
``controller`` extra when its dependencies are not installed (:mod:`rotor.extras`)."""

from __future__ import annotations

from rotor.extras import Main, launch


def _load() -> Main:
    from controller.main import main

    return main


def main() -> int | None:
    return launch(_load, "rotor-controller", "controller")
