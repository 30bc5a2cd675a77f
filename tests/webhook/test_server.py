"""The real webhook (rotor-webhook's serve()) over real TLS in-process: admission, errors, metrics,
and a certificate swapped on disk the way a Kubernetes Secret volume swaps it."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from rotor.settings.webhook import WebhookSettings
from tests.conftest import free_port
from tests.webhook.kube import apply, pod, review, validate
from webhook.cli import serve
from webhook.tls import CertReloader


class SecretVolume:
    """A folder laid out like a kubelet Secret volume: files link into ``..data``, swapped whole."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir()
        for name in ("tls.crt", "tls.key"):
            (root / name).symlink_to(f"..data/{name}")

    def write(self, cert: trustme.LeafCert) -> None:
        self.generation += 1
        folder = self.root / f"..v{self.generation}"
        folder.mkdir()
        cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "both.pem"))
        cert.cert_chain_pems[0].write_to_path(str(folder / "tls.crt"))
        cert.private_key_pem.write_to_path(str(folder / "tls.key"))
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(folder.name)
        os.replace(tmp, self.root / "..data")


@dataclass
class Webhook:
    url: str
    metrics_url: str
    client_ssl: ssl.SSLContext
    ca: trustme.CA
    volume: SecretVolume
    port: int


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[Webhook]:
    ca = trustme.CA()
    volume = SecretVolume(tmp_path / "tls")
    volume.write(ca.issue_cert("127.0.0.1", "rotor-webhook.rotor-system.svc"))
    settings = WebhookSettings(
        host="127.0.0.1",
        port=free_port(),
        metrics_port=free_port(),
        cert_file=str(volume.root / "tls.crt"),
        key_file=str(volume.root / "tls.key"),
        max_body=64 * 1024,
    )
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, registry=CollectorRegistry(), started=started))
    await asyncio.wait_for(started.wait(), 10)
    yield Webhook(
        f"https://127.0.0.1:{settings.port}",
        f"http://127.0.0.1:{settings.metrics_port}",
        client_ssl,
        ca,
        volume,
        settings.port,
    )
    stop.set()
    await asyncio.wait_for(task, 10)


async def post(webhook: Webhook, body: dict) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{webhook.url}/mutate", json=body, ssl=webhook.client_ssl) as r,
    ):
        return r.status, await r.read()


async def test_injects_over_https(webhook: Webhook):
    p = pod({"rotor.dev/rw": "db"})
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{webhook.url}/mutate", json=review(p), ssl=webhook.client_ssl) as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            answer = await r.json()
        async with s.get(f"{webhook.url}/healthz", ssl=webhook.client_ssl) as r:
            assert r.status == 200
    assert answer["response"]["allowed"] is True
    validate(apply(p, answer))


async def test_denial_is_an_admission_answer_not_an_http_error(webhook: Webhook):
    p = pod({"rotor.dev/rw": "db", "rotor.dev/wait": "maybe"})
    status, raw = await post(webhook, review(p))
    assert status == 200
    resp = json.loads(raw)["response"]
    assert resp["allowed"] is False
    assert "rotor.dev/wait" in resp["status"]["message"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "not JSON"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "not JSON"),
        (b'{"kind": "Pod"}', {"Content-Type": "application/json"}, 400, "AdmissionReview"),
        (b"[]", {"Content-Type": "application/json"}, 400, "not an AdmissionReview"),
        (b"{}", {"Content-Type": "text/plain"}, 400, "application/json"),
        (b"{" + b" " * 70_000 + b"}", {"Content-Type": "application/json"}, 413, "larger than"),
    ],
)
async def test_bad_bodies_get_a_clear_4xx(webhook: Webhook, body, headers, status, words):
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{webhook.url}/mutate", data=body, headers=headers, ssl=webhook.client_ssl) as r,
    ):
        assert r.status == status
        assert words in (await r.json())["error"]


async def test_wrong_method_and_path(webhook: Webhook):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{webhook.url}/mutate", ssl=webhook.client_ssl) as r:
            assert r.status == 405
        async with s.post(f"{webhook.url}/nope", ssl=webhook.client_ssl) as r:
            assert r.status == 404


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_on_the_plain_port(webhook: Webhook):
    async with aiohttp.ClientSession() as s:
        for ann in ({"rotor.dev/rw": "db"}, {"rotor.dev/ro": "db"}, {}, {"rotor.dev/rw": "X"}):
            await s.post(f"{webhook.url}/mutate", json=review(pod(ann)), ssl=webhook.client_ssl)
        await s.post(f"{webhook.url}/mutate", data=b"{", ssl=webhook.client_ssl)
        async with s.get(f"{webhook.metrics_url}/metrics") as r:
            assert r.status == 200
            samples = _samples(await r.text())
    requests = "rotor_webhook_requests_total"
    assert samples[(requests, (("result", "injected"),))] == 2
    assert samples[(requests, (("result", "skipped"),))] == 1
    assert samples[(requests, (("result", "denied"),))] == 1
    assert samples[(requests, (("result", "invalid"),))] == 1
    injections = "rotor_webhook_injections_total"
    assert samples[(injections, (("delivery", "agent"), ("mode", "rw")))] == 1
    assert samples[(injections, (("delivery", "agent"), ("mode", "ro")))] == 1
    assert samples[("rotor_webhook_request_duration_seconds_count", ())] == 5


async def _served_cert(port: int, client_ssl: ssl.SSLContext) -> bytes:
    """The DER certificate a new TLS client is offered."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ssl)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()
        await writer.wait_closed()


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


async def _wait_for_cert(webhook: Webhook, want: bytes, deadline_s: float = 20) -> None:
    deadline = time.monotonic() + deadline_s
    while (got := await _served_cert(webhook.port, webhook.client_ssl)) != want:
        assert time.monotonic() < deadline, "the new certificate was not served in time"
        await asyncio.sleep(0.05)
    assert got == want


async def test_swapped_certificate_is_served_to_new_clients_without_restart(webhook: Webhook):
    async with aiohttp.ClientSession() as s:  # an open keep-alive connection before the swap
        async with s.get(f"{webhook.url}/healthz", ssl=webhook.client_ssl) as r:
            assert r.status == 200
        renewed = webhook.ca.issue_cert("127.0.0.1")
        webhook.volume.write(renewed)
        await _wait_for_cert(webhook, _der(renewed))
        async with s.get(f"{webhook.url}/healthz", ssl=webhook.client_ssl) as r:
            assert r.status == 200  # the old connection still works
        async with s.get(f"{webhook.metrics_url}/metrics") as r:
            samples = _samples(await r.text())
    assert samples[("rotor_webhook_certificate_reloads_total", (("result", "ok"),))] >= 1


async def test_a_broken_pair_keeps_the_last_good_certificate(webhook: Webhook, tmp_path: Path):
    first = await _served_cert(webhook.port, webhook.client_ssl)
    bad = webhook.volume.generation + 1
    folder = webhook.volume.root / f"..v{bad}"
    folder.mkdir()
    webhook.ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(folder / "tls.crt"))
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(folder / "tls.key"))
    webhook.volume.generation = bad
    (webhook.volume.root / "..tmp").symlink_to(folder.name)
    os.replace(webhook.volume.root / "..tmp", webhook.volume.root / "..data")

    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as s:
        while True:  # wait until the reload was tried and failed
            async with s.get(f"{webhook.metrics_url}/metrics") as r:
                samples = _samples(await r.text())
            key = ("rotor_webhook_certificate_reloads_total", (("result", "error"),))
            if samples.get(key, 0) >= 1:
                break
            assert time.monotonic() < deadline, "the broken pair was never noticed"
            await asyncio.sleep(0.05)
    assert await _served_cert(webhook.port, webhook.client_ssl) == first
    good = webhook.ca.issue_cert("127.0.0.1")
    webhook.volume.write(good)  # the next good pair is picked up
    await _wait_for_cert(webhook, _der(good))


def test_missing_certificate_files_name_the_setting(tmp_path: Path):
    with pytest.raises(Exception, match="ROTOR_WEBHOOK_CERT_FILE"):
        CertReloader(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))


def test_cli_reports_bad_settings_without_a_traceback(capsys, monkeypatch):
    from webhook.cli import main

    monkeypatch.setenv("ROTOR_WEBHOOK_PORT", "http")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "ROTOR_WEBHOOK_PORT" in err
    assert "Traceback" not in err


async def test_review_json_round_trip(webhook: Webhook):
    """The answer is exactly what mutate() returns, as compact JSON."""
    from webhook.admission import mutate

    r_in = review(pod({"rotor.dev/ro": "db"}))
    _, raw = await post(webhook, r_in)
    assert json.loads(raw) == mutate(r_in, WebhookSettings())


async def test_a_failed_watch_is_retried(tmp_path: Path, monkeypatch):
    from webhook import tls

    ca = trustme.CA()
    volume = SecretVolume(tmp_path / "tls")
    volume.write(ca.issue_cert("127.0.0.1"))
    certs = CertReloader(str(volume.root / "tls.crt"), str(volume.root / "tls.key"))
    calls: list[int] = []
    real = tls.awatch

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("inotify watch limit reached")
        return real(*args, **kwargs)

    monkeypatch.setattr(tls, "awatch", flaky)
    monkeypatch.setattr(tls, "WATCH_RETRY_SECONDS", 0.01)
    stop, reloads = asyncio.Event(), []
    task = asyncio.create_task(certs.watch(stop, reloads.append, debounce_ms=50))
    deadline = time.monotonic() + 20
    while not reloads:  # rewrite until the second watcher, once set up, sees a change
        assert time.monotonic() < deadline, "no reload after the watcher failed once"
        volume.write(ca.issue_cert("127.0.0.1"))
        for _ in range(20):
            if reloads:
                break
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert len(calls) >= 2
    assert reloads[0] is True


def test_rotor_webhook_command_serves_and_stops_on_sigterm(tmp_path: Path):
    import signal
    import subprocess
    import urllib.request

    ca = trustme.CA()
    volume = SecretVolume(tmp_path / "tls")
    volume.write(ca.issue_cert("127.0.0.1"))
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "ROTOR_WEBHOOK_HOST": "127.0.0.1",
        "ROTOR_WEBHOOK_PORT": str(port),
        "ROTOR_WEBHOOK_METRICS_PORT": str(metrics_port),
        "ROTOR_WEBHOOK_CERT_FILE": str(volume.root / "tls.crt"),
        "ROTOR_WEBHOOK_KEY_FILE": str(volume.root / "tls.key"),
    }
    proc = subprocess.Popen(["rotor-webhook"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        client_ssl = ssl.create_default_context()
        ca.configure_trust(client_ssl)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/healthz", context=client_ssl, timeout=2
                ) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "rotor-webhook did not start"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            assert b"rotor_webhook_requests_total" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "serving admission on https://127.0.0.1" in err
