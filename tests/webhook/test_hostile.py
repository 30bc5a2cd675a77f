"""The real webhook under hostile input: a review the size of the API server's limit is answered
at once, and a slow decision never holds back other requests (the work is off the event loop)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from prometheus_client import CollectorRegistry

from rotor.annotations import MAX_SECRETS
from rotor.settings.webhook import WebhookSettings
from tests.conftest import free_port
from tests.webhook.kube import pod, review
from tests.webhook.test_server import SecretVolume
from webhook.cli import serve

ANNOTATION_LIMIT = 256 * 1024  # the API server's limit on all annotations of an object
TIMEOUT = aiohttp.ClientTimeout(total=30)


class Served:
    def __init__(self, url: str, client_ssl: ssl.SSLContext) -> None:
        self.url = url
        self.client_ssl = client_ssl

    async def post(self, s: aiohttp.ClientSession, body: dict) -> dict:
        async with s.post(f"{self.url}/mutate", json=body, ssl=self.client_ssl) as r:
            assert r.status == 200, await r.text()
            return json.loads(await r.read())


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    ca = trustme.CA()
    volume = SecretVolume(tmp_path / "tls")
    volume.write(ca.issue_cert("127.0.0.1"))
    settings = WebhookSettings(
        host="127.0.0.1",
        port=free_port(),
        metrics_port=free_port(),
        cert_file=str(volume.root / "tls.crt"),
        key_file=str(volume.root / "tls.key"),
    )
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, registry=CollectorRegistry(), started=started))
    await asyncio.wait_for(started.wait(), 10)
    yield Served(f"https://127.0.0.1:{settings.port}", client_ssl)
    stop.set()
    await asyncio.wait_for(task, 10)


def many_names(length: int) -> str:
    """Distinct valid names, comma-separated, ``length`` characters in all."""
    out, n, size = [], 0, 0
    while size < length:
        name = f"s{n:06d}"
        out.append(name)
        size += len(name) + 1
        n += 1
    return ",".join(out)[:length].rstrip(",")


async def test_a_256_kib_annotation_is_denied_and_others_are_answered(served: Served):
    hostile = review(pod({"rotor.dev/ro": many_names(ANNOTATION_LIMIT - 100)}))
    ordinary = review(pod({"rotor.dev/rw": "db"}))
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        answers = await asyncio.gather(
            served.post(s, hostile), *(served.post(s, ordinary) for _ in range(10))
        )
    denied = answers[0]["response"]
    assert denied["allowed"] is False
    assert "rotor.dev/ro" in denied["status"]["message"]
    assert f"at most {MAX_SECRETS} secrets" in denied["status"]["message"]
    assert all(a["response"]["allowed"] and "patch" in a["response"] for a in answers[1:])


async def test_a_slow_decision_does_not_hold_back_other_requests(served: Served, monkeypatch):
    """While one review is being decided, /healthz and other reviews are answered."""
    from webhook import app

    release, entered = threading.Event(), threading.Event()
    real = app.decide

    def decide(review_in: object, settings: WebhookSettings):
        ann = review_in["request"]["object"]["metadata"].get("annotations", {})  # type: ignore[index]
        if ann.get("rotor.dev/ro") == "slow":
            entered.set()
            release.wait(20)  # bounded: on an event loop this would block everything meanwhile
        return real(review_in, settings)

    monkeypatch.setattr(app, "decide", decide)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        slow = asyncio.create_task(served.post(s, review(pod({"rotor.dev/ro": "slow"}))))
        for _ in range(2000):  # until the slow review is inside decide()
            if entered.is_set():
                break
            await asyncio.sleep(0.01)
        assert entered.is_set()
        try:
            async with s.get(f"{served.url}/healthz", ssl=served.client_ssl) as r:
                assert r.status == 200
            other = await served.post(s, review(pod({"rotor.dev/rw": "db"})))
            assert other["response"]["allowed"] is True
            assert not slow.done()  # answered while the slow one was still being decided
        finally:
            release.set()
        assert (await slow)["response"]["allowed"] is True
