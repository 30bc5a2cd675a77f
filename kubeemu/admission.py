"""Mutating admission, done by the emulator the way the API server does it: on a create or update
of a resource that a stored MutatingWebhookConfiguration's ``rules`` match, with its
``namespaceSelector`` and ``objectSelector`` matching, POST an AdmissionReview v1 to the
webhook (``clientConfig.url``, or ``clientConfig.service`` through the emulator's endpoints),
verifying its certificate against ``caBundle`` for ``<service>.<namespace>.svc``, within
``timeoutSeconds``, and apply the JSONPatch it returns. A call that fails is ignored or refuses
the request as ``failurePolicy`` says (default Fail); a denial refuses it.

Not emulated: ``matchConditions`` (CEL; every request the selectors let through is sent, which
is stricter, not laxer), ``reinvocationPolicy``, ``matchPolicy: Equivalent`` (exact group and
version only), validating webhooks, the webhook's ``sideEffects``/dry-run handling.
"""

from __future__ import annotations

import base64
import copy
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
import jsonpatch

from kubeemu.rbac import User
from kubeemu.selectors import SelectorError, selector_matches

Obj = dict[str, Any]
DEFAULT_TIMEOUT = 10.0


class AdmissionRefused(Exception):
    """The request is refused: ``code`` and ``reason`` of the Status, ``message`` its text."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def _has(values: Iterable[str] | None, wanted: str) -> bool:
    vals = list(values or ())
    return "*" in vals or wanted in vals


def rule_matches(
    rule: Mapping[str, Any],
    operation: str,
    group: str,
    version: str,
    resource: str,
    subresource: str,
    namespaced: bool,
) -> bool:
    if not _has(rule.get("operations"), operation):
        return False
    if not _has(rule.get("apiGroups"), group) or not _has(rule.get("apiVersions"), version):
        return False
    # "*": every resource, no subresource; "*/*": everything; "pods/*": pods' subresources;
    # "*/status": the status of every resource
    want = f"{resource}/{subresource}" if subresource else resource
    ok = False
    for r in rule.get("resources") or ():
        r_res, _, r_sub = r.partition("/")
        if r == want or r == "*/*":
            ok = True
        elif not subresource:
            ok = ok or r == "*"
        else:
            ok = ok or (r_res in ("*", resource) and r_sub in ("*", subresource))
    if not ok:
        return False
    scope = rule.get("scope") or "*"
    return scope == "*" or (scope == "Namespaced") == namespaced


MAX_WARNINGS = 32
MAX_WARNING_LENGTH = 256


def admission_warnings(raw: Any) -> list[str]:
    """A webhook's ``warnings``, as the API server passes them on: strings only, control
    characters dropped, each at most 256 characters, at most 32 of them."""
    if not isinstance(raw, list):
        return []
    out = []
    for w in raw[:MAX_WARNINGS]:
        if isinstance(w, str):
            text = "".join(c for c in w if c.isprintable())[:MAX_WARNING_LENGTH]
            if text:
                out.append(text)
    return out


class Admission:
    """The mutating-admission step of the emulator (one per :class:`StrictEmulator`)."""

    def __init__(
        self,
        configs: Callable[[], list[Obj]],
        namespace_labels: Callable[[str], dict[str, str]],
    ) -> None:
        self.configs = configs
        self.namespace_labels = namespace_labels
        self.endpoints: dict[tuple[str, str], str] = {}
        """(namespace, service) -> ``host:port`` a Service's port routes to (kube-proxy)."""
        self.calls: list[str] = []  # webhook names called, in order (for tests)

    def _url(self, cc: Mapping[str, Any]) -> tuple[str, str | None]:
        """The URL to POST to, and the host name the certificate must carry."""
        if cc.get("url"):
            return str(cc["url"]), None
        svc = cc.get("service") or {}
        ns, name = svc.get("namespace", ""), svc.get("name", "")
        port = int(svc.get("port") or 443)
        host = f"{name}.{ns}.svc"
        path = svc.get("path") or "/"
        target = self.endpoints.get((ns, name))
        if target is None:
            return f"https://{host}:{port}{path}", host  # unresolvable: the call fails
        return f"https://{target}{path}", host

    async def admit(
        self,
        obj: Obj,
        old: Obj | None,
        operation: str,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        namespace: str,
        user: User,
        kind: str,
        warnings: list[str] | None = None,
    ) -> Obj:
        """``obj`` as every matching mutating webhook left it (or :class:`AdmissionRefused`);
        the webhooks' ``warnings`` are appended to ``warnings`` (the API server sends each back
        as a ``Warning`` header)."""
        for config in sorted(self.configs(), key=lambda c: c["metadata"]["name"]):
            for hook in config.get("webhooks") or []:
                if not self._applies(
                    hook, obj, operation, group, version, resource, subresource, namespace
                ):
                    continue
                obj = await self._call(
                    hook,
                    obj,
                    old,
                    operation,
                    (group, version, resource, subresource, kind),
                    namespace,
                    user,
                    warnings if warnings is not None else [],
                )
        return obj

    def _applies(
        self,
        hook: Mapping[str, Any],
        obj: Obj,
        operation: str,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        namespace: str,
    ) -> bool:
        if not any(
            rule_matches(r, operation, group, version, resource, subresource, bool(namespace))
            for r in hook.get("rules") or ()
        ):
            return False
        try:
            if namespace and not selector_matches(
                hook.get("namespaceSelector"), self.namespace_labels(namespace)
            ):
                return False
            labels = (obj.get("metadata") or {}).get("labels") or {}
            return selector_matches(hook.get("objectSelector"), labels)
        except SelectorError as e:
            raise AdmissionRefused(500, "InternalError", f"webhook {hook.get('name')}: {e}") from e

    async def _call(
        self,
        hook: Mapping[str, Any],
        obj: Obj,
        old: Obj | None,
        operation: str,
        gvr: tuple[str, str, str, str, str],
        namespace: str,
        user: User,
        warnings: list[str],
    ) -> Obj:
        name = str(hook.get("name") or "")
        cc = hook.get("clientConfig") or {}
        url, host = self._url(cc)
        timeout = float(hook.get("timeoutSeconds") or DEFAULT_TIMEOUT)
        uid = str(uuid.uuid4())
        review = admission_review(uid, obj, old, operation, gvr, namespace, user)
        self.calls.append(name)
        try:
            answer = await self._post(url, host, cc.get("caBundle"), review, timeout)
            resp = answer.get("response") or {}
            if resp.get("uid") != uid:
                raise ValueError(f"the response's uid {resp.get('uid')!r} is not the request's")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, ssl.SSLError) as e:
            if (hook.get("failurePolicy") or "Fail") == "Ignore":
                return obj
            raise AdmissionRefused(
                500,
                "InternalError",
                f'Internal error occurred: failed calling webhook "{name}": failed to call '
                f'webhook: Post "{url}?timeout={timeout:.0f}s": {type(e).__name__}: {e}',
            ) from None
        warnings.extend(admission_warnings(resp.get("warnings")))
        if not resp.get("allowed"):
            status = resp.get("status") or {}
            msg = status.get("message") or "without explanation"
            raise AdmissionRefused(
                int(status.get("code") or 400),
                str(status.get("reason") or "BadRequest"),
                f'admission webhook "{name}" denied the request: {msg}',
            )
        return patched(name, resp, obj)

    async def _post(
        self, url: str, host: str | None, ca_bundle: str | None, review: Obj, seconds: float
    ) -> Obj:
        ctx = ssl.create_default_context()
        if ca_bundle:
            ctx = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode())
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as s,
            s.post(
                url,
                json=review,
                ssl=ctx,
                server_hostname=host,
                params={"timeout": f"{seconds:.0f}s"},
            ) as r,
        ):
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}")
            out: Obj = await r.json(content_type=None)
            return out


def admission_review(
    uid: str,
    obj: Obj,
    old: Obj | None,
    operation: str,
    gvr: tuple[str, str, str, str, str],
    namespace: str,
    user: User,
) -> Obj:
    """The AdmissionReview v1 request the API server sends a webhook."""
    group, version, resource, subresource, kind = gvr
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "subResource": subresource or None,
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": (obj.get("metadata") or {}).get("name", ""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": user.name, "uid": user.uid, "groups": list(user.groups)},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
            "options": None,
        },
    }


def patched(name: str, resp: Mapping[str, Any], obj: Obj) -> Obj:
    """``obj`` with the JSONPatch of a webhook's response applied (if it sent one)."""
    if not resp.get("patch"):
        return obj
    if resp.get("patchType") != "JSONPatch":
        raise AdmissionRefused(500, "InternalError", f"webhook {name}: unsupported patchType")
    try:
        ops = jsonpatch.JsonPatch.from_string(base64.b64decode(resp["patch"]).decode())
        out: Obj = ops.apply(copy.deepcopy(obj))
    except (ValueError, jsonpatch.JsonPatchException) as e:
        raise AdmissionRefused(
            500, "InternalError", f"webhook {name}: its JSONPatch does not apply: {e}"
        ) from None
    return out
