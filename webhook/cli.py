"""``rotor-webhook``: serve admission over HTTPS and metrics over plain HTTP until SIGTERM.

Every setting comes from ``ROTOR_*`` environment variables (see
:class:`rotor.settings.webhook.WebhookSettings` and docs/webhook.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web
from prometheus_client import CollectorRegistry

from rotor import __version__, logs
from rotor.errors import InvalidSpec
from rotor.settings.webhook import WebhookSettings
from webhook.app import make_app, make_metrics_app
from webhook.tls import CertReloader

log = logging.getLogger("webhook")


async def serve(
    settings: WebhookSettings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Run both servers until ``stop`` is set."""
    registry = registry or CollectorRegistry()
    certs = CertReloader(settings.cert_file, settings.key_file)
    runner = web.AppRunner(make_app(settings, registry=registry, certs=certs), access_log=None)
    metrics = web.AppRunner(make_metrics_app(registry), access_log=None)
    await runner.setup()
    await metrics.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port, ssl_context=certs.context).start()
        await web.TCPSite(metrics, settings.host, settings.metrics_port).start()
        log.info(
            "serving admission on https://%s:%d/mutate, metrics on http://%s:%d/metrics",
            settings.host,
            settings.port,
            settings.host,
            settings.metrics_port,
        )
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        await metrics.cleanup()


async def _main(settings: WebhookSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rotor-webhook",
        description="Rotor's mutating admission webhook: injects the rotation agent into pods. "
        "Configured by ROTOR_* environment variables (see docs/webhook.md).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)
    try:
        settings = WebhookSettings.from_env()
        logs.setup(settings.log_level)
        asyncio.run(_main(settings))
    except InvalidSpec as e:
        print(f"rotor-webhook: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the port is taken
        print(f"rotor-webhook: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
