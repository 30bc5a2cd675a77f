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
    """While one large review is being decided, /healthz and other reviews are answered (a
    review over app.INLINE_BODY is decided off the event loop; a small one, bounded, on it)."""
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
        large = pod({"rotor.dev/ro": "slow", "note": "x" * app.INLINE_BODY})
        slow = asyncio.create_task(served.post(s, review(large)))
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


# -- containers x secrets (issue 24, item 1) ------------------------------------------------------
SECRETS_64 = ",".join(f"s{i:02d}" for i in range(64))


def many_containers(n: int, annotations: dict[str, str]) -> dict:
    return pod(annotations, containers=[{"name": f"c{i}", "image": "x"} for i in range(n)])


@pytest.mark.parametrize(
    ("delivery", "containers", "what"),
    [("volume", 2000, "volume mounts"), ("env", 2000, "envFrom entries"), ("agent", 6000, "")],
)
async def test_a_pod_of_many_containers_x_secrets_is_denied_with_the_bound_and_the_fix(
    served: Served, delivery: str, containers: int, what: str
):
    """A 34 KiB review of 2,000 containers x 64 secrets took the webhook to 134 MiB (its limit
    is 128Mi) and 20,000 containers answered 135 MiB; now the patch is never built."""
    annotations = {"rotor.dev/ro": SECRETS_64}
    if delivery != "agent":
        annotations["rotor.dev/delivery"] = delivery
    hostile = review(many_containers(containers, annotations))
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.post(f"{served.url}/mutate", json=hostile, ssl=served.client_ssl) as r:
            assert r.status == 200
            raw = await r.read()
        other = await served.post(s, review(pod({"rotor.dev/rw": "db"})))
    assert len(raw) < 4096  # a denial, not a patch
    denied = json.loads(raw)["response"]
    assert denied["allowed"] is False
    message = denied["status"]["message"]
    assert "spec.containers" in message
    assert f"{containers} containers" in message
    assert "Rotor adds at most 4096 to one pod" in message
    assert what in message
    assert "fewer secrets" in message
    assert other["response"]["allowed"] is True


def test_64_containers_x_64_secrets_is_still_injected():
    from tests.webhook.kube import apply
    from webhook.admission import mutate

    p = many_containers(64, {"rotor.dev/ro": SECRETS_64, "rotor.dev/delivery": "volume"})
    answer = mutate(review(p), WebhookSettings())
    assert answer["response"]["allowed"] is True
    after = apply(p, answer)
    assert all(len(c["volumeMounts"]) == 64 for c in after["spec"]["containers"])
    assert len(after["spec"]["volumes"]) == 64


def test_a_patch_over_1_mib_is_denied():
    """Each entry is bounded in count; a long mount path makes each one large."""
    from webhook.admission import mutate

    annotations = {
        "rotor.dev/ro": SECRETS_64,
        "rotor.dev/delivery": "volume",
        "rotor.dev/mount-path": "/" + "m" * 250 + ("/" + "m" * 250) * 7,
    }
    answer = mutate(review(many_containers(60, annotations)), WebhookSettings())
    denied = answer["response"]
    assert denied["allowed"] is False, "the patch was built"
    assert "at most 1024 KiB" in denied["status"]["message"]
    assert "shorter rotor.dev/mount-path" in denied["status"]["message"]
