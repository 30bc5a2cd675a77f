"""A minimal async Kubernetes API client for the agent's in-cluster mode (asyncio + h11).

The agent needs four kinds of call: get an object (a Secret, an ExternalStore), list one object
by name, watch it (the source Secret, an RO view, the RotatingSecret), and patch a Secret with a
resourceVersion precondition. That is all this module does, over :mod:`agent.http` (asyncio
streams and h11): kept-alive connections for calls (a kept connection the server closed is
replaced), one connection per watch for as long as it streams (no cap, so any number of secrets
can be watched at once), TLS with the service-account CA, a total timeout per call and a
client-side deadline per watch.

Why hand-written instead of the official ``kubernetes`` client, and why not aiohttp: the agent
runs as a sidecar in every annotated pod, so its memory and start-up time are paid once per pod.
The official client is synchronous (an async agent would need ``kubernetes_asyncio``, another
generated client, or a thread per watch), pulls in urllib3, requests-oauthlib, google-auth,
websocket-client and durationpy, and loads hundreds of generated model modules. Measured on this
machine by ``bench/agent_kube_client.py`` (python 3.11, fresh interpreter per line, median of 5;
VmHWM)::

    what is imported                                 peak RSS MiB   import CPU ms
    asyncio + ssl + prometheus_client (the floor)            24.9              58
    aiohttp alone (what this client used before)             33.8             147
    agent.kube (h11 + this module)                           21.7              55
    kubernetes (client, config, watch)                       46.1             219

A whole in-cluster writer (``rotor-agent run``, one secret, metrics server on) peaks at about
28 MiB (39 MiB on aiohttp) and is ready about 0.15 s after start (docs/benchmarks.md, "Agent
in-cluster client").

Optimistic concurrency: a JSON merge patch that carries ``metadata.resourceVersion`` is a
precondition on the real API server (the patched object keeps that resourceVersion and the
store's guarded update refuses it with 409 Conflict when the object moved on; controller-runtime's
``MergeFromWithOptimisticLock`` relies on the same rule). A 409 becomes
:class:`rotor.errors.ConflictError`: the caller re-reads and never overwrites.

Configuration (:meth:`KubeConfig.from_env`): in a pod, ``KUBERNETES_SERVICE_HOST``/``_PORT`` and
the service-account files under ``/var/run/secrets/kubernetes.io/serviceaccount``; for tests and
the demo, ``ROTOR_KUBE_URL`` (plus ``ROTOR_KUBE_TOKEN_FILE``, ``ROTOR_KUBE_CA_FILE``,
``ROTOR_KUBE_INSECURE``). The token is re-read whenever its file changes, because projected
service-account tokens are rotated by the kubelet (about hourly), and once more on a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from agent.http import Pool
from rotor import kubepaths
from rotor.errors import (
    ForbiddenError,
    GoneError,
    InvalidSpec,
    NotFoundError,
    RetryableError,
    RotorError,
    UnavailableError,
    from_status,
)
from rotor.retry import Backoff
from rotor.settings._env import env_bool, env_duration

log = logging.getLogger(__name__)

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ENV_URL = "ROTOR_KUBE_URL"
"""Override the API server URL (tests, demo). Without it the in-cluster config is used."""
ENV_TOKEN_FILE = "ROTOR_KUBE_TOKEN_FILE"  # noqa: S105  (a variable name)
ENV_CA_FILE = "ROTOR_KUBE_CA_FILE"
ENV_INSECURE = "ROTOR_KUBE_INSECURE"
"""``true`` skips TLS verification; only for a local emulator, never in a cluster."""
ENV_WATCH_TIMEOUT = "ROTOR_KUBE_WATCH_TIMEOUT"
DEFAULT_TIMEOUT = 10.0
DEFAULT_WATCH_TIMEOUT = 300.0
"""Server-side ``timeoutSeconds`` of one watch; the client gives up a little later (at most
``WATCH_MARGIN``) in case the server (or an emulator) never ends it."""
WATCH_MARGIN = 10.0
RETRY_MIN, RETRY_MAX = 0.2, 30.0
RETRY_JITTER = (0.5, 1.0)

MERGE_PATCH = "application/merge-patch+json"
BASE_HEADERS = {"Accept": "application/json", "User-Agent": "rotor-agent"}
Obj = dict[str, Any]


class Forbidden(ForbiddenError):
    """401/403 from the API server: the pod's service account may not do this (yet): the grant
    may be pending."""


Gone = GoneError
"""410: the resourceVersion a watch resumed from is too old; list again."""


# -- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KubeConfig:
    url: str
    token_file: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    timeout: float = DEFAULT_TIMEOUT
    watch_timeout: float = DEFAULT_WATCH_TIMEOUT

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, sa_dir: str = SA_DIR, timeout: float = DEFAULT_TIMEOUT
    ) -> KubeConfig:
        watch_timeout = env_duration(env, ENV_WATCH_TIMEOUT, DEFAULT_WATCH_TIMEOUT)
        url = env.get(ENV_URL, "").strip().rstrip("/")
        if url:
            if not url.startswith(("http://", "https://")):
                raise InvalidSpec(ENV_URL, f"{url!r} is not a URL", "e.g. http://127.0.0.1:8080")
            return cls(
                url=url,
                token_file=env.get(ENV_TOKEN_FILE, "").strip() or None,
                ca_file=env.get(ENV_CA_FILE, "").strip() or None,
                insecure=env_bool(env, ENV_INSECURE, False),
                timeout=timeout,
                watch_timeout=watch_timeout,
            )
        host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
        port = env.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
        token = os.path.join(sa_dir, "token")
        if not host or not os.path.exists(token):
            raise InvalidSpec(
                "KUBERNETES_SERVICE_HOST",
                "not running in a pod with a service-account token "
                f"(no KUBERNETES_SERVICE_HOST or no {token})",
                f"run the agent in a pod, set {ENV_URL} for a local API, "
                "or use `rotor-agent standalone`",
            )
        if ":" in host:  # IPv6
            host = f"[{host}]"
        ca = os.path.join(sa_dir, "ca.crt")
        return cls(
            url=f"https://{host}:{port}",
            token_file=token,
            ca_file=ca if os.path.exists(ca) else None,
            timeout=timeout,
            watch_timeout=watch_timeout,
        )


class _Token:
    """The bearer token, re-read when its file changes (projected tokens rotate)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._value = ""

    def header(self, force: bool = False) -> str | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise Forbidden(f"cannot read the service-account token {self.path}: {e}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if force or stamp != self._stamp:
            with open(self.path, encoding="utf-8") as f:
                self._value = f.read().strip()
            self._stamp = stamp
        return f"Bearer {self._value}" if self._value else None


# -- paths (rotor.kubepaths builds them) -----------------------------------------------------------
def secrets_path(namespace: str) -> str:
    return kubepaths.secret_path(namespace)


def secret_path(namespace: str, name: str) -> str:
    return kubepaths.secret_path(namespace, name)


def rotating_secrets_path(namespace: str) -> str:
    return kubepaths.rotor_path("rotatingsecrets", namespace)


def rotating_secret_path(namespace: str, name: str) -> str:
    return kubepaths.rotor_path("rotatingsecrets", namespace, name)


def resource_version(obj: Mapping[str, Any] | None) -> str | None:
    if not obj:
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


def _name(obj: Mapping[str, Any]) -> str | None:
    name = (obj.get("metadata") or {}).get("name")
    return name if isinstance(name, str) else None


def _status_doc(body: bytes) -> Obj | None:
    """The Kubernetes Status an error answer carries (None when the body is not one)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _status_text(status: int, doc: Obj | None) -> str:
    """``reason: message`` of a Kubernetes Status body (names and reasons, never data)."""
    if doc is None:
        return f"HTTP {status}"
    reason = doc.get("reason") or f"HTTP {status}"
    message = str(doc.get("message") or "")[:300]
    return f"{reason}: {message}" if message else str(reason)


def _error(
    status: int, doc: Obj | None, what: str, headers: Mapping[str, str] | None = None
) -> RotorError:
    """The agent's edge: an error answer (its Status body decoded) to a Rotor error, through
    the one status table (:func:`rotor.errors.from_status`), the answer carried on it."""
    text = f"{what}: {_status_text(status, doc)}"
    return from_status(status, text, headers=headers, payload=doc, forbidden=Forbidden)


# -- the client ------------------------------------------------------------------------------------
class KubeClient:
    """Keep-alive connections to one API server. Use as ``async with KubeClient(cfg) as kube``."""

    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._token = _Token(config.token_file)
        self._pool: Pool | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.config.url.startswith("https://"):
            return None
        if self.config.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        # The service-account CA when there is one, else the system's trust store.
        return ssl.create_default_context(cafile=self.config.ca_file)

    def _http(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.config.url, self._ssl())
        return self._pool

    def _headers(self, force_token: bool = False) -> dict[str, str]:
        headers = dict(BASE_HEADERS)
        auth = self._token.header(force=force_token)
        if auth:
            headers["Authorization"] = auth
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        """One API call; returns the decoded JSON object or raises a :mod:`rotor.errors` error."""
        data = None if body is None else json.dumps(body).encode()
        what = f"{method} {path}"
        http = self._http()
        target = http.target(path, params)
        for attempt in (0, 1):
            headers = self._headers(force_token=attempt > 0)
            if data is not None:
                headers["Content-Type"] = content_type
            try:
                resp = await http.request(
                    method, target, headers=headers, body=data, seconds=self.config.timeout
                )
            except OSError as e:  # HttpError, TimeoutError, refused, unreachable, TLS
                raise UnavailableError(f"{what}: {type(e).__name__}: {e}") from None
            if resp.status == 401 and attempt == 0 and self._token.path:
                continue  # the token may have just been rotated: re-read it once
            if resp.status >= 300:
                raise _error(resp.status, _status_doc(resp.body), what, resp.headers)
            try:
                doc = json.loads(resp.body) if resp.body else {}
            except ValueError:
                raise UnavailableError(f"{what}: the answer is not JSON") from None
            if not isinstance(doc, dict):
                raise UnavailableError(f"{what}: the answer is not a JSON object")
            return doc
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Obj:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Obj | None:
        try:
            return await self.get(path)
        except NotFoundError:
            return None

    async def patch(self, path: str, patch: Obj, *, resource_version: str | None = None) -> Obj:
        """JSON merge patch; with ``resource_version`` it applies only to that version (else 409).

        ``None`` values in ``patch`` delete keys (RFC 7386).
        """
        if resource_version is not None:
            meta = dict(patch.get("metadata") or {})
            meta["resourceVersion"] = resource_version
            patch = {**patch, "metadata": meta}
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def create(self, collection: str, body: Obj) -> Obj:
        return await self.request("POST", collection, body=body)

    # -- watch -------------------------------------------------------------------------------------
    async def watch(
        self, collection: str, name: str, resource_version: str | None
    ) -> AsyncIterator[tuple[str, Obj]]:
        """One watch stream of the object ``name``: ``(type, object)`` until the server ends it.

        Raises :class:`Gone` when ``resource_version`` is too old, and ends quietly when the
        stream is closed or its client-side deadline passes (resume from the last version).
        """
        params = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(self.config.watch_timeout))),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        what = f"watch {collection}/{name}"
        http = self._http()
        margin = min(WATCH_MARGIN, self.config.watch_timeout / 2)
        deadline = asyncio.get_running_loop().time() + self.config.watch_timeout + margin
        try:
            async with http.stream(
                "GET",
                http.target(collection, params),
                headers=self._headers(),
                connect_timeout=self.config.timeout,
                deadline=deadline,
            ) as (status, headers, chunks):
                if status >= 300:
                    raw = b"".join([c async for c in chunks])
                    if status == 401:
                        self._token.header(force=True)
                    raise _error(status, _status_doc(raw), what, headers)
                async for line in _lines(chunks):
                    event = _event(line, what)
                    if event is not None:
                        yield event
        except OSError as e:  # closed, reset, timed out (resume from the last version)
            log.debug("%s ended: %s", what, type(e).__name__)

    async def follow(self, collection: str, name: str) -> AsyncIterator[Obj | None]:
        """The object ``name`` now and after every change (``None`` while it does not exist).

        A list, then watches resumed from the last resourceVersion; a 410 lists again. Only
        changes are yielded (equal consecutive states are dropped). Transient errors are retried
        with backoff; :class:`Forbidden` and other permanent errors end the iteration.
        """
        last: list[Obj | None] = []  # the last state yielded (empty: none yet)
        backoff = Backoff(RETRY_MIN, RETRY_MAX, RETRY_JITTER)
        while True:
            try:
                listing = await self.get(collection, {"fieldSelector": f"metadata.name={name}"})
            except RetryableError as e:
                log.warning("list %s/%s failed, retrying: %s", collection, name, e)
                await backoff.wait(e.delay or None)
                continue
            # The selector is the API server's job; an emulator may ignore it, so filter again.
            items = [i for i in listing.get("items") or [] if _name(i) == name]
            obj: Obj | None = items[0] if items else None
            if not last or not _same(obj, last[0]):
                yield obj
                last[:] = [obj]
            watching = self._watching(collection, name, resource_version(listing), backoff)
            async with contextlib.aclosing(watching):
                async for new in watching:
                    if not _same(new, last[0]):
                        yield new
                        last[:] = [new]

    async def _watching(
        self, collection: str, name: str, rv: str | None, backoff: Backoff
    ) -> AsyncGenerator[Obj | None, None]:
        """The states of ``name`` from watches resumed from ``rv``, until it expires (410)."""
        while True:
            loop = asyncio.get_running_loop()
            started, events = loop.time(), 0
            try:
                async for kind, o in self.watch(collection, name, rv):
                    events += 1
                    backoff.reset()
                    rv = resource_version(o) or rv
                    if kind == "BOOKMARK" or _name(o) != name:
                        continue
                    yield None if kind == "DELETED" else o
                if not events and loop.time() - started < 1.0:
                    # A stream that closes at once, again and again: do not spin.
                    await backoff.wait()
            except Gone:
                log.info("watch %s/%s: resourceVersion %s expired, listing", collection, name, rv)
                return
            except RetryableError as e:
                log.warning("watch %s/%s failed, retrying: %s", collection, name, e)
                await backoff.wait(e.delay or None)


def _same(a: Obj | None, b: object) -> bool:
    """Whether two states of one object are equal, ignoring how they were fetched."""
    if a is None or not isinstance(b, dict):
        return a is b
    skip = ("apiVersion", "kind")
    return {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The lines of a stream (a watch sends one JSON event per line; a line may be long and
    arrive in many chunks, or many lines in one)."""
    pending: list[bytes] = []
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending.append(chunk[start:end])
            yield b"".join(pending)
            pending.clear()
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])


def _event(line: bytes, what: str) -> tuple[str, Obj] | None:
    line = line.strip()
    if not line:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        raise UnavailableError(f"{what}: a watch event is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("object"), dict):
        raise UnavailableError(f"{what}: a watch event has no object")
    kind = str(doc.get("type"))
    obj: Obj = doc["object"]
    if kind == "ERROR":
        code = obj.get("code")
        status = code if isinstance(code, int) else 500
        raise _error(status, obj, what)
    return kind, obj
