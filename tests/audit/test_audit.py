"""audit: the audit receiver, pure filter and queue, HTTP apps, and a real OpenBao
socket audit device."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
import uuid
from typing import Any

import aiohttp
import hvac
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.vault import TokenLogin, VaultStore
from audit.app import make_events_app, make_ingest_app
from audit.entries import parse_line
from audit.filter import classify
from audit.inputs import FileTail
from audit.main import main, serve
from audit.queue import EventQueue
from audit.receiver import Receiver
from controller.auditclient import fetch_events
from rotor.auditwire import AuditConfig, AuditEvent, render_config
from rotor.errors import InvalidSpec
from rotor.external import RotorMetadata
from rotor.settings.audit import AuditSettings
from tests.conftest import free_port
from tests.vault.conftest import start_bao

CONFIG = AuditConfig(
    paths=frozenset({"secret/shop/db", "kv/team/api"}),
    roles=frozenset({"rotor-agent"}),
    display_names=frozenset({"token-rotor"}),
    entity_ids=frozenset({"ent-rotor"}),
)


def entry(
    path: str = "secret/data/shop/db",
    op: str = "update",
    typ: str = "response",
    error: str = "",
    display: str = "token-alice",
    role: str = "",
    entity: str = "",
    version: Any = 3,
    mount: str | None = "secret/",
    mount_type: str = "kv",
) -> dict[str, Any]:
    """Shaped like OpenBao 2.x socket-device entries (values HMAC'd)."""
    auth: dict[str, Any] = {"display_name": display, "client_token": "hmac-sha256:ab"}
    if role:
        auth["metadata"] = {"role": role, "service_account_name": "api"}
    if entity:
        auth["entity_id"] = entity
    request: dict[str, Any] = {
        "operation": op,
        "path": path,
        "mount_type": mount_type,
        "data": {"data": {"password": "hmac-sha256:cd"}, "options": {"cas": 2}},
    }
    if mount is not None:
        request["mount_point"] = mount
    out: dict[str, Any] = {"time": "2026-11-24T08:42:36Z", "type": typ, "auth": auth}
    out["request"] = request
    if typ == "response":
        out["response"] = {"data": {"version": version, "custom_metadata": None}}
    if error:
        out["error"] = error
    return out


@pytest.mark.parametrize(
    ("e", "result"),
    [
        (entry(), "event"),
        (entry(op="create"), "event"),
        (entry(op="patch"), "event"),
        (entry(path="kv/data/team/api", mount="kv/"), "event"),
        (entry(mount=None), "event"),  # no mount_point: split at /data/
        (entry(typ="request"), "request"),
        (entry(error="1 error occurred: permission denied"), "failed"),
        (entry(op="read"), "not_a_write"),
        (entry(op="delete"), "not_a_write"),
        (entry(op="list"), "not_a_write"),
        (entry(path="secret/metadata/shop/db"), "not_kv"),
        (entry(path="sys/policy/x", mount="sys/", mount_type="system"), "not_kv"),
        (entry(path="secret/data/shop/other"), "unreferenced"),
        (entry(path="secret/data/shop/db/sub"), "unreferenced"),
        (entry(role="rotor-agent"), "rotor"),
        (entry(display="token-rotor"), "rotor"),
        (entry(entity="ent-rotor"), "rotor"),
        (entry(role="someone-else"), "event"),
    ],
)
def test_classify(e, result):
    got = classify(e, CONFIG)
    assert (got if isinstance(got, str) else "event") == result


def test_event_carries_path_version_and_actor_only():
    got = classify(entry(version=7), CONFIG)
    assert isinstance(got, AuditEvent)
    assert (got.path, got.store_version, got.actor) == ("secret/shop/db", 7, "token-alice")
    assert "hmac" not in json.dumps(got.to_dict())
    odd = classify(entry(version="7"), CONFIG)
    assert isinstance(odd, AuditEvent)
    assert odd.store_version is None


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b'{"type": "response"}\n', True),
        (b'vault-audit: {"type": "response"}\n', True),  # the device's `prefix` option
        (b"not json\n", False),
        (b"[1, 2]\n", False),
        (b"", False),
    ],
)
def test_parse_line(line, ok):
    assert (parse_line(line) is not None) == ok


def ev(path: str, version: int = 1) -> AuditEvent:
    return AuditEvent(path, version, "t", "alice")


def test_queue_coalesces_by_path_and_orders_by_sequence():
    q = EventQueue(max_paths=10)
    q.put(ev("a", 1))
    q.put(ev("b", 1))
    q.put(ev("a", 2))
    got = q.since(0)
    assert [(e.path, e.store_version, e.seq) for e in got] == [("b", 1, 2), ("a", 2, 3)]
    assert [e.path for e in q.since(2)] == ["a"]
    assert q.since(3) == []


def test_queue_bound_drops_the_oldest_path_and_counts():
    q = EventQueue(max_paths=2)
    for p in ("a", "b", "c"):
        q.put(ev(p))
    assert [e.path for e in q.since(0)] == ["b", "c"]
    assert q.dropped == 1


async def test_queue_long_poll_returns_when_an_event_arrives():
    q = EventQueue(max_paths=10)
    waiter = asyncio.create_task(q.wait_since(0, 30))
    await asyncio.sleep(0)
    assert not waiter.done()
    q.put(ev("a"))
    got = await asyncio.wait_for(waiter, 10)
    assert [e.path for e in got] == ["a"]


def test_config_round_trip_and_errors():
    text = render_config([("secret/", "/shop/db")], roles=["rotor-agent"])
    cfg = AuditConfig.from_dict(json.loads(text))
    assert cfg.paths == {"secret/shop/db"}
    assert cfg.roles == {"rotor-agent"}
    with pytest.raises(InvalidSpec, match="paths"):
        AuditConfig.from_dict({"paths": "secret/shop/db"})


def test_settings():
    s = AuditSettings.from_env({"ROTOR_AUDIT_ALLOWED_SOURCES": "10.42.0.0/16, 127.0.0.1"})
    assert ipaddress.ip_network("10.42.0.0/16") in s.allowed_sources
    with pytest.raises(InvalidSpec, match="ROTOR_AUDIT_ALLOWED_SOURCES"):
        AuditSettings.from_env({"ROTOR_AUDIT_ALLOWED_SOURCES": "vault"})
    with pytest.raises(InvalidSpec, match="ROTOR_AUDIT_INGEST_TOKEN_FILE"):
        AuditSettings.from_env({"ROTOR_AUDIT_INGEST_PORT": "9761"})


def make_receiver(tmp_path, config: AuditConfig = CONFIG, **kw: Any) -> Receiver:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config.to_dict()))
    settings = AuditSettings(
        host="127.0.0.1",
        socket_port=kw.pop("socket_port", 0),
        events_port=0,
        config_file=str(cfg),
        **kw,
    )
    return Receiver.create(settings, CollectorRegistry())


def test_config_reload_keeps_the_last_good_one(tmp_path):
    r = make_receiver(tmp_path)
    assert r.config.paths == CONFIG.paths
    cfg = tmp_path / "config.json"
    cfg.write_text(render_config([("secret", "new/path")]))
    assert r.reload_config()
    assert r.config.paths == {"secret/new/path"}
    cfg.write_text("{not json at all")
    assert not r.reload_config()
    assert r.config.paths == {"secret/new/path"}
    assert r.config_error


async def test_http_ingest_needs_the_bearer_token(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cr3t-ingest-token\n")
    r = make_receiver(tmp_path, ingest_port=1, ingest_token_file=str(token))
    async with TestClient(TestServer(make_ingest_app(r))) as client:
        body = json.dumps(entry()) + "\n" + json.dumps(entry(op="read")) + "\n"
        resp = await client.post("/v1/audit", data=body)
        assert resp.status == 401
        resp = await client.post("/v1/audit", data=body, headers={"Authorization": "Bearer no"})
        assert resp.status == 401
        auth = {"Authorization": "Bearer s3cr3t-ingest-token"}
        resp = await client.post("/v1/audit", data=body, headers=auth)
        assert (resp.status, await resp.json()) == (202, {"events": 1})
        # fluent-bit's json format: an array of records with the entry as a `log` string
        wrapped = json.dumps([{"log": json.dumps(entry(path="kv/data/team/api", mount="kv/"))}])
        resp = await client.post("/v1/audit", data=wrapped, headers=auth)
        assert (await resp.json()) == {"events": 1}
    assert [e.path for e in r.queue.since(0)] == ["secret/shop/db", "kv/team/api"]
    assert r.metrics.rejected.labels("http")._value.get() == 2


async def test_events_api_long_poll_epoch_and_token(tmp_path):
    token = tmp_path / "events-token"
    token.write_text("ctl-token")
    r = make_receiver(tmp_path, events_token_file=str(token))
    async with TestClient(TestServer(make_events_app(r))) as client:
        assert (await client.get("/events")).status == 401
        url = str(client.make_url("/")).rstrip("/")
        async with aiohttp.ClientSession() as session:
            page = await fetch_events(session, url, 0, wait=0, token="ctl-token")
            assert (page.events, page.last) == ((), 0)
            poll = asyncio.create_task(
                fetch_events(session, url, page.last, page.epoch, wait=30, token="ctl-token")
            )
            await asyncio.sleep(0.05)  # let the request reach the server; not a timing check
            r.accept(entry())
            page2 = await asyncio.wait_for(poll, 20)
            assert [e.path for e in page2.events] == ["secret/shop/db"]
            assert not page2.reset
            # a controller that knew another epoch (the receiver restarted) gets everything
            page3 = await fetch_events(session, url, 99, "old-epoch", wait=0, token="ctl-token")
            assert page3.reset
            assert [e.path for e in page3.events] == ["secret/shop/db"]
        metrics = await (await client.get("/metrics")).text()
        assert 'rotor_audit_entries_total{result="event"} 1.0' in metrics


async def test_socket_refuses_senders_that_are_not_allowed(tmp_path):
    port = free_port()
    r = make_receiver(
        tmp_path,
        socket_port=port,
        allowed_sources=(ipaddress.ip_network("10.0.0.0/8"),),
    )
    async with TestServer(make_events_app(r, serve_socket=True)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(json.dumps(entry()).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        try:
            closed = await asyncio.wait_for(reader.read(), 10) == b""
        except ConnectionResetError:  # closed with our line unread
            closed = True
        assert closed
        writer.close()
    assert r.queue.since(0) == []
    assert r.metrics.rejected.labels("socket")._value.get() == 1


# -- a real OpenBao with the socket audit device -----------------------------------------------
AUDIT_HCL = """
audit "socket" "rotor" {{
  description = "Rotor audit receiver"
  options {{
    address     = "127.0.0.1:{port}"
    socket_type = "tcp"
  }}
}}
"""


async def wait_for_event(session, url: str, since: int, epoch: str, path: str):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page = await fetch_events(session, url, since, epoch, wait=5)
        if any(e.path == path for e in page.events):
            return page
    raise AssertionError(f"no event for {path}")


async def test_openbao_socket_audit_device_end_to_end(tmp_path):
    sock, events = free_port(), free_port()
    run = uuid.uuid4().hex[:8]
    db, marker, other = f"shop/{run}-db", f"shop/{run}-marker", f"shop/{run}-other"
    cfg = AuditConfig(
        paths=frozenset({f"secret/{db}", f"secret/{marker}"}),
        display_names=frozenset({"token-rotor-agent"}),
    )
    r = make_receiver(tmp_path, cfg, socket_port=sock)
    app = make_events_app(r, serve_socket=True)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", events).start()
    bao = await asyncio.to_thread(start_bao, tmp_path, AUDIT_HCL.format(port=sock))
    url = f"http://127.0.0.1:{events}"
    try:
        root = hvac.Client(url=bao.url, token=bao.token)
        root.sys.create_or_update_policy(
            "writer",
            'path "secret/data/shop/*" { capabilities = ["create", "update", "read"] }\n'
            'path "secret/metadata/shop/*" { capabilities = ["patch"] }',
        )
        alice_token = root.auth.token.create(policies=["writer"], display_name="alice")
        rotor_token = root.auth.token.create(policies=["writer"], display_name="rotor-agent")
        alice = hvac.Client(url=bao.url, token=alice_token["auth"]["client_token"])
        kv = alice.secrets.kv.v2

        async with aiohttp.ClientSession() as session:
            start = await fetch_events(session, url, 0, wait=0)
            # a person's write to a referenced path arrives as one event
            await asyncio.to_thread(kv.create_or_update_secret, db, {"password": "p1"})
            page = await wait_for_event(session, url, start.last, start.epoch, f"secret/{db}")
            assert [(e.path, e.store_version, e.actor) for e in page.events] == [
                (f"secret/{db}", 1, "token-alice")
            ]
            # not events: another path, a read, a failed write, and Rotor's own write
            await asyncio.to_thread(kv.create_or_update_secret, other, {"password": "x"})
            await asyncio.to_thread(kv.read_secret_version, db, raise_on_deleted_version=True)
            with pytest.raises(hvac.exceptions.InvalidRequest):
                await asyncio.to_thread(kv.create_or_update_secret, db, {"password": "y"}, 0)
            agent = VaultStore(bao.url, "secret", TokenLogin(rotor_token["auth"]["client_token"]))
            meta = RotorMetadata(2, "", "shop/api-0", 0.0, "shop/db")
            await agent.write_pending(db, {"password": b"from-rotor"}, 1, meta)
            # a marker write after them: the stream is ordered, so all of them were seen
            await asyncio.to_thread(kv.create_or_update_secret, marker, {"password": "m"})
            page2 = await wait_for_event(session, url, page.last, page.epoch, f"secret/{marker}")
            assert [e.path for e in page2.events] == [f"secret/{marker}"]
            assert r.metrics.entries.labels("rotor")._value.get() == 1
            assert r.metrics.entries.labels("unreferenced")._value.get() >= 1
            # two quick writes to one path are coalesced into one event with the last version
            await asyncio.to_thread(kv.create_or_update_secret, db, {"password": "p3"})
            await asyncio.to_thread(kv.create_or_update_secret, db, {"password": "p4"})
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                page3 = await fetch_events(session, url, page2.last, page2.epoch, wait=5)
                if any(e.store_version == 4 for e in page3.events):
                    break
            assert [(e.path, e.store_version) for e in page3.events] == [(f"secret/{db}", 4)]
    finally:
        await asyncio.to_thread(bao.stop)
        await runner.cleanup()


async def test_the_process_serves_and_stops(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(render_config([("secret", "shop/db")]))
    events, sock = free_port(), free_port()
    settings = AuditSettings(
        host="127.0.0.1", socket_port=sock, events_port=events, config_file=str(cfg)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{events}/healthz") as resp:
                    health = await resp.json()
                    break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "the receiver did not start"
                await asyncio.sleep(0.05)
    assert health == {"ok": True, "paths": 1, "config": "ok", "inputs": {"config": "ok"}}
    stop.set()
    await asyncio.wait_for(task, 10)


def test_main_refuses_bad_settings(monkeypatch, capsys):
    monkeypatch.setenv("ROTOR_AUDIT_INGEST_PORT", "9761")
    monkeypatch.delenv("ROTOR_AUDIT_INGEST_TOKEN_FILE", raising=False)
    assert main([]) == 2
    assert "ROTOR_AUDIT_INGEST_TOKEN_FILE" in capsys.readouterr().out


def test_file_tail_follows_new_lines_rotation_and_truncation(tmp_path):
    log = tmp_path / "audit.log"
    log.write_bytes(b'{"old": 1}\n')
    tail = FileTail(str(log), 1024)
    assert tail.read_lines() == []  # existing entries are not news
    with log.open("ab") as f:
        f.write(b'{"a": 1}\n{"b": 2}\n{"c":')
    assert tail.read_lines() == [b'{"a": 1}', b'{"b": 2}']
    with log.open("ab") as f:
        f.write(b" 3}\n")
    assert tail.read_lines() == [b'{"c": 3}']
    log.rename(tmp_path / "audit.log.1")  # rotated: a new file appears
    log.write_bytes(b'{"d": 4}\n')
    assert tail.read_lines() == [b'{"d": 4}']
    log.write_bytes(b"")  # truncated, then written again
    assert tail.read_lines() == []
    log.write_bytes(b'{"e": 5}\n')
    assert tail.read_lines() == [b'{"e": 5}']


def test_file_tail_reads_a_file_that_appears_later_from_its_start(tmp_path):
    log = tmp_path / "audit.log"
    tail = FileTail(str(log), 1024)
    assert tail.read_lines() == []
    log.write_bytes(b'{"a": 1}\n')
    assert tail.read_lines() == [b'{"a": 1}']


async def test_openbao_file_audit_device_followed_by_a_sidecar(tmp_path):
    events = free_port()
    audit_log = tmp_path / "audit" / "audit.log"
    audit_log.parent.mkdir()
    r = make_receiver(
        tmp_path,
        AuditConfig(paths=frozenset({"secret/shop/file-db"})),
        tail_file=str(audit_log),
        tail_poll=0.05,
    )
    runner = aiohttp.web.AppRunner(make_events_app(r, serve_socket=True))
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", events).start()
    hcl = f'audit "file" "rotor" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n'
    bao = await asyncio.to_thread(start_bao, tmp_path, hcl)
    url = f"http://127.0.0.1:{events}"
    try:
        kv = hvac.Client(url=bao.url, token=bao.token).secrets.kv.v2
        async with aiohttp.ClientSession() as session:
            start = await fetch_events(session, url, 0, wait=0)
            await asyncio.to_thread(kv.create_or_update_secret, "shop/file-db", {"p": "1"})
            page = await wait_for_event(
                session, url, start.last, start.epoch, "secret/shop/file-db"
            )
            assert [(e.path, e.store_version) for e in page.events] == [("secret/shop/file-db", 1)]
    finally:
        await asyncio.to_thread(bao.stop)
        await runner.cleanup()
