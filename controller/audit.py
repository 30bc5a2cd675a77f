"""The audit receiver: Vault as a source, as vault-secret-sync does it (``rotor-audit-receiver``).

A small process of its own (it holds no Vault token and no Kubernetes rights) that receives
Vault/OpenBao audit entries, keeps the successful writes to the KV v2 paths that ExternalStores
reference (minus Rotor's own), and queues them, coalesced by path, for the controller, which
pulls them and propagates each changed value (:mod:`controller.propagate`).

Inputs (each entry is one JSON object; request data is HMAC'd by Vault, and only the path,
the operation, the new version number and the author's display name are kept):

* **socket** (default, port 9760): Vault's ``socket`` audit device with ``socket_type=tcp``
  sends newline-delimited JSON. The device speaks neither TLS nor any authentication, so the
  receiver accepts connections only from ``ROTOR_AUDIT_ALLOWED_SOURCES`` (addresses or networks,
  default loopback; set Vault's pod network) and a NetworkPolicy should allow only Vault's pods.
* **file tail** (off by default, ``ROTOR_AUDIT_TAIL_FILE``): the receiver runs as a sidecar of
  Vault and follows a ``file`` audit device's log on a shared volume. Unlike the socket device,
  a file device never fails, so Vault does not depend on the receiver to unseal.
* **HTTP ingest** (off by default): ``POST /v1/audit`` from a forwarder (e.g. fluent-bit tailing
  a ``file`` device) with ``Authorization: Bearer <token>``; the body is NDJSON, a JSON array,
  or one object (a record whose ``log`` field holds the entry as a string is unwrapped).

Output, on its own port (9762), for the controller only: ``GET /events?since=N&wait=S&epoch=E``
long-polls for events with a sequence number above ``N``; the answer carries ``epoch`` (random
per start: a different one means the receiver restarted and events may be lost, so the
controller re-checks every referenced path), ``last`` and ``dropped``. Optional bearer token.
``/healthz`` and ``/metrics`` are served there too.

Which paths, and which writers are Rotor: a JSON file (a ConfigMap the controller writes),
re-read when it changes::

    {"paths": ["secret/shop/db"],
     "rotor": {"roles": ["rotor-agent"], "displayNames": ["token-rotor"], "entityIds": []}}

An entry is Rotor's own when its token's Kubernetes auth role (``auth.metadata.role``), display
name or entity id is listed: these are set by Vault at login and cannot be chosen by the
writer. This is a filter against noise only; the controller's decision compares checksums and
Rotor's metadata, so a missed one is still never echoed back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rotor import logs
from rotor.errors import InvalidSpec
from rotor.settings.audit import AuditSettings

log = logging.getLogger(__name__)

WRITE_OPERATIONS = frozenset({"create", "update", "patch"})
MAX_EVENTS_PER_ANSWER = 1000
INPUT_RETRY = 1.0
"""Seconds before a failed input (the file tail, the config poll) tries again."""


# -- configuration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditConfig:
    """Referenced KV paths (``<mount>/<path>``) and the identities Rotor writes with."""

    paths: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    display_names: frozenset[str] = frozenset()
    entity_ids: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, obj: object, origin: str = "config") -> AuditConfig:
        if not isinstance(obj, Mapping):
            raise InvalidSpec(origin, "expected a JSON object", 'write {"paths": [...]}')

        def strings(value: object, name: str) -> frozenset[str]:
            if value is None:
                return frozenset()
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidSpec(f"{origin}.{name}", "expected a list of strings", "")
            return frozenset(v.strip("/") for v in value if v.strip("/"))

        rotor = obj.get("rotor") or {}
        if not isinstance(rotor, Mapping):
            raise InvalidSpec(f"{origin}.rotor", "expected an object", "")
        return cls(
            paths=strings(obj.get("paths"), "paths"),
            roles=strings(rotor.get("roles"), "rotor.roles"),
            display_names=strings(rotor.get("displayNames"), "rotor.displayNames"),
            entity_ids=strings(rotor.get("entityIds"), "rotor.entityIds"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "paths": sorted(self.paths),
            "rotor": {
                "roles": sorted(self.roles),
                "displayNames": sorted(self.display_names),
                "entityIds": sorted(self.entity_ids),
            },
        }


def render_config(
    paths: Iterable[tuple[str, str]],
    roles: Iterable[str] = (),
    display_names: Iterable[str] = (),
    entity_ids: Iterable[str] = (),
) -> str:
    """The config file's text from ``(mount, path)`` pairs (what the controller writes)."""
    cfg = AuditConfig(
        frozenset(f"{m.strip('/')}/{p.strip('/')}" for m, p in paths),
        frozenset(roles),
        frozenset(display_names),
        frozenset(entity_ids),
    )
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n"


# -- the pure filter -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditEvent:
    """A write to a referenced path: no value, only where, which version, when and who."""

    path: str  # <mount>/<path>
    store_version: int | None
    time: str
    actor: str
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "path": self.path,
            "storeVersion": self.store_version,
            "time": self.time,
            "actor": self.actor,
        }


def _kv_path(request: Mapping[str, Any]) -> str | None:
    """``<mount>/<path>`` of a KV v2 data request, or None."""
    path = str(request.get("path") or "")
    mount = str(request.get("mount_point") or "")
    if mount and path.startswith(mount):
        rest = path[len(mount) :]
        if not rest.startswith("data/"):
            return None
        inner = rest[len("data/") :].strip("/")
        return f"{mount.strip('/')}/{inner}" if inner else None
    head, sep, inner = path.partition("/data/")  # an entry without mount_point (older servers)
    return f"{head}/{inner.strip('/')}" if sep and head and inner.strip("/") else None


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def classify(entry: Mapping[str, Any], config: AuditConfig) -> AuditEvent | str:
    """An event for a person's successful write to a referenced path; else why not (a label)."""
    if entry.get("type") != "response":
        return "request"  # logged before the operation, which may still fail
    if entry.get("error"):
        return "failed"
    request = entry.get("request")
    if not isinstance(request, Mapping):
        return "malformed"
    if request.get("operation") not in WRITE_OPERATIONS:
        return "not_a_write"
    mount_type = request.get("mount_type")
    if mount_type not in (None, "kv"):
        return "not_kv"
    path = _kv_path(request)
    if path is None:
        return "not_kv"
    if path not in config.paths:
        return "unreferenced"
    auth = _obj(entry.get("auth"))
    meta = _obj(auth.get("metadata"))
    display = str(auth.get("display_name") or "")
    if (
        (meta.get("role") and meta.get("role") in config.roles)
        or (display and display in config.display_names)
        or (auth.get("entity_id") and auth.get("entity_id") in config.entity_ids)
    ):
        return "rotor"
    data = _obj(_obj(entry.get("response")).get("data"))
    version = data.get("version")
    return AuditEvent(
        path,
        version if isinstance(version, int) and not isinstance(version, bool) else None,
        str(entry.get("time") or ""),
        display,
    )


def parse_line(line: bytes | str) -> Mapping[str, Any] | None:
    """One audit entry from a line (a ``prefix`` set on the device is skipped); None if bad."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj = json.loads(text[start:])
    except (ValueError, RecursionError):  # broken, or nested deeper than the parser goes
        return None
    return obj if isinstance(obj, Mapping) else None


# -- the queue -----------------------------------------------------------------------------------
class EventQueue:
    """Events coalesced by path (the latest write wins), each with a growing sequence number.

    Bounded by the number of distinct paths (itself bounded by the referenced paths); past the
    bound the oldest path is dropped and counted. Readers pull with :meth:`since`.
    """

    def __init__(self, max_paths: int) -> None:
        self.max_paths = max_paths
        self.epoch = secrets.token_hex(8)
        self.last = 0
        self.dropped = 0
        self._events: OrderedDict[str, AuditEvent] = OrderedDict()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._events)

    def put(self, event: AuditEvent) -> AuditEvent:
        self.last += 1
        stored = AuditEvent(event.path, event.store_version, event.time, event.actor, self.last)
        self._events.pop(event.path, None)
        self._events[event.path] = stored
        while len(self._events) > self.max_paths:
            self._events.popitem(last=False)
            self.dropped += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return stored

    def since(self, seq: int, limit: int = MAX_EVENTS_PER_ANSWER) -> list[AuditEvent]:
        out = [e for e in self._events.values() if e.seq > seq]  # in sequence order
        return out[:limit]

    async def wait_since(self, seq: int, wait: float) -> list[AuditEvent]:
        """Events after ``seq``, waiting up to ``wait`` seconds for one to arrive."""
        got = self.since(seq)
        if got or wait <= 0:
            return got
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), wait)
        return self.since(seq)


# -- metrics -------------------------------------------------------------------------------------
class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.entries = Counter(
            "rotor_audit_entries_total",
            "Audit entries received, by result (event, rotor, unreferenced, request, ...).",
            ["result"],
            registry=registry,
        )
        self.rejected = Counter(
            "rotor_audit_rejected_total",
            "Senders refused, by input (socket: address not allowed; http: bad token).",
            ["input"],
            registry=registry,
        )
        self.queued = Gauge(
            "rotor_audit_queue_paths", "Distinct paths with a queued event.", registry=registry
        )
        self.dropped = Counter(
            "rotor_audit_queue_dropped_total",
            "Events dropped because the queue held too many paths.",
            registry=registry,
        )
        self.paths = Gauge(
            "rotor_audit_config_paths", "Referenced paths in the configuration.", registry=registry
        )
        self.input_errors = Counter(
            "rotor_audit_input_errors_total",
            "Failures of an input (socket, file, config) that it recovered from.",
            ["input"],
            registry=registry,
        )


# -- the receiver --------------------------------------------------------------------------------
@dataclass
class Receiver:
    """State shared by the listeners: configuration, queue, metrics."""

    settings: AuditSettings
    queue: EventQueue
    metrics: AuditMetrics
    config: AuditConfig = field(default_factory=AuditConfig)
    config_stamp: tuple[int, int, int] | None = None
    config_error: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    """Input (``socket``, ``file``, ``config``) -> ``ok`` or why it last failed; /healthz."""
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def supervise(self, name: str, step: Callable[[], Awaitable[None]], every: float) -> None:
        """Run ``step`` every ``every`` seconds for ever; an exception is logged, counted and
        shown on /healthz, and the input goes on after a pause (it never dies silently)."""
        self.inputs[name] = "ok"
        while True:
            try:
                await step()
                self.inputs[name] = "ok"
            except Exception as e:
                self.inputs[name] = f"failing: {type(e).__name__}"
                self.metrics.input_errors.labels(name).inc()
                log.warning("audit %s input failed (%s); retrying", name, type(e).__name__)
                await asyncio.sleep(max(every, INPUT_RETRY))
                continue
            await asyncio.sleep(every)

    @classmethod
    def create(cls, settings: AuditSettings, registry: CollectorRegistry | None = None) -> Receiver:
        r = cls(
            settings, EventQueue(settings.max_paths), AuditMetrics(registry or CollectorRegistry())
        )
        r.reload_config()
        return r

    def set_config(self, config: AuditConfig) -> None:
        self.config = config
        self.metrics.paths.set(len(config.paths))

    def reload_config(self) -> bool:
        """Re-read the config file if it changed; a bad file keeps the last good config."""
        path = Path(self.settings.config_file)
        try:
            st = path.stat()
        except OSError:
            if self.config_error != "missing":
                log.warning("audit config %s is missing: no path is referenced yet", path)
            self.config_error = "missing"
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self.config_stamp:
            return False
        self.config_stamp = stamp
        try:
            cfg = AuditConfig.from_dict(json.loads(path.read_text()), str(path))
        except (OSError, ValueError, InvalidSpec) as exc:
            self.config_error = str(exc)
            log.warning("audit config %s is invalid, keeping the last good one: %s", path, exc)
            return False
        self.config_error = ""
        self.set_config(cfg)
        log.info("audit config: %d referenced paths", len(cfg.paths))
        return True

    def accept(self, entry: Mapping[str, Any] | None) -> AuditEvent | None:
        """Queue the entry if it is an event; never raises (an input must outlive any entry)."""
        try:
            return self._accept(entry)
        except Exception as e:  # a shape classify() did not foresee: count it, keep going
            self.metrics.entries.labels("malformed").inc()
            log.warning("audit: an entry could not be read (%s)", type(e).__name__)
            return None

    def _accept(self, entry: Mapping[str, Any] | None) -> AuditEvent | None:
        if entry is None:
            self.metrics.entries.labels("malformed").inc()
            return None
        got = classify(entry, self.config)
        if isinstance(got, str):
            self.metrics.entries.labels(got).inc()
            return None
        dropped = self.queue.dropped
        stored = self.queue.put(got)
        self.metrics.entries.labels("event").inc()
        self.metrics.dropped.inc(self.queue.dropped - dropped)
        self.metrics.queued.set(len(self.queue))
        log.info(
            "write to %s (version %s) by %r queued as event %d",
            stored.path,
            stored.store_version,
            stored.actor,
            stored.seq,
        )
        return stored

    def allowed(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.settings.allowed_sources)

    # -- the socket device input --------------------------------------------------------------
    async def handle_socket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        if not self.allowed(host):
            self.metrics.rejected.labels("socket").inc()
            log.warning("audit socket: refused a connection from %s (not allowed)", host)
            writer.close()
            return
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        self.accept(parse_line(exc.partial))
                    break
                except asyncio.LimitOverrunError:
                    self.metrics.entries.labels("too_long").inc()
                    log.warning("audit socket: an entry from %s is too long; reconnecting", host)
                    break
                if line.strip():
                    self.accept(parse_line(line))
        except (ConnectionError, asyncio.CancelledError):
            # a handler of asyncio.start_server that ends cancelled (at shutdown) is logged as
            # an error by Python 3.11, and nobody awaits it: end normally instead
            pass
        except Exception as e:  # never leave a handler dead with a traceback nobody reads
            self.metrics.input_errors.labels("socket").inc()
            log.warning("audit socket: a connection from %s failed (%s)", host, type(e).__name__)
        finally:
            writer.close()


class FileTail:
    """Follow a ``file`` audit device's log (Vault writes it; a shared volume when the receiver
    runs as a sidecar of Vault): new lines only, across rotation (a new inode) and truncation.

    Hand-written: a polled stat and read are all it takes, and a library for it would be a
    dependency of its own (watchfiles wakes on changes but still needs this bookkeeping).
    """

    def __init__(self, path: str, max_line: int, from_start: bool = False) -> None:
        self.path = Path(path)
        self.max_line = max_line
        self.inode: int | None = None
        self.pos = 0
        self.buf = b""
        self.from_start = from_start

    def read_lines(self) -> list[bytes]:
        """The complete lines written since the last call (blocking; run it in a thread)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self.from_start = True  # when it appears, all of it is news
            return []
        if self.inode is None:  # first look: start at the end, old entries are not news
            self.inode, self.pos = st.st_ino, (0 if self.from_start else st.st_size)
        elif st.st_ino != self.inode or st.st_size < self.pos:  # rotated or truncated
            self.inode, self.pos, self.buf = st.st_ino, 0, b""
        if st.st_size <= self.pos:
            return []
        with self.path.open("rb") as f:
            f.seek(self.pos)
            data = f.read(max(st.st_size - self.pos, 0))
        self.pos += len(data)
        *lines, self.buf = (self.buf + data).split(b"\n")
        if len(self.buf) > self.max_line:  # an unterminated giant: drop it
            self.buf = b""
        return [line for line in lines if line.strip()]


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


def _entries(body: bytes) -> Iterable[Mapping[str, Any] | None]:
    """NDJSON, a JSON array, or one object; a record with a ``log`` string is unwrapped."""
    text = body.decode("utf-8", "replace").strip()
    records: Sequence[object]
    try:
        whole = json.loads(text) if text.startswith(("[", "{")) else None
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, list):
        records = whole
    elif isinstance(whole, Mapping):
        records = [whole]
    else:
        records = [parse_line(line) for line in text.splitlines() if line.strip()]
    for rec in records:
        if isinstance(rec, Mapping) and "type" not in rec and isinstance(rec.get("log"), str):
            yield parse_line(rec["log"])
        else:
            yield rec if isinstance(rec, Mapping) else None


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
        for entry in _entries(await request.read()):
            if r.accept(entry) is not None:
                accepted += 1
        return web.json_response({"events": accepted}, status=202)

    app = web.Application(client_max_size=receiver.settings.max_line * 16)
    app[RECEIVER] = receiver
    app.router.add_post("/v1/audit", ingest)
    return app


def make_events_app(receiver: Receiver, *, serve_socket: bool = False) -> web.Application:
    """The controller's side: ``GET /events``, ``/healthz``, ``/metrics``.

    With ``serve_socket`` the app's ``cleanup_ctx`` also runs the socket-device listener and the
    config poller, so one app object is the whole receiver.
    """
    events_token = _token(receiver.settings.events_token_file)

    async def events(request: web.Request) -> web.Response:
        r = request.app[RECEIVER]
        if not _bearer_ok(request, events_token):
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
        return web.json_response(
            {
                "epoch": r.queue.epoch,
                "reset": reset,
                "last": r.queue.last,
                "dropped": r.queue.dropped,
                "events": [e.to_dict() for e in got],
            }
        )

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

    async def socket_listener(app: web.Application) -> AsyncIterator[None]:
        r = app[RECEIVER]
        server = await asyncio.start_server(
            r.handle_socket, r.settings.host, r.settings.socket_port, limit=r.settings.max_line
        )
        log.info("audit socket listening on %s:%d", r.settings.host, r.settings.socket_port)
        yield
        server.close()
        await server.wait_closed()

    async def config_poller(app: web.Application) -> AsyncIterator[None]:
        r = app[RECEIVER]

        async def poll() -> None:
            r.reload_config()

        async def later() -> None:
            await asyncio.sleep(r.settings.config_poll)
            await r.supervise("config", poll, r.settings.config_poll)

        r.inputs["config"] = "ok"
        task = r.tasks["config"] = asyncio.create_task(later())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def file_tailer(app: web.Application) -> AsyncIterator[None]:
        r = app[RECEIVER]
        follower = FileTail(r.settings.tail_file, r.settings.max_line)

        async def follow() -> None:
            for line in await asyncio.to_thread(follower.read_lines):
                r.accept(parse_line(line))

        await asyncio.to_thread(follower.read_lines)  # note where the file ends now
        task = r.tasks["file"] = asyncio.create_task(
            r.supervise("file", follow, r.settings.tail_poll)
        )
        log.info("audit file: following %s", r.settings.tail_file)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = web.Application()
    app[RECEIVER] = receiver
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


# -- the controller's client ---------------------------------------------------------------------
@dataclass(frozen=True)
class EventsPage:
    epoch: str
    reset: bool
    last: int
    dropped: int
    events: tuple[AuditEvent, ...]


async def fetch_events(
    session: Any, url: str, since: int, epoch: str = "", wait: float = 30.0, token: str = ""
) -> EventsPage:
    """One long-poll of the receiver (``session``: an ``aiohttp.ClientSession``).

    The controller keeps ``since = page.last`` and ``epoch = page.epoch``; when ``page.reset``
    (the receiver restarted) it re-checks every referenced path instead of trusting the queue.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"since": str(since), "wait": str(wait), "epoch": epoch}
    async with session.get(f"{url.rstrip('/')}/events", params=params, headers=headers) as resp:
        resp.raise_for_status()
        body = await resp.json()
    return EventsPage(
        str(body["epoch"]),
        bool(body["reset"]),
        int(body["last"]),
        int(body["dropped"]),
        tuple(
            AuditEvent(e["path"], e["storeVersion"], e["time"], e["actor"], e["seq"])
            for e in body["events"]
        ),
    )


# -- the process ---------------------------------------------------------------------------------
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
