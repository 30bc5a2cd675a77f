"""The receiver's HTTP apps: ``GET /events`` (the controller's long-poll), ``/healthz`` and
``/metrics``; ``POST /v1/audit`` (a forwarder's ingest)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from audit.entries import entries, parse_line
from audit.inputs import FileTail, handle_socket
from audit.receiver import Receiver
from rotor.auditwire import EventsPage
from rotor.errors import InvalidSpec

log = logging.getLogger(__name__)


def _token(path: str) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise InvalidSpec(path, f"cannot read the token file: {exc.strerror}", "") from None


def _bearer_ok(request: web.Request, token: str) -> bool:
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


RECEIVER: web.AppKey[Receiver] = web.AppKey("receiver", Receiver)


def make_ingest_app(receiver: Receiver) -> web.Application:
    """``POST /v1/audit`` for a forwarder; needs the bearer token."""
    token = _token(receiver.settings.ingest_token_file)
    if not token:
        raise InvalidSpec(
            "ROTOR_AUDIT_INGEST_TOKEN_FILE", "the HTTP ingest needs a non-empty bearer token", ""
        )

    async def ingest(request: web.Request) -> web.Response:
        r = request.app[RECEIVER]
        if not _bearer_ok(request, token):
            r.metrics.rejected.labels("http").inc()
            return web.json_response({"error": "a valid bearer token is required"}, status=401)
        accepted = 0
        for entry in entries(await request.read()):
            if r.accept(entry) is not None:
                accepted += 1
        return web.json_response({"events": accepted}, status=202)

    app = web.Application(client_max_size=receiver.settings.max_line * 16)
    app[RECEIVER] = receiver
    app.router.add_post("/v1/audit", ingest)
    return app


TOKEN: web.AppKey[str] = web.AppKey("events_token", str)


async def events(request: web.Request) -> web.Response:
    """``GET /events?since=N&wait=S&epoch=E``: the long-poll (a new epoch starts from 0)."""
    r = request.app[RECEIVER]
    if not _bearer_ok(request, request.app[TOKEN]):
        return web.json_response({"error": "a valid bearer token is required"}, status=401)
    try:
        since = int(request.query.get("since", "0"))
        wait = float(request.query.get("wait", "0"))
    except ValueError:
        return web.json_response(
            {"error": "since must be an integer and wait a number of seconds"}, status=400
        )
    epoch = request.query.get("epoch", "")
    reset = bool(epoch) and epoch != r.queue.epoch
    if reset:
        since = 0
    got = await r.queue.wait_since(since, min(max(wait, 0.0), r.settings.max_wait))
    page = EventsPage(r.queue.epoch, reset, r.queue.last, r.queue.dropped, tuple(got))
    return web.json_response(page.to_dict())


async def healthz(request: web.Request) -> web.Response:
    r = request.app[RECEIVER]
    dead = sorted(name for name, t in r.tasks.items() if t.done())
    inputs = dict(r.inputs) | {name: "stopped" for name in dead}
    ok = all(state == "ok" for state in inputs.values())
    body = {
        "ok": ok,
        "paths": len(r.config.paths),
        "config": r.config_error or "ok",
        "inputs": inputs,
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[RECEIVER].metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- the inputs, run by the app (its cleanup_ctx) -------------------------------------------------
async def socket_listener(app: web.Application) -> AsyncIterator[None]:
    r = app[RECEIVER]
    server = await asyncio.start_server(
        functools.partial(handle_socket, r),
        r.settings.host,
        r.settings.socket_port,
        limit=r.settings.max_line,
    )
    log.info("audit socket listening on %s:%d", r.settings.host, r.settings.socket_port)
    yield
    server.close()
    await server.wait_closed()


@contextlib.asynccontextmanager
async def _running(r: Receiver, name: str, coro: Any) -> AsyncIterator[None]:
    """Run ``coro`` as the receiver's task ``name`` while the app runs."""
    task = r.tasks[name] = asyncio.create_task(coro)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def config_poller(app: web.Application) -> AsyncIterator[None]:
    r = app[RECEIVER]

    async def poll() -> None:
        r.reload_config()

    async def later() -> None:
        await asyncio.sleep(r.settings.config_poll)
        await r.supervise("config", poll, r.settings.config_poll)

    r.inputs["config"] = "ok"
    async with _running(r, "config", later()):
        yield


async def file_tailer(app: web.Application) -> AsyncIterator[None]:
    r = app[RECEIVER]
    follower = FileTail(r.settings.tail_file, r.settings.max_line)

    async def follow() -> None:
        for line in await asyncio.to_thread(follower.read_lines):
            r.accept(parse_line(line))
        too_long = follower.take_too_long()
        if too_long:
            r.metrics.entries.labels("too_long").inc(too_long)
            log.warning(
                "audit file: dropped %d entries longer than %d bytes (ROTOR_AUDIT_MAX_LINE)",
                too_long,
                r.settings.max_line,
            )

    await asyncio.to_thread(follower.read_lines)  # note where the file ends now
    log.info("audit file: following %s", r.settings.tail_file)
    async with _running(r, "file", r.supervise("file", follow, r.settings.tail_poll)):
        yield


def make_events_app(receiver: Receiver, *, serve_socket: bool = False) -> web.Application:
    """The controller's side: ``GET /events``, ``/healthz``, ``/metrics``.

    With ``serve_socket`` the app's ``cleanup_ctx`` also runs the socket-device listener and the
    config poller, so one app object is the whole receiver.
    """
    app = web.Application()
    app[RECEIVER] = receiver
    app[TOKEN] = _token(receiver.settings.events_token_file)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    if serve_socket:
        app.cleanup_ctx.append(config_poller)
        if receiver.settings.socket_port:
            app.cleanup_ctx.append(socket_listener)
        if receiver.settings.tail_file:
            app.cleanup_ctx.append(file_tailer)
    return app
