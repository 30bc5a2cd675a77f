"""The controller's client of the audit receiver: the error edge every transport has (a refused
token is permanent, no answer is retryable, an answer that is not a page is named), and a
refused token is not retried like a lost connection."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes import client
from prometheus_client import CollectorRegistry

from audit.app import make_events_app
from audit.receiver import Receiver
from controller import vaultsource
from controller.auditclient import fetch_events
from controller.kube import Kube
from controller.metrics import Metrics
from controller.operator import Controller
from controller.vaultsource import VaultSource
from rotor.auditwire import MAX_EVENTS_PER_PAGE, MAX_PAGE_BYTES, AuditEvent, EventsPage, WireError
from rotor.errors import ForbiddenError, UnavailableError
from rotor.settings.audit import AuditSettings
from rotor.settings.controller import ControllerSettings
from tests.conftest import free_port


def receiver(tmp_path: Path, token: str) -> Receiver:
    (tmp_path / "config.json").write_text(json.dumps({"paths": ["secret/shop/db"]}))
    (tmp_path / "events-token").write_text(token)
    settings = AuditSettings(
        host="127.0.0.1",
        socket_port=0,
        events_port=0,
        config_file=str(tmp_path / "config.json"),
        events_token_file=str(tmp_path / "events-token"),
    )
    return Receiver.create(settings, CollectorRegistry())


async def serve(app: web.Application) -> AsyncIterator[str]:
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("/")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[tuple[Receiver, str]]:
    r = receiver(tmp_path, "the-receivers-token")
    async for url in serve(make_events_app(r)):
        yield r, url


async def test_a_page_of_events_round_trips_through_the_one_wire_module(real) -> None:
    r, url = real
    r.queue.put(AuditEvent("secret/shop/db", 7, "2026-12-07T23:00:00Z", "alice"))
    async with aiohttp.ClientSession() as session:
        page = await fetch_events(session, url, 0, wait=0, token="the-receivers-token")
    assert page.events == (AuditEvent("secret/shop/db", 7, "2026-12-07T23:00:00Z", "alice", 1),)
    assert EventsPage.from_dict(page.to_dict()) == page


async def test_a_refused_token_is_forbidden_not_unavailable(real) -> None:
    _, url = real
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ForbiddenError) as e:
            await fetch_events(session, url, 0, wait=0, token="a-stale-token")
    assert e.value.status == 401
    assert "a-stale-token" not in str(e.value)


async def test_no_answer_is_unavailable() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UnavailableError):
            await fetch_events(session, f"http://127.0.0.1:{free_port()}", 0, wait=0)


def answering(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Application:
    async def events(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/events", events)
    return app


PAGE = {"epoch": "e1", "reset": False, "last": 1, "dropped": 0}
EVENT = {"seq": 1, "path": "secret/shop/db", "storeVersion": 2, "time": "t", "actor": "a"}


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"<html>a proxy's page</html>", "not JSON"),
        (json.dumps({**PAGE, "events": [{**EVENT, "storeVersion": "2"}]}).encode(), "events[0]"),
        (json.dumps({**PAGE, "last": -1, "events": []}).encode(), "last"),
        (json.dumps({**PAGE, "events": [EVENT] * (MAX_EVENTS_PER_PAGE + 1)}).encode(), "events"),
        (b" " * (MAX_PAGE_BYTES + 1), f"over {MAX_PAGE_BYTES} bytes"),
    ],
)
async def test_an_answer_that_is_not_a_page_is_named(body: bytes, names: str) -> None:
    async for url in serve(answering(200, body)):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(WireError) as e:
                await fetch_events(session, url, 0, wait=0)
        assert names in str(e.value)


async def test_a_busy_receivers_retry_after_is_carried() -> None:
    async for url in serve(answering(503, b"busy", {"Retry-After": "7"})):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(UnavailableError) as e:
                await fetch_events(session, url, 0, wait=0)
    assert (e.value.status, e.value.delay) == (503, 7.0)


async def polls_in(seconds: float, url: str, token_file: Path) -> int:
    """How many times a VaultSource polls ``url`` in ``seconds``."""
    settings = replace(
        ControllerSettings(),
        audit_receiver_url=url,
        audit_receiver_token_file=str(token_file),
    )
    ctl = Controller(settings, Kube(client.ApiClient()), None, Metrics(CollectorRegistry()))  # type: ignore[arg-type]
    task = asyncio.create_task(VaultSource(ctl).loop())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return int(ctl.metrics.errors.labels("audit")._value.get())


def counting(app: web.Application, counted: list[int]) -> web.Application:
    @web.middleware
    async def count(request: web.Request, handler: Callable[..., Any]) -> Any:
        counted.append(1)
        return await handler(request)

    app.middlewares.append(count)
    return app


async def test_a_refused_token_is_reported_once_not_retried_like_a_blip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(vaultsource, "RETRY_MIN", 0.05)  # a lost connection: back at once
    token = tmp_path / "controller-token"
    token.write_text("a-stale-token")
    counted: list[int] = []
    async for url in serve(counting(make_events_app(receiver(tmp_path, "new-token")), counted)):
        with caplog.at_level(logging.WARNING, "rotor.controller.vaultsource"):
            failures = await polls_in(1.0, url, token)
    assert (failures, len(counted)) == (1, 1)  # then every RETRY_MAX (30 s)
    (record,) = [r for r in caplog.records if r.name == "rotor.controller.vaultsource"]
    assert record.levelno == logging.ERROR
    assert "ROTOR_AUDIT_RECEIVER_TOKEN_FILE" in record.getMessage()
    assert "a-stale-token" not in caplog.text
    # no answer at all is a blip: retried with backoff from RETRY_MIN
    assert await polls_in(1.0, f"http://127.0.0.1:{free_port()}", token) >= 3
