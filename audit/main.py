"""The ``rotor-audit-receiver`` process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence

from aiohttp import web

from audit.app import make_events_app, make_ingest_app
from audit.receiver import Receiver
from rotor import logs
from rotor.errors import InvalidSpec
from rotor.settings.audit import AuditSettings

log = logging.getLogger(__name__)


async def serve(settings: AuditSettings, stop: asyncio.Event | None = None) -> None:
    receiver = Receiver.create(settings)
    runners = []
    apps = [(make_events_app(receiver, serve_socket=True), settings.events_port)]
    if settings.ingest_port:
        apps.append((make_ingest_app(receiver), settings.ingest_port))
    try:
        for app, port in apps:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, settings.host, port).start()
            runners.append(runner)
        log.info("audit receiver: events on %s:%d", settings.host, settings.events_port)
        await (stop or asyncio.Event()).wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rotor-audit-receiver",
        description="Receive Vault/OpenBao audit entries and queue writes to referenced paths "
        "for the Rotor controller. Configured by ROTOR_AUDIT_* variables.",
    )
    parser.add_argument("--config", help="the config file (overrides ROTOR_AUDIT_CONFIG)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.config:
        env["ROTOR_AUDIT_CONFIG"] = args.config
    try:
        settings = AuditSettings.from_env(env)
    except InvalidSpec as exc:
        print(f"rotor-audit-receiver: {exc}")
        return 2
    logs.setup(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0
