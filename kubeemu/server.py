"""The strict emulator itself: kmock's KubernetesEmulator, made to behave as a kube-apiserver
where Rotor and its users depend on it (the module docstring of :mod:`kubeemu.emulator` lists
what; docs/demo.md the differences that remain).

A request goes through :meth:`StrictEmulator._handle`:

1. normalized: ``/api/v1/namespaces[/NAME]`` is the ``namespaces`` resource (kmock reads it as
   a namespace path), PUT is an update, a protobuf body is decoded (:mod:`kubeemu.protobuf`);
2. ``secure``: authenticated and impersonated (:mod:`kubeemu.authn`), authorized
   (:mod:`kubeemu.rbac`), the endpoints that store nothing answered (:mod:`kubeemu.reviews`),
   the RBAC escalation checks, mutating admission (:mod:`kubeemu.admission`);
3. a write is checked and stamped as the server does it (:mod:`kubeemu.writes`, custom resources
   against their schema :mod:`kubeemu.crds`) under one lock, then stored by kmock;
4. list, get and watch are filtered by selectors, a watch from a ``resourceVersion`` starts
   after it, and a custom resource is served as a Table when ``kubectl get`` asks for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock import action as k8s_action
from kmock._internal import rendering as kmock_rendering  # its StreamingError

from kubeemu import authn, crds, escalation, lifecycle, rbac, requestinfo, reviews, writes
from kubeemu.admission import Admission, AdmissionRefused
from kubeemu.rbac import Attributes, Policy, User
from kubeemu.requestinfo import NAMESPACES, attributes, merge_patch
from kubeemu.selectors import (
    SelectorError,
    check_fields,
    fields_match,
    labels_match,
    parse_fields,
    parse_labels,
    watch_event,
)
from kubeemu.writes import Refused, Target

ADMIN_USER = "rotor-admin"
ADMISSION_GROUP = "admissionregistration.k8s.io"
Obj = dict[str, Any]
MAX_WATCH_SECONDS = 1800
PATCH_TYPES = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
)  # the real server's --min-request-timeout


class StrictEmulator(kmock.KubernetesEmulator):
    """KubernetesEmulator plus what a kube-apiserver owns (see the module docstring)."""

    keep_requests = False
    """kmock keeps every request and matches each new one against its whole history (the cost
    grows with every request served). Unless this is True, only the requests still being
    served (this one, watches) are kept. Rotor's tests assert on objects, not kmock.requests."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1)
        self.last_rv = 0
        self._rv_lock = asyncio.Lock()
        self._inflight: set[int] = set()
        self.secure = False
        self.authn = authn.Tokens(ADMIN_USER)
        self._policy: Policy | None = None
        self.denials: list[str] = []  # every 403 message, for tests and the demo's log
        self.admission = Admission(self._webhook_configs, self._namespace_labels)
        self._webhooks: list[Obj] | None = None
        self.collected: list[str] = []  # what the garbage collector deleted or released
        self._watches: dict[int, aiohttp.web.BaseRequest] = {}
        self.crds: dict[str, crds.Version] = {}  # group/version/plural -> schema and columns
        self.listeners: list[Callable[[Obj, float], None]] = []
        """Called in the emulator's thread with a copy of each object a create or patch stored
        and the ``time.monotonic()`` just after the store, before the answer is sent."""

    @property
    def admin_token(self) -> str:
        return self.authn.admin_token

    def next_rv(self) -> str:
        self.last_rv = next(self._rv)
        return str(self.last_rv)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """A Status body as the real server writes it (kmock adds a server traceback)."""
        if isinstance(exc, Refused):
            exc = kmock.KubernetesError(
                status=exc.code, reason=exc.reason, message=exc.message, details={}
            )
        if not isinstance(exc, kmock.KubernetesError):  # a defect here, not the client's
            message = f"Internal error occurred: the emulator failed: {type(exc).__name__}"
            exc = kmock.KubernetesError(
                status=500, reason="InternalError", message=message, details={}
            )
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "message": exc.message or exc.reason or "",
                "reason": exc.reason or "",
                "details": exc.details or {},
                "code": exc.status,
            },
            status=exc.status,
        )

    async def _stream_error(self, exc: Exception, raw: aiohttp.web.StreamResponse) -> None:
        """An error in a started watch: an ERROR event with a Status, as the real server ends a
        watch (kmock writes a traceback)."""
        message = (
            exc.message if isinstance(exc, Refused) else f"the watch failed: {type(exc).__name__}"
        )
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
        await raw.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")

    # -- list, get and watch -----------------------------------------------------------------
    @staticmethod
    def _selectors(request: kmock.Request) -> Any:
        """The request's ``labelSelector``/``fieldSelector`` as a predicate (None: neither)."""
        label_sel = request.params.get("labelSelector") or ""
        field_sel = request.params.get("fieldSelector") or ""
        if not label_sel and not field_sel:
            return None
        try:
            labels, fields = parse_labels(label_sel), parse_fields(field_sel)
            check_fields(fields, request.resource.plural or "" if request.resource else "")
        except SelectorError as e:
            raise Refused(400, "BadRequest", str(e)) from None

        def match(obj: Any) -> bool:
            meta = obj.get("metadata") or {} if isinstance(obj, dict) else {}
            return labels_match(labels, meta.get("labels")) and fields_match(fields, obj)

        return match

    def _version_of(self, request: kmock.Request) -> crds.Version | None:
        res = request.resource
        return None if res is None else self.crds.get(f"{res.group}/{res.version}/{res.plural}")

    def _table(self, request: kmock.Request) -> crds.Version | None:
        """The CRD version to print a Table of, if the client asks for one (``kubectl get``)."""
        accept = next((v for k, v in request.headers.items() if k.lower() == "accept"), "")
        return self._version_of(request) if crds.wants_table(accept) else None

    async def _serve_list(self, request: kmock.Request) -> Any:
        """kmock's list, filtered by the selectors, with the ``kind``/``apiVersion`` a client
        decodes it by and the current ``resourceVersion`` (a watch from it misses nothing)."""
        match = self._selectors(request)
        out: Any = await super()._serve_list(request)
        if isinstance(out, dict) and request.resource is not None:
            if match is not None:
                out["items"] = [o for o in out.get("items") or [] if match(o)]
            res = request.resource
            kind = ""
            with contextlib.suppress(KeyError, TypeError, ValueError):
                kind = self.resources[res].kind or ""
            out = {
                "apiVersion": f"{res.group}/{res.version}" if res.group else str(res.version),
                "kind": f"{kind}List" if kind else "List",
                **out,
                "metadata": {"resourceVersion": str(self.last_rv)},
            }
            version = self._table(request)
            if version is not None:
                return crds.table(version, out["items"], str(self.last_rv))
        return out

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        out: Any = await super()._serve_fetch(request)
        version = self._table(request)
        if version is not None and isinstance(out, dict):
            return crds.table(version, [out], _rv_of(out))
        return out

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """kmock's watch, filtered: an object that stops matching is DELETED for this watch,
        one that starts matching ADDED, as the real server's watch cache does; from a
        ``resourceVersion``, only what changed after it."""
        match = self._selectors(request)
        since = _int(request.params.get("resourceVersion"))
        version = self._table(request)
        seen: set[tuple[str, str]] = set()
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict):
                yield event
                continue
            obj = event.get("object") or {}
            out = watch_event(event, match, seen)  # first: what matched before counts
            if since and (_int(_rv_of(obj)) or 0) <= since:
                continue
            if out is not None and version is not None:
                out = {**out, "object": crds.table(version, [out["object"]], _rv_of(obj))}
            if out is not None:
                yield out

    async def _watch(
        self, request: kmock.Request, raw: aiohttp.web.BaseRequest
    ) -> aiohttp.web.StreamResponse:
        """A watch stream as the real server writes it: ``application/json`` (kmock sends no
        content type, which kubectl refuses), one event per line, ended after
        ``timeoutSeconds`` (at most :data:`MAX_WATCH_SECONDS`)."""
        events = aiter(self._serve_watch(request))
        await anext(events)  # kmock's first, empty chunk; a bad selector is refused here
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        seconds = min(
            _int(request.params.get("timeoutSeconds")) or MAX_WATCH_SECONDS, MAX_WATCH_SECONDS
        )
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(seconds):
                async for event in events:
                    if isinstance(event, dict):
                        await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        return response

    async def _serve_version(self, request: kmock.Request) -> Any:
        """kmock names the core group version ``/v1``; the real server (and kubectl) ``v1``.
        kmock gives subresources their resource's short names (kubectl warns that ``sa`` could
        mean ``serviceaccounts/token``); the real server gives them none."""
        out: Any = await super()._serve_version(request)
        if isinstance(out, dict) and out.get("groupVersion") == "/v1":
            out["groupVersion"] = "v1"
        for res in out.get("resources") or [] if isinstance(out, dict) else []:
            if "/" in str(res.get("name", "")):  # a subresource has no names of its own
                res.update(shortNames=[], singularName="")
        return out

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

    def _key(self, request: kmock.Request) -> tuple[Any, str | None, str | None]:
        data = request.data if isinstance(request.data, dict) else {}
        meta = data.get("metadata") or {}
        return (request.resource, request.namespace, request.name or meta.get("name"))

    def _stored(self, key: tuple[Any, str | None, str | None]) -> Obj | None:
        objects: Any = self.objects
        if key not in objects:
            return None
        obj = objects[key]
        return None if obj.deleted else obj.raw

    # -- the request ---------------------------------------------------------------------------
    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, with the request parsed by :func:`requestinfo.parse`."""
        response: aiohttp.web.StreamResponse | None = None
        try:
            request = await requestinfo.parse(raw, len(self._requests))
            self._requests.append(request)
            try:
                return await self._handle(request)
            except kmock_rendering.StreamingError as e:  # a watch that had started
                response = e.args[0]
                raise e.__cause__ or e from None
        except Exception as e:
            if response is None or not response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, response)
            await response.write_eof()
            return response

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self._inflight.add(id(request))
        self._trim_history()
        try:
            if not self.secure:
                return await self._serve(request, [])
            user = self._who(request)
            a = attributes(request, user)
            self.check(a)
            special = reviews.answer(self, request, a)
            if special is not None:
                return special
            escalation.check(self, request, a)
            warnings = await self._admit(request, a)
            try:
                response = await self._serve(request, warnings)
                if request.action == k8s_action.CREATE and response.status == 200:
                    response.set_status(201)  # Created, as the real server answers
                if request.action in (k8s_action.DELETE, k8s_action.UPDATE) and request.name:
                    await lifecycle.collect_garbage(self, request)
                return response
            finally:
                group = request.resource.group if request.resource is not None else None
                if group == rbac.RBAC_GROUP:
                    self._policy = None  # rebuilt on the next request
                elif group == ADMISSION_GROUP:
                    self._webhooks = None
        except Refused as e:
            raise kmock.KubernetesError(
                status=e.code, reason=e.reason, message=e.message, details={}
            ) from None
        finally:
            self._inflight.discard(id(request))

    # -- authentication and authorization -------------------------------------------------------
    def _who(self, request: kmock.Request) -> User:
        """The user the request acts as: its token's, or the one it may impersonate."""
        header = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        user = self.authn.authenticate(header, self.sa_uid) if header else authn.ANONYMOUS
        if user is None:
            raise Refused(401, "Unauthorized", "Unauthorized")
        raw = request._raw_request
        headers: Any = raw.headers if raw is not None else request.headers
        acting, checks = authn.impersonate(user, headers, self.allowed)
        for check in checks:
            self.check(check)
        return acting

    def sa_uid(self, namespace: str, name: str) -> str | None:
        """The uid of the stored ServiceAccount ``namespace/name`` (None: there is none)."""
        sa = self._stored((kmock.resource("", "v1", "serviceaccounts"), namespace, name))
        return None if sa is None else str((sa.get("metadata") or {}).get("uid") or "")

    def policy(self) -> Policy:
        if self._policy is None:
            objs: list[Any] = [
                obj.raw
                for (res, _ns, _name), obj in self.objects.items()
                if res.group == rbac.RBAC_GROUP and not obj.deleted
            ]
            self._policy = Policy.of([*rbac.BOOTSTRAP, *objs])
        return self._policy

    def allowed(self, a: Attributes) -> bool:
        return self.policy().authorize(a)

    def check(self, a: Attributes, reason: str = "") -> None:
        if reason or not self.allowed(a):
            message = rbac.forbidden_message(a, reason)
            self.denials.append(message)
            raise kmock.KubernetesError(
                status=403,
                reason="Forbidden",
                message=message,
                details={"name": a.name, "group": a.api_group, "kind": a.resource}
                if a.is_resource
                else {},
            )

    def issue_token(self, namespace: str, name: str, seconds: float | None = None) -> str:
        """A token for the ServiceAccount ``namespace/name`` (what TokenRequest returns), valid
        for ``seconds`` (None: as long as the emulator runs), bound to the account if it is
        stored (deleting it ends the token)."""
        return self.authn.issue(namespace, name, seconds, self.sa_uid(namespace, name) or "")

    def add_user(self, name: str, groups: Iterable[str] = ()) -> str:
        """A token for a plain user (what a ``--token-auth-file`` line gives a real server)."""
        return self.authn.add_user(name, groups)

    # -- admission ------------------------------------------------------------------------------
    def _webhook_configs(self) -> list[Obj]:
        """The stored MutatingWebhookConfigurations (cached until one is written)."""
        if self._webhooks is None:
            self._webhooks = [
                copy.deepcopy(obj.raw)
                for (res, _ns, _name), obj in self.objects.items()
                if res.group == ADMISSION_GROUP
                and res.plural == "mutatingwebhookconfigurations"
                and not obj.deleted
            ]
        return self._webhooks

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        """A namespace's labels (the real server always sets kubernetes.io/metadata.name)."""
        stored = self._stored((NAMESPACES, None, namespace)) or {}
        labels = dict((stored.get("metadata") or {}).get("labels") or {})
        return {**labels, "kubernetes.io/metadata.name": namespace}

    async def _admit(self, request: kmock.Request, a: Attributes) -> list[str]:
        """Mutating admission (:mod:`kubeemu.admission`) of a create or an update; returns the
        webhooks' warnings."""
        warnings: list[str] = []
        if request.resource is None or a.verb not in ("create", "update", "patch"):
            return warnings
        if not self._webhook_configs():
            return warnings
        operation = "CREATE" if a.verb == "create" else "UPDATE"
        old = None if operation == "CREATE" else self._stored(self._key(request))
        obj = self._result(request)
        if obj is None or not isinstance(request.data, (dict, list)):
            return warnings
        try:
            admitted = await self.admission.admit(
                copy.deepcopy(obj),
                copy.deepcopy(old) if old is not None else None,
                operation,
                request.resource.group or "",
                request.resource.version or "",
                a.resource,
                a.subresource,
                a.namespace,
                a.user,
                str(obj.get("kind") or ""),
                warnings,
            )
        except AdmissionRefused as e:
            raise Refused(e.code, e.reason, e.message) from None
        if admitted != obj:  # the admitted object replaces the request's body
            if operation == "UPDATE":
                admitted.setdefault("metadata", {}).pop("resourceVersion", None)
            if isinstance(request.data, dict):
                request.data.clear()
                request.data.update(admitted)
        return warnings

    def _result(self, request: kmock.Request) -> Obj | None:
        """The object as it would be stored after this create, PUT or patch (None: a patch of
        nothing stored)."""
        if request.action == k8s_action.CREATE or requestinfo.method(request) == "PUT":
            return request.data if isinstance(request.data, dict) else None
        stored = self._stored(self._key(request))
        if stored is None:
            return None
        ctype = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        if isinstance(request.data, list) or "json-patch" in ctype:
            try:
                out: Obj = jsonpatch.apply_patch(copy.deepcopy(stored), request.data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise Refused(422, "Invalid", _patch_failure(e)) from None
            return out
        if "patch" not in ctype:  # a PATCH must say which kind of patch it is
            raise Refused(415, "UnsupportedMediaType", PATCH_TYPES)
        if not isinstance(request.data, dict):
            raise Refused(400, "BadRequest", "the patch is not a JSON object")
        merged: Obj = merge_patch(copy.deepcopy(stored), request.data)
        return merged

    def drop_watches(self) -> int:
        """Close the connection of every open watch stream; returns how many were closed.
        Call it in the emulator's loop (:meth:`EmulatorThread.drop_watches` does)."""
        dropped = 0
        for raw in list(self._watches.values()):
            if raw.transport is not None:
                raw.transport.close()
                dropped += 1
        return dropped

    # -- storing -----------------------------------------------------------------------------
    async def _serve(
        self, request: kmock.Request, warnings: list[str]
    ) -> aiohttp.web.StreamResponse:
        raw = request._raw_request  # kmock keeps aiohttp's request (the connection) here
        if request.action == k8s_action.WATCH and raw is not None:
            self._watches[id(request)] = raw
            try:
                return await self._watch(request, raw)
            finally:
                self._watches.pop(id(request), None)
        if request.action == k8s_action.DELETE and request.resource is not None:
            return await lifecycle.delete(self, request, super()._handle)
        if request.resource is None or request.action not in (
            k8s_action.CREATE,
            k8s_action.UPDATE,
        ):
            return await super()._handle(request)
        # One lock around check, stamp and store, so two racing writes cannot both pass.
        async with self._rv_lock:
            obj, more = self._written(request)
            meta = obj["metadata"]
            key = (request.resource, meta.get("namespace"), meta.get("name"))
            data: Any = obj
            if request.action == k8s_action.UPDATE:
                data = [{"op": "replace", "path": "", "value": obj}]
            requestinfo.replace_data(request, data)
            response = await super()._handle(request)
            for w in [*warnings, *more]:
                response.headers.add("Warning", f'299 - "{_quoted(w)}"')
            if self.listeners and response.status < 300:
                stored = self._stored(key)
                if stored is not None:
                    at = time.monotonic()
                    copied = copy.deepcopy(stored)
                    for listener in list(self.listeners):
                        listener(copied, at)
            return response

    def target(self, resource: Any, namespaced_url: bool) -> Target:
        """What a write to ``resource`` goes to (kind, scope, status subresource, custom)."""
        key = f"{resource.group}/{resource.version}/{resource.plural}"
        try:
            info = self.resources[resource]
        except (KeyError, TypeError, ValueError):
            return Target("", resource.group or "", namespaced_url, False, key in self.crds)
        subresources = set(info.subresources or ())
        namespaced = bool(info.namespaced) if info.namespaced is not None else namespaced_url
        return Target(
            info.kind or "",
            resource.group or "",
            namespaced,
            "status" in subresources,
            key in self.crds,
        )

    def _written(self, request: kmock.Request) -> tuple[Obj, list[str]]:
        """The object a create or an update stores, checked and stamped (or :class:`Refused`),
        and the warnings it earns."""
        res = request.resource
        assert res is not None
        target = self.target(res, request.namespace is not None)
        url_ns = request.namespace or ""
        plural = rbac.qualified(res.plural or "", res.group or "")
        if request.action == k8s_action.CREATE:
            if target.namespaced and not url_ns:
                raise Refused(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            if not isinstance(request.data, dict):
                raise Refused(400, "BadRequest", "the body of the request is not a JSON object")
            obj = writes.prepare_create(
                request.data, url_ns, target, self.next_rv(), _now(), seeding=not self.secure
            )
            name = obj["metadata"]["name"]
            if self._stored((res, url_ns or None, name)) is not None:
                raise Refused(409, "AlreadyExists", f'{plural} "{name}" already exists')
            lifecycle.on_create(res, obj)
        else:
            stored = self._stored(self._key(request))
            if stored is None:
                raise Refused(404, "NotFound", f'{plural} "{request.name}" not found')
            requestinfo.precondition(request, stored, plural, target)
            new = self._result(request)
            assert new is not None
            obj = writes.prepare_update(
                stored, new, url_ns, request.name or "", request.subresource or "", target
            )
            obj["metadata"]["resourceVersion"] = self.next_rv()
        warned: list[str] = []
        version = self._version_of(request)
        if version is not None:
            strict = request.params.get("fieldValidation") == "Strict"
            warned = crds.validated(version, target, obj, strict=strict)
        return obj, warned


def _patch_failure(e: Exception) -> str:
    """Why a JSON patch does not apply, without the values it compared (a ``test`` of a
    Secret's data would otherwise echo the stored value)."""
    if isinstance(e, jsonpatch.JsonPatchTestFailed):
        return "the JSON patch does not apply: a test operation failed"
    return f"the JSON patch does not apply: {type(e).__name__}"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _rv_of(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str((meta or {}).get("resourceVersion") or "")
