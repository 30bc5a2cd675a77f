"""The API endpoints that store nothing, answered as the real server answers them:

* TokenRequest (``POST .../serviceaccounts/NAME/token``, ``kubectl create token``): a token
  bound to the ServiceAccount, valid ``spec.expirationSeconds`` (at least 10 minutes);
* SelfSubjectAccessReview and SubjectAccessReview (``kubectl auth can-i VERB RESOURCE``);
* SelfSubjectRulesReview (``kubectl auth can-i --list``): the rules that apply in a namespace;
* SelfSubjectReview (``kubectl auth whoami``): the user the request was authenticated as.

Each function takes the request's body (JSON, or decoded from protobuf) and returns the body of
the 201 answer, or raises :class:`~kubeemu.writes.Refused`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp.web
import kmock

from kubeemu.rbac import Attributes, Policy, User
from kubeemu.writes import Refused, as_dict

if TYPE_CHECKING:
    from kubeemu.server import StrictEmulator

Obj = dict[str, Any]
TOKEN_TTL = 3600
MIN_TOKEN_TTL = 600
MAX_TOKEN_TTL = 2**32  # the real server caps at --service-account-max-token-expiration


def token_request(
    body: Mapping[str, Any],
    namespace: str,
    name: str,
    sa_uid: str | None,
    issue: Callable[[int, str], str],
) -> Obj:
    """A TokenRequest's answer; ``sa_uid`` is the stored ServiceAccount's uid (None: there is
    none, a 404), ``issue(ttl, uid)`` mints the token."""
    if sa_uid is None:
        raise Refused(404, "NotFound", f'serviceaccounts "{name}" not found')
    spec = as_dict(body.get("spec"))
    ttl = spec.get("expirationSeconds") or TOKEN_TTL
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < MIN_TOKEN_TTL:
        raise Refused(
            422,
            "Invalid",
            f'TokenRequest.authentication.k8s.io "{name}" is invalid: spec.expirationSeconds: '
            f"Invalid value: {ttl}: may not specify a duration less than 10 minutes",
        )
    ttl = min(ttl, MAX_TOKEN_TTL)
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**spec, "expirationSeconds": ttl},
        "status": {
            "token": issue(ttl, sa_uid),
            "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


def access_review(
    resource: str, body: Mapping[str, Any], requester: User, allowed: Callable[[Attributes], bool]
) -> Obj:
    """A (Self)SubjectAccessReview's answer: is the reviewed user allowed?"""
    spec = as_dict(body.get("spec"))
    who = requester
    if resource == "subjectaccessreviews":
        who = User(str(spec.get("user", "")), tuple(spec.get("groups") or ()), spec.get("uid", ""))
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if isinstance(ra, dict) and ra:
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
        nra = nra if isinstance(nra, dict) else {}
        asked = Attributes(who, nra.get("verb", ""), path=nra.get("path", ""))
    ok = allowed(asked)
    status: Obj = {"allowed": ok}
    if ok:
        status["reason"] = "RBAC: allowed by a binding"
    kind = (
        "SubjectAccessReview" if resource == "subjectaccessreviews" else "SelfSubjectAccessReview"
    )
    return _review(kind, "authorization.k8s.io/v1", spec, status)


def rules_review(body: Mapping[str, Any], user: User, policy: Policy) -> Obj:
    """A SelfSubjectRulesReview's answer: every rule that applies to ``user`` in the namespace."""
    spec = as_dict(body.get("spec"))
    resource_rules: list[Obj] = []
    url_rules: list[Obj] = []
    for rule in policy.rules_for(user, str(spec.get("namespace") or "")):
        if rule.get("nonResourceURLs"):
            url_rules.append(
                {"verbs": rule.get("verbs") or [], "nonResourceURLs": rule["nonResourceURLs"]}
            )
        else:
            keep = ("verbs", "apiGroups", "resources", "resourceNames")
            resource_rules.append({k: rule[k] for k in keep if rule.get(k)})
    status = {"resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": False}
    return _review("SelfSubjectRulesReview", "authorization.k8s.io/v1", spec, status)


def self_review(user: User) -> Obj:
    """A SelfSubjectReview's answer: the user as authenticated (after impersonation)."""
    info: Obj = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": info},
    }


def _review(kind: str, api_version: str, spec: Mapping[str, Any], status: Obj) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"creationTimestamp": None},
        "spec": dict(spec),
        "status": status,
    }


def answer(
    emu: StrictEmulator, request: kmock.Request, a: Attributes
) -> aiohttp.web.StreamResponse | None:
    """The API endpoints that store nothing (:mod:`kubeemu.reviews`)."""
    if a.verb != "create":
        return None
    body = request.data if isinstance(request.data, dict) else {}
    out: Obj | None = None
    if a.resource == "serviceaccounts" and a.subresource == "token" and not a.api_group:
        ns, name = a.namespace, a.name

        def issue(ttl: int, uid: str) -> str:
            return emu.authn.issue(ns, name, ttl, uid)

        out = token_request(body, ns, name, emu.sa_uid(ns, name), issue)
    elif a.api_group == "authorization.k8s.io" and a.resource in (
        "selfsubjectaccessreviews",
        "subjectaccessreviews",
    ):
        out = access_review(a.resource, body, a.user, emu.allowed)
    elif a.api_group == "authorization.k8s.io" and a.resource == "selfsubjectrulesreviews":
        out = rules_review(body, a.user, emu.policy())
    elif a.api_group == "authentication.k8s.io" and a.resource == "selfsubjectreviews":
        out = self_review(a.user)
    return None if out is None else aiohttp.web.json_response(out, status=201)
