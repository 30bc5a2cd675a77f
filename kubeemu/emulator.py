"""A Kubernetes API emulator for the demo, the system tests and benchmarks: kmock's
KubernetesEmulator (from the author of kopf), made stricter. It is an emulator, not a
kube-apiserver (see docs/demo.md, "What is enforced").

With ``secure=True`` (the harness, ``rotor demo``, ``rotor kube``, tests/system) every request is
authenticated and authorized as the real server does it:

* **authentication**: a bearer token, either the admin token (user ``rotor-admin``, group
  ``system:masters``) or a service-account token issued by the TokenRequest subresource
  (``POST .../serviceaccounts/<name>/token``; the ServiceAccount must exist). The user is then
  ``system:serviceaccount:<ns>:<name>`` in ``system:serviceaccounts``,
  ``system:serviceaccounts:<ns>`` and ``system:authenticated``. No token or an unknown one: 401
  with a Status body;
* **authorization**: Kubernetes RBAC (:mod:`kubeemu.rbac`) from the Roles, ClusterRoles and
  bindings stored here plus the bootstrap ``cluster-admin``, ``system:discovery`` and
  ``system:basic-user``; a refusal is a 403 Status with the real server's message;
* **escalation**: creating or patching a Role/ClusterRole needs every right it grants (or
  ``escalate``), a binding needs the rights of the role it references (or ``bind`` on it);
* ``SelfSubjectAccessReview`` and ``SubjectAccessReview`` are answered (``kubectl auth can-i``).

``secure=False`` (the default of :class:`EmulatorThread`) is for test tiers that check no
permission (tests/controller, tests/agent_k8s, ...): every request is served as the admin's.

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
* on the ``status`` subresource keeps only ``status`` (the real server ignores the rest);
* filters list and watch by ``labelSelector`` and ``fieldSelector`` (:mod:`kubeemu.selectors`;
  a malformed selector is a 400), in every mode, so a controller that asks the server for only
  its objects is measured as it would be against a real API server; a watch reports an object
  that stops matching as DELETED (with its new state) and one that starts matching as ADDED, as
  the real watch cache does.

It answers 404 to PUT; product code filters on the client side too.

For benchmarks and the soak, two hooks: :attr:`StrictEmulator.listeners` are called with every
object a create or patch stored and the ``time.monotonic()`` of the store (so a clock can start
when a commit is stored, not when some watch delivers it), and
:meth:`StrictEmulator.drop_watches` closes every open watch stream, as an API server restart or a
load balancer's idle timeout does (clients must resume).

:class:`EmulatorThread` runs it in a background thread with its own event loop, so synchronous
code, the ``kubernetes`` client and subprocesses (an agent, the controller) share one URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import itertools
import secrets
import ssl
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import kmock
import yaml
from kmock import action as k8s_action
from kubernetes import client

from controller import certs
from kubeemu import rbac
from kubeemu.admission import Admission, AdmissionRefused
from kubeemu.rbac import Attributes, Policy, User
from kubeemu.selectors import SelectorError, fields_match, labels_match, parse_fields, parse_labels
from rotor.crd import all_crds

STARTUP_TIMEOUT = 10.0
ADMIN_USER = "rotor-admin"
ADMISSION_GROUP = "admissionregistration.k8s.io"
TOKEN_TTL = 3600
RBAC_KINDS = {
    "roles": "Role",
    "clusterroles": "ClusterRole",
    "rolebindings": "RoleBinding",
    "clusterrolebindings": "ClusterRoleBinding",
}
_METHOD_VERB = {"POST": "create", "PUT": "update", "PATCH": "patch"}


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
        self.secure = False
        self.admin_token = secrets.token_urlsafe(24)
        self.tokens: dict[str, User] = {
            self.admin_token: User(ADMIN_USER, (rbac.MASTERS, rbac.AUTHENTICATED))
        }
        self.expiry: dict[str, float] = {}  # token -> when it stops authenticating
        self._policy: Policy | None = None
        self.denials: list[str] = []  # every 403 message, for tests and the demo's log
        self.admission = Admission(self._webhook_configs, self._namespace_labels)
        self._webhooks: list[dict[str, Any]] | None = None
        self.collected: list[str] = []  # what the garbage collector deleted or released
        self._watches: dict[int, aiohttp.web.BaseRequest] = {}
        self.listeners: list[Callable[[dict[str, Any], float], None]] = []
        """Called in the emulator's thread with a copy of each object a create or patch stored
        and the ``time.monotonic()`` just after the store, before the answer is sent."""

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """A Status body as the real server writes it (kmock adds a server traceback)."""
        if isinstance(exc, kmock.KubernetesError):
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
        out: aiohttp.web.StreamResponse = await super()._render_error(exc)
        return out

    # -- label and field selectors -----------------------------------------------------------
    @staticmethod
    def _selectors(request: kmock.Request) -> Any:
        """The request's ``labelSelector``/``fieldSelector`` as a predicate (None: neither)."""
        label_sel = request.params.get("labelSelector") or ""
        field_sel = request.params.get("fieldSelector") or ""
        if not label_sel and not field_sel:
            return None
        try:
            labels, fields = parse_labels(label_sel), parse_fields(field_sel)
        except SelectorError as e:
            raise kmock.KubernetesError(
                status=400, reason="BadRequest", message=str(e), details={}
            ) from None

        def match(obj: Any) -> bool:
            meta = obj.get("metadata") or {} if isinstance(obj, dict) else {}
            return labels_match(labels, meta.get("labels")) and fields_match(fields, obj)

        return match

    async def _serve_list(self, request: kmock.Request) -> Any:
        """kmock's list, filtered by the selectors, with the ``kind``/``apiVersion`` a client
        decodes it by (kubectl refuses a list without them)."""
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
            }
        return out

    async def _serve_watch(self, request: kmock.Request) -> Any:
        """kmock's watch, filtered: an object that stops matching is DELETED for this watch,
        one that starts matching ADDED, as the real server's watch cache does."""
        match = self._selectors(request)
        seen: set[tuple[str, str]] = set()
        async for event in super()._serve_watch(request):
            if match is None or not isinstance(event, dict):
                yield event
                continue
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            key = (meta.get("namespace") or "", meta.get("name") or "")
            now = match(obj)
            if event.get("type") == "DELETED":
                if key in seen:
                    seen.discard(key)
                    yield event
            elif now:
                kind = "MODIFIED" if key in seen else "ADDED"
                seen.add(key)
                yield {**event, "type": kind}
            elif key in seen:
                seen.discard(key)
                yield {**event, "type": "DELETED"}

    # -- garbage collection --------------------------------------------------------------------
    async def _collect_garbage(self, request: kmock.Request) -> None:
        """After a delete: remove the dependents whose every owner is gone (ownerReferences,
        background propagation; a dependent with finalizers gets a deletionTimestamp)."""
        gone: list[str] = []
        key = self._key(request)
        async with self._lock:
            objects: Any = self.objects
            if key in objects and objects[key].deleted:
                uid = (objects[key].last.raw.get("metadata") or {}).get("uid")
                if uid:
                    gone.append(str(uid))
            while gone:
                uid = gone.pop()
                for dkey, dep in list(objects.items()):
                    if dep.deleted:
                        continue
                    raw = dep.raw
                    meta = raw.get("metadata") or {}
                    refs = meta.get("ownerReferences") or []
                    if not any(r.get("uid") == uid for r in refs):
                        continue
                    alive = [r for r in refs if r.get("uid") != uid and self._uid_alive(r)]
                    if alive:
                        dep.patch({"metadata": {"ownerReferences": alive}})
                        event = {"type": "MODIFIED", "object": dep.raw}
                    elif meta.get("finalizers"):
                        if meta.get("deletionTimestamp"):
                            continue
                        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                        dep.patch({"metadata": {"deletionTimestamp": now}})
                        event = {"type": "MODIFIED", "object": dep.raw}
                    else:
                        dep.delete()
                        event = {"type": "DELETED", "object": dep.last.raw}
                        if meta.get("uid"):
                            gone.append(str(meta["uid"]))
                    self.collected.append(f"{dkey[0].plural}/{dkey[1] or ''}/{dkey[2]}")
                    await self._buses[dkey[0]].put(event)

    def _uid_alive(self, ref: Any) -> bool:
        uid = ref.get("uid")
        objects: Any = self.objects
        return any(
            not obj.deleted and (obj.raw.get("metadata") or {}).get("uid") == uid
            for _key, obj in objects.items()
        )

    async def _serve_version(self, request: kmock.Request) -> Any:
        """kmock names the core group version ``/v1``; the real server (and kubectl) ``v1``."""
        out: Any = await super()._serve_version(request)
        if isinstance(out, dict) and out.get("groupVersion") == "/v1":
            out["groupVersion"] = "v1"
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
            if not self.secure:
                return await self._handle_strict(request)
            user = self.authenticate(request)
            a = attributes(request, user)
            self.check(a)
            special = await self._special(request, a)
            if special is not None:
                return special
            await self._check_escalation(request, a)
            await self._admit(request, a)
            try:
                response = await self._handle_strict(request)
                if request.action == k8s_action.CREATE and response.status == 200:
                    response.set_status(201)  # Created, as the real server answers
                if request.action in (k8s_action.DELETE, k8s_action.UPDATE) and request.name:
                    await self._collect_garbage(request)
                return response
            finally:
                group = request.resource.group if request.resource is not None else None
                if group == rbac.RBAC_GROUP:
                    self._policy = None  # rebuilt on the next request
                elif group == ADMISSION_GROUP:
                    self._webhooks = None
        finally:
            self._inflight.discard(id(request))

    # -- authentication and authorization -------------------------------------------------------
    def authenticate(self, request: kmock.Request) -> User:
        header = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = header.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        expires = self.expiry.get(token.strip())
        if expires is not None and time.time() >= expires:
            user = None  # an expired TokenRequest token, as the real server refuses it
        if user is None:
            raise kmock.KubernetesError(
                status=401, reason="Unauthorized", message="Unauthorized", details={}
            )
        return user

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
        for ``seconds`` (None: as long as the emulator runs)."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = User.service_account(namespace, name)
        if seconds is not None:
            self.expiry[token] = time.time() + seconds
        return token

    def add_user(self, name: str, groups: Iterable[str] = ()) -> str:
        """A token for a plain user (what a ``--token-auth-file`` line gives a real server)."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = User(name, (*groups, rbac.AUTHENTICATED))
        return token

    async def _special(
        self, request: kmock.Request, a: Attributes
    ) -> aiohttp.web.StreamResponse | None:
        """The API endpoints that store nothing: TokenRequest and the access reviews."""
        if a.verb != "create":
            return None
        if a.resource == "serviceaccounts" and a.subresource == "token" and not a.api_group:
            assert request.resource is not None
            sa_res = kmock.resource("", "v1", "serviceaccounts")
            if self._stored((sa_res, a.namespace, a.name)) is None:
                raise kmock.KubernetesError(
                    status=404,
                    reason="NotFound",
                    message=f'serviceaccounts "{a.name}" not found',
                    details={"name": a.name, "kind": "serviceaccounts"},
                )
            body = request.data if isinstance(request.data, dict) else {}
            ttl = int((body.get("spec") or {}).get("expirationSeconds") or TOKEN_TTL)
            if ttl < 600:
                raise kmock.KubernetesError(
                    status=422,
                    reason="Invalid",
                    message=f'TokenRequest.authentication.k8s.io "{a.name}" is invalid: '
                    "spec.expirationSeconds: Invalid value: "
                    f"{ttl}: may not specify a duration less than 10 minutes",
                    details={"name": a.name, "kind": "TokenRequest"},
                )
            expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)
            return aiohttp.web.json_response(
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "metadata": {"name": a.name, "namespace": a.namespace},
                    "spec": {**(body.get("spec") or {}), "expirationSeconds": ttl},
                    "status": {
                        "token": self.issue_token(a.namespace, a.name, ttl),
                        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                },
                status=201,
            )
        if a.api_group == "authorization.k8s.io" and a.resource in (
            "selfsubjectaccessreviews",
            "subjectaccessreviews",
        ):
            review = request.data if isinstance(request.data, dict) else {}
            if request.body.startswith(PROTOBUF_MAGIC):
                review = access_review_from_protobuf(request.body)
            spec = review.get("spec") or {}
            who = a.user
            if a.resource == "subjectaccessreviews":
                who = User(
                    spec.get("user", ""), tuple(spec.get("groups") or ()), spec.get("uid", "")
                )
            ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
            if ra:
                asked = Attributes(
                    who,
                    ra.get("verb", ""),
                    ra.get("group", ""),
                    ra.get("resource", ""),
                    ra.get("subresource", ""),
                    ra.get("namespace", ""),
                    ra.get("name", ""),
                )
            else:
                asked = Attributes(
                    who, (nra or {}).get("verb", ""), path=(nra or {}).get("path", "")
                )
            ok = self.allowed(asked)
            status: dict[str, Any] = {"allowed": ok}
            if ok:
                status["reason"] = "RBAC: allowed by a binding"
            return aiohttp.web.json_response(
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": review.get("kind") or "SelfSubjectAccessReview",
                    "metadata": {"creationTimestamp": None},
                    "spec": spec,
                    "status": status,
                },
                status=201,
            )
        return None

    async def _check_escalation(self, request: kmock.Request, a: Attributes) -> None:
        """``ConfirmNoEscalation`` and the ``bind`` check of the real RBAC storage."""
        kind = RBAC_KINDS.get(a.resource) if a.api_group == rbac.RBAC_GROUP else None
        if kind is None or a.subresource or a.verb not in ("create", "update", "patch"):
            return
        new = self._result(request)
        if new is None:
            return
        ns = a.namespace or ((new.get("metadata") or {}).get("namespace") or "")
        name = a.name or ((new.get("metadata") or {}).get("name") or "")
        policy = self.policy()
        if kind in ("Role", "ClusterRole"):
            if self.allowed(
                Attributes(a.user, "escalate", rbac.RBAC_GROUP, a.resource, "", ns, name)
            ):
                return
            wanted = list(new.get("rules") or [])
        else:
            ref = new.get("roleRef") or {}
            ref_res = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            bind_ns = ns if kind == "RoleBinding" else ""
            bind = Attributes(
                a.user, "bind", rbac.RBAC_GROUP, ref_res, "", bind_ns, ref.get("name", "")
            )
            if self.allowed(bind):
                return
            wanted = policy.referenced_rules({**new, "metadata": {"namespace": bind_ns}})
        missing = rbac.uncovered(
            policy.rules_for(a.user, ns if kind in ("Role", "RoleBinding") else ""), wanted
        )
        if missing:
            what = "grant" if kind in ("Role", "ClusterRole") else "bind to a role that grants"
            self.check(
                Attributes(a.user, a.verb, a.api_group, a.resource, "", ns, name),
                f"user {a.user.name!r} is attempting to {what} RBAC permissions not currently "
                f"held: {rbac.describe_atoms(missing)}",
            )

    def _webhook_configs(self) -> list[dict[str, Any]]:
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
        """A namespace's labels; the real server always sets kubernetes.io/metadata.name."""
        return {"kubernetes.io/metadata.name": namespace}

    async def _admit(self, request: kmock.Request, a: Attributes) -> None:
        """Mutating admission (:mod:`kubeemu.admission`) of a create or an update."""
        if request.resource is None or a.verb not in ("create", "update", "patch"):
            return
        if not self._webhook_configs():
            return
        operation = "CREATE" if a.verb == "create" else "UPDATE"
        old = None if operation == "CREATE" else self._stored(self._key(request))
        obj = self._result(request)
        if obj is None or not isinstance(request.data, (dict, list)):
            return
        try:
            admitted = await self.admission.admit(
                copy.deepcopy(obj),
                copy.deepcopy(old) if old is not None else None,
                operation,
                request.resource.group or "",
                request.resource.version or "",
                a.resource,
                a.subresource,
                a.namespace or ((obj.get("metadata") or {}).get("namespace") or ""),
                a.user,
                str(obj.get("kind") or ""),
            )
        except AdmissionRefused as e:
            raise kmock.KubernetesError(
                status=e.code, reason=e.reason, message=e.message, details={}
            ) from None
        if admitted == obj:
            return
        if operation == "CREATE":
            assert isinstance(request.data, dict)
            request.data.clear()
            request.data.update(admitted)
        else:  # the mutated object replaces the patch: a merge patch of the whole object
            meta = admitted.setdefault("metadata", {})
            meta.pop("resourceVersion", None)
            if isinstance(request.data, dict):
                request.data.clear()
                request.data.update(admitted)

    def _result(self, request: kmock.Request) -> dict[str, Any] | None:
        """The object as it would be stored after this create or patch."""
        if (
            request.action == k8s_action.CREATE
            or str(getattr(request.method, "value", "")).upper() == "PUT"
        ):
            return request.data if isinstance(request.data, dict) else None
        stored = self._stored(self._key(request))
        if stored is None:
            return None
        ctype = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        if isinstance(request.data, list) or "json-patch" in ctype:
            import jsonpatch

            out: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(stored), request.data)
            return out
        merged: dict[str, Any] = merge_patch(copy.deepcopy(stored), request.data)
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

    async def _handle_strict(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request  # kmock keeps aiohttp's request (the connection) here
        if request.action == k8s_action.WATCH and raw is not None:
            self._watches[id(request)] = raw
            try:
                return await super()._handle(request)
            finally:
                self._watches.pop(id(request), None)
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
            response = await super()._handle(request)
            if self.listeners and response.status < 300:
                stored = self._stored(key)
                if stored is not None:
                    at = time.monotonic()
                    obj = copy.deepcopy(stored)
                    for listener in list(self.listeners):
                        listener(obj, at)
            return response


PROTOBUF_MAGIC = b"k8s\x00"
_RESOURCE_ATTRS = ("namespace", "verb", "group", "version", "resource", "subresource", "name")


def _protobuf_fields(data: bytes) -> dict[int, list[bytes]]:
    """The length-delimited fields of one protobuf message (varints are skipped). Hand-written:
    client-go sends built-in types such as SelfSubjectAccessReview as protobuf, and the
    message needs only these ~20 lines of the wire format, not a generated schema."""
    out: dict[int, list[bytes]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            n = varint()
            out.setdefault(field, []).append(data[i : i + n])
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
    return out


def access_review_from_protobuf(body: bytes) -> dict[str, Any]:
    """A (Self)SubjectAccessReview sent as ``application/vnd.kubernetes.protobuf``, as JSON."""
    unknown = _protobuf_fields(body[len(PROTOBUF_MAGIC) :])  # runtime.Unknown
    review = _protobuf_fields((unknown.get(2) or [b""])[0])  # field 2: raw
    spec_f = _protobuf_fields((review.get(2) or [b""])[0])
    spec: dict[str, Any] = {}
    if 1 in spec_f:
        ra = _protobuf_fields(spec_f[1][0])
        spec["resourceAttributes"] = {
            k: ra[n + 1][0].decode() for n, k in enumerate(_RESOURCE_ATTRS) if n + 1 in ra
        }
    if 2 in spec_f:
        nra = _protobuf_fields(spec_f[2][0])
        spec["nonResourceAttributes"] = {
            k: nra[n][0].decode() for n, k in ((1, "path"), (2, "verb")) if n in nra
        }
    # SubjectAccessReviewSpec: 3 user, 4 groups, 6 uid
    if 3 in spec_f:
        spec["user"] = spec_f[3][0].decode()
    if 4 in spec_f:
        spec["groups"] = [g.decode() for g in spec_f[4]]
    return {"spec": spec}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what kmock applies for merge and strategic patches)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def field_selector_name(selector: str) -> str:
    """The name a ``metadata.name=X`` field selector pins (what RBAC resourceNames match)."""
    parts = [p.strip() for p in selector.split(",") if p.strip()]
    if len(parts) != 1:
        return ""
    key, op, value = parts[0].partition("==") if "==" in parts[0] else parts[0].partition("=")
    if op and not key.endswith("!") and key.strip() == "metadata.name":
        return value.strip()
    return ""


def attributes(request: kmock.Request, user: User) -> Attributes:
    """The authorizer's view of a request (``RequestInfo``)."""
    method = str(getattr(request.method, "value", request.method)).upper()
    if request.resource is None or request.resource.plural is None:
        return Attributes(user, method.lower(), path=request.url.path or "/")
    name = request.name or ""
    if method == "GET":
        if str(request.params.get("watch", "")).lower() in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERB.get(method, method.lower())
    if verb in ("list", "watch", "deletecollection"):
        name = field_selector_name(request.params.get("fieldSelector", "")) or name
    return Attributes(
        user,
        verb,
        request.resource.group or "",
        request.resource.plural,
        request.subresource or "",
        request.namespace or "",
        name,
    )


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

    def __init__(
        self,
        crds: Iterable[Mapping[str, Any]] | None = None,
        *,
        secure: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        """``secure``: authenticate and authorize every request (see the module docstring)."""
        self._crds = list(crd_documents() if crds is None else crds)
        self.secure = secure
        self._host = host
        self._port = port
        self.ca_file: Path | None = None  # secure: the CA of the emulator's HTTPS certificate
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
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
        server_kw: dict[str, Any] = {"host": self._host}
        if self._port:
            server_kw["port"] = self._port
        if self.secure:
            # HTTPS: kubectl (client-go) sends a bearer token over TLS only.
            self._tls_dir = tempfile.TemporaryDirectory(prefix="rotor-kubeemu-")
            ca, cert, key = serving_certs(Path(self._tls_dir.name))
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            self.ca_file = ca
            server_kw["server_cls"] = _tls_server(ctx)
        async with StrictEmulator() as k8s, kmock.Server(k8s, **server_kw) as srv:
            k8s.secure = self.secure
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
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    def ssl_context(self) -> ssl.SSLContext | None:
        """What a client needs to trust the emulator (None: plain HTTP)."""
        if self.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def admin_token(self) -> str:
        assert self.k8s is not None
        return self.k8s.admin_token

    def configuration(self, token: str | None = None) -> client.Configuration:
        """A ``kubernetes`` client configuration with ``token`` (default: the admin's)."""
        cfg = client.Configuration()
        cfg.host = self.url
        cfg.api_key["authorization"] = token or self.admin_token
        cfg.api_key_prefix["authorization"] = "Bearer"
        if self.ca_file is not None:
            cfg.ssl_ca_cert = str(self.ca_file)
        return cfg

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(k8s, *args)`` on the emulator's loop (its state is not thread-safe)."""
        k8s, loop = self.k8s, self._loop
        assert k8s is not None
        assert loop is not None

        async def run() -> Any:
            return fn(k8s, *args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(STARTUP_TIMEOUT)

    def drop_watches(self) -> int:
        """Close every open watch stream now (:meth:`StrictEmulator.drop_watches`)."""
        dropped: int = self.call(lambda k8s: k8s.drop_watches())
        return dropped

    def issue_token(self, namespace: str, name: str) -> str:
        """A service-account token (as TokenRequest would issue; the account need not exist)."""
        token: str = self.call(lambda k8s: k8s.issue_token(namespace, name))
        return token

    def add_user(self, name: str, groups: Iterable[str] = ()) -> str:
        """A bearer token for the user ``name`` in ``groups`` (a static token)."""
        token: str = self.call(lambda k8s: k8s.add_user(name, groups))
        return token

    def write_kubeconfig(self, path: Path, token: str | None = None, user: str = "admin") -> Path:
        """A kubeconfig for this emulator and ``token`` (default: the admin's), mode 0600."""
        path.parent.mkdir(parents=True, exist_ok=True)
        cluster: dict[str, str] = {"server": self.url}
        if self.ca_file is not None:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.ca_file.read_bytes()
            ).decode()
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "rotor-emulator", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [
                {"name": "rotor-emulator", "context": {"cluster": "rotor-emulator", "user": user}}
            ],
            "current-context": "rotor-emulator",
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
        return path

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


def serving_certs(directory: Path, name: str = "rotor-kube-emulator") -> tuple[Path, Path, Path]:
    """A throwaway CA and the emulator's certificate for 127.0.0.1/localhost, for a day, minted
    by the controller's CA code (:mod:`controller.certs`): (ca, cert, key) files."""
    now = time.time()
    ca = certs.make_ca(now, certs.DAY, f"{name}-ca")
    leaf = certs.make_serving_cert(ca, (name, "localhost"), now, certs.DAY, ips=("127.0.0.1",))
    paths = (directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    for path, pem in zip(paths, (ca.cert_pem, leaf.cert_pem, leaf.key_pem), strict=True):
        path.write_text(pem)
    paths[2].chmod(0o600)
    return paths


def _tls_server(ctx: ssl.SSLContext) -> type[aiohttp.test_utils.RawTestServer]:
    """kmock's server class, serving TLS with ``ctx`` (kmock itself starts it without)."""

    class TLSRawTestServer(aiohttp.test_utils.RawTestServer):
        async def start_server(
            self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
        ) -> None:
            await super().start_server(loop, ssl=ctx, **kwargs)

    return TLSRawTestServer


def iter_items(objs: Iterable[Mapping[str, Any]], namespace: str) -> Iterator[Mapping[str, Any]]:
    return (o for o in objs if o.get("metadata", {}).get("namespace") == namespace)
