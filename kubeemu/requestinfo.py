"""A request as the real API server reads it (``RequestInfo``), for the strict emulator:

* :func:`parse`: ``/api/v1/namespaces[/NAME[/status]]`` is the ``namespaces`` resource
  (kmock's parser fails on it), PUT of a named object is an update (``kubectl replace``), a
  protobuf body is decoded (:mod:`kubeemu.protobuf`; an unknown kind is a 415);
* :func:`attributes`: what the authorizer is asked (verb, group, resource, subresource,
  namespace, name; a list or watch names an object only through a ``metadata.name`` field
  selector term, a deletecollection never; a namespace is in itself);
* :func:`precondition`: a stale ``resourceVersion`` is a 409, a PUT of a custom resource must
  carry one, a PUT's ``uid`` must be the stored one;
* :func:`merge_patch`: RFC 7386, what merge and strategic patches are applied as.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from typing import Any

import aiohttp.web
import kmock
from kmock import action as k8s_action
from kmock._internal import parsing  # kmock's path parser (its Request._parse, less the body)

from kubeemu import protobuf, writes
from kubeemu.rbac import Attributes, User
from kubeemu.selectors import SelectorError, parse_fields
from kubeemu.writes import Refused, Target

_METHOD_VERB = {"POST": "create", "PUT": "update", "PATCH": "patch"}
_NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?(?:/(status|finalize))?/?$")
NAMESPACES = kmock.resource("", "v1", "namespaces")
Obj = dict[str, Any]


def precondition(request: kmock.Request, stored: Obj, plural: str, target: Target) -> None:
    """409 on a stale ``resourceVersion`` (merge patch, PUT, or a JSON patch's ``test``); a PUT
    of a custom resource must carry one; a PUT's ``uid`` must be the stored one."""
    current = (stored.get("metadata") or {}).get("resourceVersion")
    name = request.name or ""
    expected: Any = None
    if isinstance(request.data, dict):
        meta = request.data.get("metadata") or {}
        expected = meta.get("resourceVersion")
        uid, stored_uid = meta.get("uid"), (stored.get("metadata") or {}).get("uid")
        if method(request) == "PUT" and uid and uid != stored_uid:
            raise Refused(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {uid}, "
                f"UID in object meta: {stored_uid}",
            )
        if method(request) == "PUT" and target.custom and not expected:
            raise writes.invalid(
                target,
                name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            )
    elif isinstance(request.data, list):
        for op in request.data:
            if (
                isinstance(op, dict)
                and op.get("op") == "test"
                and op.get("path") == "/metadata/resourceVersion"
            ):
                expected = op.get("value")
    if expected is not None and expected != current:
        raise Refused(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
        )


def method(request: kmock.Request) -> str:
    return str(getattr(request.method, "value", request.method)).upper()


async def parse(raw: aiohttp.web.BaseRequest, request_id: int) -> kmock.Request:
    """The request as the real server routes it (kmock's own parser, with what it lacks):
    ``/api/v1/namespaces[/NAME[/status|finalize]]`` is the ``namespaces`` resource, a PUT of a
    named object an update, a DELETE of a collection a deletecollection, a protobuf body
    decoded, a JSON one parsed (anything else: None)."""
    body = await raw.read()
    http_method = raw.method.upper()
    query = dict(raw.query)
    data: Any = None
    if "protobuf" in raw.content_type and body:
        try:
            data = protobuf.decode(body)
        except protobuf.Unsupported as e:
            raise Refused(415, "UnsupportedMediaType", str(e)) from None
    elif body:
        with contextlib.suppress(ValueError):
            data = json.loads(body)
    m = _NAMESPACES.match(raw.path)
    if m:
        name, sub = m.groups()
        resource, namespace, action = NAMESPACES, None, _namespace_action(http_method, name, query)
    else:
        k8s = parsing.parse_path(raw.path)
        resource = None
        if k8s.group is not None:
            resource = kmock.resource(group=k8s.group, version=k8s.version, plural=k8s.plural)
        namespace, name, sub = k8s.namespace, k8s.name, k8s.subresource
        action = parsing.guess_k8s(k8s, kmock.method(http_method), query)
        if http_method == "PUT" and resource is not None and name:
            action = k8s_action.UPDATE
        elif http_method == "DELETE" and resource is not None and not name:
            action = k8s_action.DELETE  # a deletecollection (kmock routes none)
    return kmock.Request(
        id=request_id,
        raw_request=raw,
        url=raw.url,
        method=raw.method,
        params=query,
        headers=dict(raw.headers),
        cookies=dict(raw.cookies),
        data=data,
        body=body,
        text=body.decode("utf-8", "replace"),
        action=action,
        resource=resource,
        namespace=namespace,
        name=name,
        subresource=sub,
    )


def _namespace_action(http_method: str, name: str | None, query: dict[str, str]) -> Any:
    if http_method == "GET":
        if query.get("watch", "").lower() in ("true", "1"):
            return k8s_action.WATCH
        return k8s_action.FETCH if name else k8s_action.LIST
    return {
        "POST": k8s_action.CREATE,
        "PATCH": k8s_action.UPDATE,
        "PUT": k8s_action.UPDATE,
        "DELETE": k8s_action.DELETE,
    }.get(http_method)


def replace_data(request: kmock.Request, data: Any) -> None:
    """Give ``request`` another body in place (kmock matches its reactions against the request
    objects it recorded, so a copy would match none)."""
    object.__setattr__(request, "data", data)  # kmock's Request is a frozen attrs class


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
    """The name a ``metadata.name=X`` term of a field selector pins (``RequiresExactMatch``:
    what RBAC resourceNames match), among any other terms."""
    try:
        terms = parse_fields(selector)
    except SelectorError:
        return ""
    names = [value for path, op, value in terms if path == "metadata.name" and op == "="]
    return names[0] if len(names) == 1 else ""


def attributes(request: kmock.Request, user: User) -> Attributes:
    """The authorizer's view of a request (``RequestInfo``)."""
    http_method = method(request)
    if request.resource is None or request.resource.plural is None:
        return Attributes(user, http_method.lower(), path=request.url.path or "/")
    name = request.name or ""
    if http_method == "GET":
        if str(request.params.get("watch", "")).lower() in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if name else "list"
    elif http_method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERB.get(http_method, http_method.lower())
    if verb in ("list", "watch"):  # not deletecollection: the real RequestInfo does not
        name = field_selector_name(request.params.get("fieldSelector", "")) or name
    namespace = request.namespace or ""
    if request.resource == NAMESPACES and name:
        namespace = name  # a namespace is in itself, for RBAC
    return Attributes(
        user,
        verb,
        request.resource.group or "",
        request.resource.plural,
        request.subresource or "",
        namespace,
        name,
    )
