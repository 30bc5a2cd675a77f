"""``rotor-webhook``'s entry point: :func:`webhook.cli.main`, or one line naming the
``webhook`` extra when its dependencies are not installed (:mod:`rotor.extras`)."""

from __future__ import annotations

from rotor.extras import Main, launch


def _load() -> Main:
    from webhook.cli import main

    return main


def main() -> int | None:
    return launch(_load, "rotor-webhook", "webhook")
