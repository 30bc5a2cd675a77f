"""A thin, dict-based edge over the official ``kubernetes`` client.

The generated typed API classes turn every answer into pydantic models and pick a patch content
type by guessing; the controller works on plain dicts and needs exact patch semantics (JSON merge
patch with ``metadata.resourceVersion`` as a precondition). So this module builds requests with
the client's own ``ApiClient`` (auth, TLS, host from kubeconfig or in-cluster config) and maps
failures onto :mod:`rotor.errors` in one place, :func:`answer_error` (an error answer: its status,
headers and Status body, through the one status table :func:`rotor.errors.from_status`) and
:func:`connection_problem` (no answer: refused, reset, timed out, TLS; by exception type):

* 401/403 -> :class:`~rotor.errors.ForbiddenError` (the message says which permission)
* 404 -> :class:`~rotor.errors.NotFoundError`
* 409 -> :class:`~rotor.errors.ConflictError` (stale resourceVersion, or already exists)
* 410 -> :class:`~rotor.errors.GoneError`
* 429, 5xx, no answer -> :class:`~rotor.errors.UnavailableError` (``delay`` from Retry-After)
* other 4xx -> :class:`~rotor.errors.PermanentError`

Blocking calls run in a private thread pool (``concurrency`` threads, matching the connection
pool), so fan-out to many namespaces runs in parallel without starving ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rotor.errors import (
    ConflictError,
    NotFoundError,
    RotorError,
    UnavailableError,
    from_status,
    kind_of,
)
from rotor.errors import ForbiddenError as AnyForbidden
from rotor.kubepaths import api_path

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
DEFAULT_CONCURRENCY = 16
REQUEST_TIMEOUT = 30.0

Obj = dict[str, Any]

path = api_path
"""The API path of a resource (:func:`rotor.kubepaths.api_path`, the one builder)."""


class ForbiddenError(AnyForbidden):
    """401/403 from the API server: the controller's identity lacks a permission (the message
    names it, as the API server's Status does: user, verb, resource, group, namespace)."""


def api_error(
    status: int,
    reason: str,
    what: str,
    message: str = "",
    *,
    headers: Mapping[str, str] | None = None,
    payload: object = None,
) -> RotorError:
    """The rotor error for an HTTP status (0: no answer at all), the answer carried on it."""
    text = f"{what}: HTTP {status} {reason}".strip()
    if kind_of(status) is AnyForbidden:
        text = (
            f"{text}: {message or 'refused'} (the controller's ServiceAccount lacks this "
            "permission: compare its ClusterRole with the chart's)"
        )
    return from_status(status, text, headers=headers, payload=payload, forbidden=ForbiddenError)


def answer_error(
    status: int, phrase: str, body: bytes | str | None, headers: Mapping[str, str] | None, what: str
) -> RotorError:
    """The controller's edge for an error answer: its Kubernetes Status body (``reason``,
    ``message``) decoded, then :func:`api_error`."""
    doc: object = None
    with suppress(ValueError, TypeError):
        doc = json.loads(body or b"{}")
    status_doc = doc if isinstance(doc, dict) else {}
    reason = str(status_doc.get("reason") or phrase or "")
    message = str(status_doc.get("message") or "")
    return api_error(status, reason, what, message, headers=headers, payload=status_doc or None)


def _causes(e: BaseException) -> Iterator[BaseException]:
    """``e``, then what urllib3 wraps in it (``reason``) and what it was raised from."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        cur = todo.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        reason = getattr(cur, "reason", None)
        todo += [reason if isinstance(reason, BaseException) else None]
        todo += [cur.__cause__, cur.__context__]


def _cause(e: BaseException) -> str:
    """Why there was no answer, by exception type (never by parsing its text)."""
    causes = list(_causes(e))
    tls = [c for c in causes if isinstance(c, ssl.SSLError | urllib3.exceptions.SSLError)]
    if tls:
        why = [getattr(c, "verify_message", None) or getattr(c, "reason", None) for c in tls]
        return f"TLS: {next((str(w) for w in why if w), 'handshake failed')}"
    for c in causes:  # the socket's own error first: urllib3's NewConnectionError is a timeout
        if isinstance(c, OSError) and c.strerror:
            return c.strerror
    for c in causes:
        if isinstance(c, TimeoutError | urllib3.exceptions.TimeoutError):
            return "timed out"
    return type(getattr(e, "reason", None) or e).__name__


def connection_problem(e: BaseException) -> str:
    """``the API server at https://10.0.0.1:6443 did not answer (Connection refused)``: the
    server and the cause, from urllib3's nested exceptions (never its object reprs)."""
    causes = list(_causes(e))
    retried = [c for c in causes if isinstance(c, urllib3.exceptions.MaxRetryError)]
    pool = retried[0].pool if retried else None
    # a bare NewConnectionError (no urllib3 retries) names its connection
    conn = next((c.conn for c in causes if hasattr(c, "conn")), None)
    if pool is not None:
        server = f"{pool.scheme}://{pool.host}:{pool.port}"
    elif conn is not None:
        scheme = "https" if isinstance(conn, urllib3.connection.HTTPSConnection) else "http"
        server = f"{scheme}://{conn.host}:{conn.port}"
    else:
        server = "?"
    return f"the API server at {server} did not answer ({_cause(e)})"


@contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Turn ``ApiException`` and connection errors raised inside into rotor errors."""
    try:
        yield
    except ApiException as e:
        if not e.status:  # the client wraps a failed TLS handshake so, with the cause chained
            raise UnavailableError(f"{what}: {connection_problem(e)}") from None
        headers = dict(e.headers or {})
        raise answer_error(int(e.status or 0), str(e.reason or ""), e.body, headers, what) from None
    except (OSError, urllib3.exceptions.HTTPError) as e:  # refused, reset, timed out
        raise UnavailableError(f"{what}: {connection_problem(e)}") from None


def check_connection(api_client: client.ApiClient, attempts: int = 5, delay: float = 2.0) -> str:
    """Ask the API server for its version, up to ``attempts`` times ``delay`` apart; return its
    ``gitVersion``. Raises :class:`UnavailableError` (no answer: the server and the cause) or
    :class:`PermanentError` (401/403: the credentials were refused) with one line to print.
    urllib3's own retries are turned off for this, so nothing else is logged meanwhile."""
    cfg = copy.deepcopy(api_client.configuration)
    cfg.retries = False  # read when the pool is made, so on a client of its own
    host = cfg.host
    last = ""
    with client.ApiClient(cfg) as probe:
        for attempt in range(max(1, attempts)):
            try:
                with mapped_errors(f"GET {host}/version"):
                    _, url, hdrs, _, _ = probe.param_serialize(
                        method="GET",
                        resource_path="/version",
                        header_params={"Accept": "application/json"},
                        auth_settings=["BearerToken"],
                    )
                    resp = probe.call_api("GET", url, header_params=hdrs, _request_timeout=10)
                    raw: bytes = resp.read()
            except UnavailableError as e:
                last = str(e).split(": ", 1)[-1]
                if attempt + 1 < attempts:
                    time.sleep(delay)
                continue
            if kind_of(resp.status) is AnyForbidden:
                raise ForbiddenError(
                    f"the API server at {host} refused the credentials (HTTP {resp.status}); "
                    "check the kubeconfig's user or the service account token"
                )
            with suppress(ValueError, AttributeError):
                return str(json.loads(raw).get("gitVersion") or "")
            return ""
    tries = f"{attempts} attempts {delay:g}s apart" if attempts > 1 else "1 attempt"
    raise UnavailableError(f"{last}; gave up after {tries}")


class Kube:
    """Dict-in, dict-out Kubernetes calls; every method has an async twin prefixed ``a``."""

    def __init__(
        self, api_client: client.ApiClient, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        self.api_client = api_client
        cfg = api_client.configuration
        pool = concurrency + 8  # also serves asyncio.to_thread users (the ACL backend)
        if (cfg.connection_pool_maxsize or 0) < pool:
            cfg.connection_pool_maxsize = pool
            api_client.rest_client = type(api_client.rest_client)(cfg)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="rotor-kube")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- sync ------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        url_path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        with mapped_errors(f"{method} {url_path}"):
            _, url, hdrs, data, _ = self.api_client.param_serialize(
                method=method,
                resource_path=url_path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api_client.call_api(
                method, url, header_params=hdrs, body=data, _request_timeout=REQUEST_TIMEOUT
            )
            raw: bytes = resp.read()  # type: ignore[no-untyped-call]
        if resp.status >= 400:
            headers = dict(resp.headers or {})
            raise answer_error(resp.status, resp.reason or "", raw, headers, f"{method} {url_path}")
        if not raw:
            return {}
        out = json.loads(raw)
        return out if isinstance(out, dict) else {}

    def get(self, url_path: str) -> Obj | None:
        try:
            return self.request("GET", url_path)
        except NotFoundError:
            return None

    def items(self, url_path: str, label_selector: str | None = None) -> list[Obj]:
        query = {"labelSelector": label_selector} if label_selector else None
        items = self.request("GET", url_path, query=query).get("items") or []
        return [i for i in items if isinstance(i, dict)]

    def create(self, url_path: str, body: Obj) -> Obj:
        return self.request("POST", url_path, body=body)

    def patch(self, url_path: str, body: Any, content_type: str = MERGE_PATCH) -> Obj:
        return self.request("PATCH", url_path, body=body, content_type=content_type)

    def delete(self, url_path: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            self.request("DELETE", url_path)
        except NotFoundError:
            return False
        return True

    # -- async -----------------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def aget(self, url_path: str) -> Obj | None:
        result: Obj | None = await self._run(self.get, url_path)
        return result

    async def aitems(self, url_path: str, label_selector: str | None = None) -> list[Obj]:
        result: list[Obj] = await self._run(self.items, url_path, label_selector)
        return result

    async def acreate(self, url_path: str, body: Obj) -> Obj:
        result: Obj = await self._run(self.create, url_path, body)
        return result

    async def apatch(self, url_path: str, body: Any, content_type: str = MERGE_PATCH) -> Obj:
        result: Obj = await self._run(self.patch, url_path, body, content_type)
        return result

    async def adelete(self, url_path: str) -> bool:
        result: bool = await self._run(self.delete, url_path)
        return result

    async def aapply(self, url_path_collection: str, body: Obj) -> Obj:
        """Create ``body`` in the collection, or merge-patch it when it exists already."""
        one = f"{url_path_collection}/{urllib.parse.quote(body['metadata']['name'], safe='')}"
        try:
            return await self.apatch(one, body)
        except NotFoundError:
            try:
                return await self.acreate(url_path_collection, body)
            except ConflictError:  # created in between: patch it
                return await self.apatch(one, body)
