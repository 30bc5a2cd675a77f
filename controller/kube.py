"""A thin, dict-based edge over the official ``kubernetes`` client.

The generated typed API classes turn every answer into pydantic models and pick a patch content
type by guessing; the controller works on plain dicts and needs exact patch semantics (JSON merge
patch with ``metadata.resourceVersion`` as a precondition). So this module builds requests with
the client's own ``ApiClient`` (auth, TLS, host from kubeconfig or in-cluster config) and maps HTTP
failures onto :mod:`rotor.errors` in one place:

* 404 -> :class:`~rotor.errors.NotFoundError`
* 409 -> :class:`~rotor.errors.ConflictError` (stale resourceVersion, or already exists)
* 429, 5xx, connection errors -> :class:`~rotor.errors.UnavailableError`
* other 4xx -> :class:`~rotor.errors.PermanentError`

Blocking calls run in a private thread pool (``concurrency`` threads, matching the connection
pool), so fan-out to many namespaces runs in parallel without starving ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rotor.errors import ConflictError, NotFoundError, PermanentError, UnavailableError
from rotor.kubepaths import api_path

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
DEFAULT_CONCURRENCY = 16
REQUEST_TIMEOUT = 30.0

Obj = dict[str, Any]

path = api_path
"""The API path of a resource (:func:`rotor.kubepaths.api_path`, the one builder)."""


class ForbiddenError(PermanentError):
    """401/403: the controller's identity lacks a permission (the message names it, as the API
    server's Status does: user, verb, resource, group, namespace)."""


def api_error(status: int, reason: str, what: str, message: str = "") -> Exception:
    """The rotor error for an HTTP status (0: no answer at all)."""
    text = f"{what}: HTTP {status} {reason}".strip()
    if status in (401, 403):
        return ForbiddenError(
            f"{text}: {message or 'refused'} (the controller's ServiceAccount lacks this "
            "permission: compare its ClusterRole with the chart's)"
        )
    if status == 404:
        return NotFoundError(text)
    if status == 409:
        return ConflictError(text)
    if status == 0 or status == 429 or status >= 500:
        return UnavailableError(text)
    return PermanentError(text)


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def connection_problem(e: BaseException) -> str:
    """``the API server at https://10.0.0.1:6443 did not answer (Connection refused)``: the
    server and the cause, from urllib3's nested exceptions (never its object reprs)."""
    pool = e.pool if isinstance(e, urllib3.exceptions.MaxRetryError) else None
    conn = getattr(e, "conn", None)  # a bare NewConnectionError (no urllib3 retries)
    if pool is not None:
        server = f"{pool.scheme}://{pool.host}:{pool.port}"
    elif conn is not None:
        scheme = "https" if isinstance(conn, urllib3.connection.HTTPSConnection) else "http"
        server = f"{scheme}://{conn.host}:{conn.port}"
    else:
        server = "?"
    reason = getattr(e, "reason", None) or e
    text = str(reason)
    if m := _ERRNO.search(text):
        cause = m.group(1).strip()
    elif isinstance(reason, urllib3.exceptions.SSLError) or "SSL" in text:
        cause = "TLS: " + text.rsplit(":", 1)[-1].strip(" )'\"")
    elif isinstance(reason, TimeoutError | urllib3.exceptions.TimeoutError) or "timed out" in text:
        cause = "timed out"
    else:
        cause = type(reason).__name__
    return f"the API server at {server} did not answer ({cause})"


@contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Turn ``ApiException`` and connection errors raised inside into rotor errors."""
    try:
        yield
    except ApiException as e:
        message = ""
        with suppress(ValueError, AttributeError, TypeError):
            message = str(json.loads(e.body or b"{}").get("message") or "")
        raise api_error(int(e.status or 0), str(e.reason or ""), what, message) from None
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
            if resp.status in (401, 403):
                raise PermanentError(
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
            reason, message = resp.reason or "", ""
            with suppress(ValueError, AttributeError):
                body = json.loads(raw)
                reason = body.get("reason", reason)
                message = str(body.get("message") or "")
            raise api_error(resp.status, reason, f"{method} {url_path}", message)
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
