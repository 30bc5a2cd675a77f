"""The audit receiver under hostile entries: JSON nested deeper than the parser goes is counted as
malformed on every input, the entry after it still arrives, and a failing input is retried and
shown on /healthz instead of dying silently."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from audit.app import make_events_app, make_ingest_app
from audit.entries import parse_line
from audit.inputs import FileTail
from tests.audit.test_audit import entry, make_receiver
from tests.conftest import free_port, until

DEEP = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
"""Nested far deeper than json.loads goes (it raises RecursionError, not ValueError)."""


def test_a_deeply_nested_line_is_not_an_entry():
    assert parse_line(DEEP) is None
    assert parse_line(b"prefix " + DEEP) is None


async def test_socket_input_survives_a_deep_entry_and_takes_the_next(tmp_path):
    port = free_port()
    r = make_receiver(tmp_path, socket_port=port, max_line=4 * len(DEEP))
    async with TestServer(make_events_app(r, serve_socket=True)):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(DEEP + b"\n" + json.dumps(entry()).encode() + b"\n")
        await writer.drain()
        await until(lambda: r.queue.since(0), what="the entry after the deep one")
        writer.close()
    assert [e.path for e in r.queue.since(0)] == ["secret/shop/db"]
    assert r.metrics.entries.labels("malformed")._value.get() == 1


async def test_http_ingest_answers_a_deep_body_and_keeps_the_rest(tmp_path):
    token = tmp_path / "token"
    token.write_text("ingest-token")
    r = make_receiver(tmp_path, ingest_port=1, ingest_token_file=str(token), max_line=4 * len(DEEP))
    auth = {"Authorization": "Bearer ingest-token"}
    async with TestClient(TestServer(make_ingest_app(r))) as client:
        resp = await client.post("/v1/audit", data=DEEP, headers=auth)
        assert (resp.status, await resp.json()) == (202, {"events": 0})
        body = DEEP + b"\n" + json.dumps(entry()).encode() + b"\n"
        resp = await client.post("/v1/audit", data=body, headers=auth)
        assert (resp.status, await resp.json()) == (202, {"events": 1})


async def test_file_input_survives_a_deep_entry_and_a_failing_read(tmp_path):
    audit_log = tmp_path / "audit.log"
    audit_log.write_bytes(b"")
    r = make_receiver(tmp_path, tail_file=str(audit_log), tail_poll=0.02, max_line=4 * len(DEEP))
    async with TestClient(TestServer(make_events_app(r, serve_socket=True))) as client:

        async def health() -> tuple[int, dict[str, Any]]:
            resp = await client.get("/healthz")
            return resp.status, await resp.json()

        with audit_log.open("ab") as f:
            f.write(DEEP + b"\n" + json.dumps(entry()).encode() + b"\n")
        await until(lambda: r.queue.since(0), what="the entry after the deep one")
        status, body = await health()
        assert (status, body["inputs"]["file"]) == (200, "ok")

        # the log becomes unreadable (here: a folder in its place): reported, not fatal
        audit_log.rename(tmp_path / "audit.log.1")
        audit_log.mkdir()
        await until(lambda: r.inputs.get("file", "ok") != "ok", what="the failure noticed")
        status, body = await health()
        assert status == 503
        assert body["inputs"]["file"].startswith("failing")
        assert not r.tasks["file"].done()

        audit_log.rmdir()  # readable again: the input goes on by itself
        audit_log.write_bytes(
            json.dumps(entry(path="kv/data/team/api", mount="kv/")).encode() + b"\n"
        )
        await until(lambda: len(r.queue.since(0)) == 2, what="the next entry after recovery")
        assert (await health())[0] == 200
    assert r.metrics.input_errors.labels("file")._value.get() >= 1


async def test_healthz_says_so_when_an_input_has_stopped(tmp_path):
    audit_log = tmp_path / "audit.log"
    audit_log.write_bytes(b"")
    r = make_receiver(tmp_path, tail_file=str(audit_log), tail_poll=0.02)
    async with TestClient(TestServer(make_events_app(r, serve_socket=True))) as client:
        r.tasks["file"].cancel()
        await until(r.tasks["file"].done, what="the task ended")
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert (await resp.json())["inputs"]["file"] == "stopped"


def test_file_tail_drops_every_line_longer_than_the_bound_finished_or_not(tmp_path):
    """A complete line over max_line is dropped and counted like an unfinished one (it was
    parsed whole: a 35 MiB line took +138 MiB and 1.3 s of the loop), and one call reads at
    most 4 x max_line, so the tail's memory is bounded whatever the file holds."""
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    tail = FileTail(str(log), 1024)
    assert tail.read_lines() == []
    giant = json.dumps(entry() | {"pad": "x" * 10_000}).encode()
    log.write_bytes(giant + b"\n" + b'{"a": 1}\n' + b"y" * 5000)  # complete, short, unfinished
    lines: list[bytes] = []
    for _ in range(10):
        before = tail.pos
        lines += tail.read_lines()
        assert tail.pos - before <= 4 * 1024
    assert lines == [b'{"a": 1}']
    assert tail.take_too_long() == 2
    with log.open("ab") as f:
        f.write(b"yy\n" + b'{"b": 2}\n')  # the end of the unfinished giant, then an entry
    assert tail.read_lines() == [b'{"b": 2}']
    assert tail.take_too_long() == 0


async def test_file_input_counts_an_oversized_entry_and_takes_the_next(tmp_path, caplog):
    audit_log = tmp_path / "audit.log"
    audit_log.write_bytes(b"")
    r = make_receiver(tmp_path, tail_file=str(audit_log), tail_poll=0.02, max_line=4096)
    async with TestClient(TestServer(make_events_app(r, serve_socket=True))):
        await until(lambda: "file" in r.inputs, what="the file input")
        big = entry() | {"pad": "hmac-sha256:" + "x" * 100_000}
        with audit_log.open("ab") as f:
            f.write(json.dumps(big).encode() + b"\n")
            f.write(json.dumps(entry(path="kv/data/team/api", mount="kv/")).encode() + b"\n")
        await until(lambda: r.queue.since(0), what="the entry after the oversized one")
    assert [e.path for e in r.queue.since(0)] == ["kv/team/api"]
    assert r.metrics.entries.labels("too_long")._value.get() == 1
    assert "dropped 1 entries longer than 4096 bytes (ROTOR_AUDIT_MAX_LINE)" in caplog.text
    assert "x" * 100 not in caplog.text
