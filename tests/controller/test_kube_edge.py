"""controller.kube, the controller's API edge: each representative failure arrives as the right
typed error with the answer carried (status, headers, Status body). Permissions, conflicts and
TLS against the secure strict emulator; throttling and 503 from a scripted server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import pytest
from aiohttp import web
from kubernetes import client

from controller.kube import ForbiddenError, Kube, path
from rotor.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
)
from rotor.errors import ForbiddenError as AnyForbidden
from tests.kubeemu import EmulatorThread

NS = "shop"
Answer = Callable[[], web.Response]


@pytest.fixture(scope="module")
def secure() -> Iterator[EmulatorThread]:
    with EmulatorThread([], secure=True) as emu:
        yield emu


@contextmanager
def kube_for(cfg: client.Configuration) -> Iterator[Kube]:
    with client.ApiClient(cfg) as api:
        # no kept-alive connection outlives a test (the emulator would find it open at its end)
        api.set_default_header("Connection", "close")
        kube = Kube(api, concurrency=1)
        try:
            yield kube
        finally:
            kube.close()
            kube.api_client.rest_client.pool_manager.clear()  # its kept-alive sockets


def test_a_refused_permission_is_forbidden_with_the_status_body(secure: EmulatorThread) -> None:
    token = secure.add_user("nobody")
    with kube_for(secure.configuration(token)) as kube, pytest.raises(ForbiddenError) as e:
        kube.request("GET", path("v1", "secrets", NS, "db"))
    assert e.value.status == 403
    assert isinstance(e.value.payload, dict)
    assert e.value.payload["reason"] == "Forbidden"
    assert "nobody" in str(e.value)
    assert isinstance(e.value, AnyForbidden)


def test_an_unknown_token_is_forbidden_401(secure: EmulatorThread) -> None:
    with kube_for(secure.configuration("x")) as kube, pytest.raises(ForbiddenError) as e:
        kube.request("GET", path("v1", "secrets", NS))
    assert e.value.status == 401


def test_a_stale_resource_version_is_a_conflict(secure: EmulatorThread) -> None:
    with kube_for(secure.configuration()) as kube:
        conflict_and_not_found(kube)


def conflict_and_not_found(kube: Kube) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": NS},
        "data": {"a": "1"},
    }
    made = kube.create(path("v1", "configmaps", NS), body)
    kube.patch(path("v1", "configmaps", NS, "cm"), {"data": {"a": "2"}})
    stale = {"metadata": {"resourceVersion": made["metadata"]["resourceVersion"]}}
    with pytest.raises(ConflictError) as e:
        kube.patch(path("v1", "configmaps", NS, "cm"), {**stale, "data": {"a": "3"}})
    assert e.value.status == 409
    assert isinstance(e.value.payload, dict)
    assert e.value.payload["reason"] == "Conflict"
    with pytest.raises(NotFoundError) as nf:
        kube.request("GET", path("v1", "configmaps", NS, "missing"))
    assert nf.value.status == 404


def test_an_untrusted_certificate_is_unavailable_and_says_tls(secure: EmulatorThread) -> None:
    cfg = secure.configuration()
    cfg.ssl_ca_cert = None  # the system's trust store: the emulator's CA is not in it
    cfg.retries = False
    with kube_for(cfg) as kube, pytest.raises(UnavailableError, match=r"answer \(TLS: ") as e:
        kube.request("GET", path("v1", "secrets", NS))
    assert e.value.status is None


def test_a_refused_connection_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.retries = False
    refused = r"did not answer \(Connection refused\)"
    with kube_for(cfg) as kube, pytest.raises(UnavailableError, match=refused) as e:
        kube.request("GET", path("v1", "secrets", NS))
    assert e.value.status is None


# -- throttling and outages, scripted ----------------------------------------------------------
@pytest.fixture
async def answering() -> AsyncIterator[tuple[list[Answer], str]]:
    """A server that gives the scripted answers in order (the last one again and again)."""
    answers: list[Answer] = []
    seen: list[int] = []

    async def handle(_request: web.Request) -> web.StreamResponse:
        seen.append(1)
        return answers[min(len(seen), len(answers)) - 1]()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield answers, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def status_answer(code: int, reason: str, headers: dict[str, str] | None = None) -> Answer:
    body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": "m"}
    return lambda: web.json_response(body, status=code, headers=headers)


@pytest.mark.parametrize(
    ("code", "reason", "headers", "delay"),
    [
        (429, "TooManyRequests", {"Retry-After": "0"}, 0.0),
        (503, "ServiceUnavailable", {}, None),
        (500, "InternalError", {}, None),
    ],
)
async def test_throttling_and_outages_are_unavailable_with_the_answer(
    answering: tuple[list[Answer], str],
    code: int,
    reason: str,
    headers: dict[str, str],
    delay: float | None,
) -> None:
    answers, url = answering
    answers.append(status_answer(code, reason, headers))
    cfg = client.Configuration()
    cfg.host = url
    with kube_for(cfg) as kube, pytest.raises(UnavailableError) as e:
        await kube.aget(path("v1", "secrets", NS, "db"))
    assert e.value.status == code
    assert e.value.delay == delay
    assert isinstance(e.value.payload, dict)
    assert e.value.payload["reason"] == reason
    assert reason in str(e.value)
    if headers:
        assert e.value.headers["retry-after"] == headers["Retry-After"]
