"""A Kubernetes API emulator for the demo, the system tests and benchmarks: kmock's
KubernetesEmulator (from the author of kopf), made stricter. It is an emulator, not a
kube-apiserver: no admission chain, no RBAC, no kubelet, no garbage collector.

kmock 0.8 stores objects as plain JSON and sets no ``uid``/``resourceVersion``/
``creationTimestamp``, so optimistic concurrency is not emulated. :class:`StrictEmulator` adds a
small handler (``_handle`` below) that, for every create and patch:

* stamps ``metadata.uid``, ``metadata.creationTimestamp`` (create) and a fresh, cluster-wide
  increasing ``metadata.resourceVersion`` (create and patch), as the real API server does;
* answers **409 Conflict** to a patch whose body carries a ``metadata.resourceVersion`` (merge
  patch) or a ``test`` op on ``/metadata/resourceVersion`` (JSON patch) that is not the stored
  one - the precondition Rotor's writers and the ACL backend rely on;
* fills ``metadata.namespace`` from the URL on create (kmock loses watch events of bodies
  without it, the real API server fills it in);
* on the ``status`` subresource keeps only ``status`` (the real server ignores the rest).

* filters list and watch by ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``,
  ``k in (a,b)``, ``k notin (a,b)``; a malformed selector is a 400), so a controller that asks
  the server for only its objects is measured as it would be against a real API server. A watch
  sends an object's events while it matches (no synthetic DELETED when its labels stop matching).

It still ignores field selectors, never calls admission webhooks and answers 404 to PUT;
product code filters on the client side too.

:class:`EmulatorThread` runs it in a background thread with its own event loop, so synchronous
code, the ``kubernetes`` client and subprocesses (an agent, the controller) share one URL.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import re
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml
from kmock import action as k8s_action
from kubernetes import client

from rotor.crd import all_crds

STARTUP_TIMEOUT = 10.0


_REQUIREMENT = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<nkey>[^\s,!=()]+)"
    r"|(?P<key>[^\s,!=()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,!=()]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?)\s*(?:,|$)"
)


@dataclass(frozen=True)
class Requirement:
    """One requirement of a label selector."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def __call__(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "!="):
            return (labels.get(self.key) in self.values) == (self.op == "=")
        return (labels.get(self.key) in self.values) == (self.op == "in")


def parse_label_selector(text: str) -> list[Requirement]:
    """A label selector string as its requirements (all must hold).

    Raises ValueError naming the part that does not parse."""
    out: list[Requirement] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _REQUIREMENT.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"unable to parse requirement: {text[pos:]!r}")
        pos = m.end()
        if m["not"]:
            out.append(Requirement(m["nkey"], "!"))
        elif m["op"]:
            op = "!=" if m["op"] == "!=" else "="
            out.append(Requirement(m["key"], op, frozenset([m["value"]])))
        elif m["set"]:
            vs = frozenset(x.strip() for x in m["values"].split(",") if x.strip())
            out.append(Requirement(m["key"], m["set"], vs))
        else:
            out.append(Requirement(m["key"], "exists"))
    return out


def _matches(obj: Any, tests: list[Requirement]) -> bool:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    labels = (meta.get("labels") if isinstance(meta, dict) else None) or {}
    return all(t(labels) for t in tests)


def _selector(request: kmock.Request) -> list[Requirement]:
    text = (request.params or {}).get("labelSelector") or ""
    try:
        return parse_label_selector(text)
    except ValueError as e:
        raise kmock.KubernetesError(status=400, reason="BadRequest", message=str(e)) from None


class StrictEmulator(kmock.KubernetesEmulator):
    """KubernetesEmulator plus uid/resourceVersion/creationTimestamp and 409 on a stale rv."""

    keep_requests = False
    """kmock keeps every request and matches each new one against its whole history (the cost
    grows with every request served). Unless this is True, only the requests still being
    served (this one, watches) are kept. Rotor's tests assert on objects, not kmock.requests."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1)
        self._rv_lock = asyncio.Lock()
        self._inflight: set[int] = set()

    def _trim_history(self) -> None:
        history = self._requests
        if not self.keep_requests and len(history) > len(self._inflight):
            history[:] = [r for r in history if id(r) in self._inflight]

    def _KubernetesEmulator__get_objs(  # overrides kmock's name-mangled scan
        self, request: kmock.Request, strict: bool
    ) -> list[Any]:
        """kmock scans every stored object for each request; a request naming one object (get,
        patch, delete) is answered by a dict lookup here instead - same result, O(1), so the
        benchmarks measure Rotor rather than the emulator."""
        if strict and request.name is not None:
            data: Any = self.objects._objects
            obj = data.get((request.resource, request.namespace, request.name))
            return [] if obj is None else [obj]
        parent: Any = super()
        return list(parent._KubernetesEmulator__get_objs(request, strict))

    async def _serve_list(self, request: kmock.Request) -> Any:
        tests = _selector(request)
        result: Any = await super()._serve_list(request)
        if tests:
            result["items"] = [o for o in result["items"] if _matches(o, tests)]
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        tests = _selector(request)
        async for event in super()._serve_watch(request):
            if not tests or not isinstance(event, dict) or _matches(event.get("object"), tests):
                yield event

    def _key(self, request: kmock.Request) -> tuple[Any, str | None, str | None]:
        data = request.data if isinstance(request.data, dict) else {}
        meta = data.get("metadata") or {}
        return (
            request.resource,
            request.namespace or meta.get("namespace"),
            request.name or meta.get("name"),
        )

    def _stored(self, key: tuple[Any, str | None, str | None]) -> dict[str, Any] | None:
        objects: Any = self.objects
        if key not in objects:
            return None
        obj = objects[key]
        return None if obj.deleted else obj.raw

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self._inflight.add(id(request))
        self._trim_history()
        try:
            return await self._handle_strict(request)
        finally:
            self._inflight.discard(id(request))

    async def _handle_strict(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action not in (
            k8s_action.CREATE,
            k8s_action.UPDATE,
        ):
            return await super()._handle(request)
        # One lock around check, stamp and store, so two racing patches cannot both pass.
        async with self._rv_lock:
            key = self._key(request)
            rv = str(next(self._rv))
            if request.action == k8s_action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                if request.namespace and not meta.get("namespace"):
                    meta["namespace"] = request.namespace
                now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now)
                meta["resourceVersion"] = rv
                meta.setdefault("generation", 1)
            elif request.action == k8s_action.UPDATE:
                stored = self._stored(key)
                current = ((stored or {}).get("metadata") or {}).get("resourceVersion")
                if isinstance(request.data, dict):
                    if request.subresource == "status":
                        kept = {"status": request.data.get("status")}
                        meta = request.data.get("metadata") or {}
                        if "resourceVersion" in meta:
                            kept["metadata"] = {"resourceVersion": meta["resourceVersion"]}
                        request.data.clear()
                        request.data.update(kept)
                    meta = request.data.setdefault("metadata", {})
                    expected = meta.get("resourceVersion")
                    if stored is not None and expected is not None and expected != current:
                        raise _conflict(key, expected, current)
                    meta["resourceVersion"] = rv
                elif isinstance(request.data, list):
                    for op in request.data:
                        if (
                            isinstance(op, dict)
                            and op.get("op") == "test"
                            and op.get("path") == "/metadata/resourceVersion"
                            and stored is not None
                            and op.get("value") != current
                        ):
                            raise _conflict(key, op.get("value"), current)
                    request.data.append(
                        {"op": "add", "path": "/metadata/resourceVersion", "value": rv}
                    )
            return await super()._handle(request)


def _conflict(key: Any, expected: object, current: object) -> kmock.KubernetesError:
    return kmock.KubernetesError(
        status=409,
        reason="Conflict",
        message=(
            f"Operation cannot be fulfilled on {key[0]} {key[2]!r}: the object has been "
            f"modified (resourceVersion {expected!r} is stale, current is {current!r}); "
            "please apply your changes to the latest version and try again"
        ),
    )


def crd_documents(directory: Path | None = None) -> list[dict[str, Any]]:
    """Rotor's CRDs: from ``directory``'s YAML files, or (default) from :mod:`rotor.crd`, the
    source the shipped manifests are generated from."""
    if directory is None:
        return [copy.deepcopy(crd) for _, crd in sorted(all_crds().items())]
    docs: list[dict[str, Any]] = []
    for f in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def register_crds(k8s: kmock.KubernetesEmulator, crds: Iterable[Mapping[str, Any]]) -> None:
    """Declare each CRD's served versions to the emulator (discovery, verbs, subresources)."""
    for crd in crds:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            k8s.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = (
                kmock.ResourceInfo(
                    kind=names["kind"],
                    singular=names.get("singular"),
                    namespaced=spec["scope"] == "Namespaced",
                    shortnames=set(names.get("shortNames", [])),
                    verbs={"get", "list", "watch", "create", "patch", "delete", "update"},
                    subresources=set(version.get("subresources") or {}),
                )
            )


class EmulatorThread:
    """The strict emulator on 127.0.0.1, served from a background thread with its own loop."""

    def __init__(self, crds: Iterable[Mapping[str, Any]] | None = None) -> None:
        self._crds = list(crd_documents() if crds is None else crds)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.k8s: StrictEmulator | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with StrictEmulator() as k8s, kmock.Server(k8s, host="127.0.0.1") as srv:
            with warnings.catch_warnings():  # kmock 0.8 uses importlib.resources.read_binary
                warnings.simplefilter("ignore", DeprecationWarning)
                k8s.resources.load_bundled()
            register_crds(k8s, self._crds)
            self.k8s = k8s
            self.url = str(srv.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STARTUP_TIMEOUT)

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def configuration(self) -> client.Configuration:
        cfg = client.Configuration()
        cfg.host = self.url
        return cfg

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(self.configuration())

    def objects(self, api: str, plural: str) -> list[dict[str, Any]]:
        """A copy of the stored objects of ``api`` (``v1``, ``rotor.dev/v1alpha1``) ``plural``."""
        k8s, loop = self.k8s, self._loop
        assert k8s is not None
        assert loop is not None
        group, _, version = api.rpartition("/")

        async def grab() -> list[dict[str, Any]]:
            return [
                copy.deepcopy(obj.raw)
                for (res, _ns, _name), obj in k8s.objects.items()
                if (res.group, res.version, res.plural) == (group, version, plural)
                and not obj.deleted
            ]

        return asyncio.run_coroutine_threadsafe(grab(), loop).result(STARTUP_TIMEOUT)


def iter_items(objs: Iterable[Mapping[str, Any]], namespace: str) -> Iterator[Mapping[str, Any]]:
    return (o for o in objs if o.get("metadata", {}).get("namespace") == namespace)
