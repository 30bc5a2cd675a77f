"""AdmissionReview (``admission.k8s.io/v1``) in, AdmissionReview out: :func:`mutate`, pure.

* a pod that asks for secrets gets a JSON patch (:func:`webhook.inject.plan`) and one warning
  per secret: the webhook holds no ACL and reads no RotatingSecret, so it cannot tell whether the
  secret exists or is granted, and says what happens if not;
* malformed annotations are denied (``allowed: false``, code 400) with the message of the
  :class:`~rotor.errors.AnnotationError`, which names the annotation and the fix;
* everything else (other kinds, other operations, opted-out or already injected pods, Rotor's own
  pods) is allowed unchanged;
* a body that is not an AdmissionReview raises :class:`BadReview` (the HTTP layer answers 400).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from rotor.annotations import PodRequest
from rotor.errors import InvalidSpec
from rotor.settings.webhook import WebhookSettings
from webhook import _json
from webhook.inject import MAX_PATCH, plan

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_WARNINGS = 5
"""The API server may truncate long warning lists; more secrets are summarised in one line."""

Result = Literal["injected", "skipped", "denied"]


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class AdmissionRequest(TypedDict):
    uid: str
    kind: NotRequired[GroupVersionKind]
    namespace: NotRequired[str]
    operation: NotRequired[str]
    subResource: NotRequired[str]
    object: NotRequired[dict[str, Any]]
    dryRun: NotRequired[bool]


class Status(TypedDict):
    code: int
    reason: str
    message: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    warnings: NotRequired[list[str]]


class AdmissionReview(TypedDict):
    apiVersion: str
    kind: str
    request: NotRequired[AdmissionRequest]
    response: NotRequired[AdmissionResponse]


class BadReview(ValueError):
    """The body is not an AdmissionReview this webhook can answer (HTTP 400)."""


@dataclass(frozen=True)
class Decision:
    """The answer, and what it was, for metrics and logs."""

    review: AdmissionReview
    result: Result
    request: PodRequest | None = None
    reason: str = ""


def mutate(review: object, settings: WebhookSettings) -> AdmissionReview:
    """The answer to one AdmissionReview."""
    return decide(review, settings).review


def _request(review: object) -> AdmissionRequest:
    if not isinstance(review, dict):
        raise BadReview(f"the body is a JSON {type(review).__name__}, not an AdmissionReview")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise BadReview(
            f"the body is apiVersion={review.get('apiVersion')!r} kind={review.get('kind')!r}; "
            f"this webhook answers {KIND} of {API_VERSION} (set admissionReviewVersions: [v1])"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview(f"the {KIND} has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview(f"the {KIND} request has no uid")
    return request  # type: ignore[return-value]


def _answer(uid: str, **fields: Any) -> AdmissionReview:
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    response.update(fields)  # type: ignore[typeddict-item]
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _is_pod_create(request: AdmissionRequest) -> bool:
    kind = request.get("kind")
    return (
        isinstance(kind, dict)
        and kind.get("kind") == "Pod"
        and kind.get("group", "") == ""
        and request.get("operation") == "CREATE"
        and not request.get("subResource")
    )


def _waits(req: PodRequest, settings: WebhookSettings) -> str:
    """Who waits for a secret to exist and its access to be granted."""
    if req.delivery == "agent" and req.wait and settings.sidecar_mode == "native":
        return "the app waits (rotor.dev/wait: true) until it exists and"
    if req.delivery == "agent":
        return "the agent waits (the app does not) until it exists and"
    if req.delivery == "volume":
        return "its files stay absent until it exists and"
    return "its env vars stay unset until it exists and"


def warnings_for(
    req: PodRequest,
    settings: WebhookSettings,
    restart_policy: object = "Always",
    service_account: str = "default",
) -> list[str]:
    """What the user should know: a secret is delivered only once it exists and its access is
    granted; the access request the pod makes, and the command that approves it. The webhook
    reads no ACL, so it says what happens if the request is pending."""
    principal = f"{req.namespace}/{service_account}"
    waits = _waits(req, settings)
    out = []
    for ref in req.secrets[:MAX_WARNINGS]:
        mode = "rw" if ref in req.rw else "ro"
        out.append(
            f"rotor: {ref}: {waits} {principal} is granted {mode}; a pending request is approved "
            f"with: rotor acl approve {ref} {principal} {mode} (kubectl get rsec -n "
            f"{ref.namespace} {ref.name})"
        )
    if len(req.secrets) > MAX_WARNINGS:
        out.append(f"rotor: and {len(req.secrets) - MAX_WARNINGS} more secrets, the same way")
    if req.delivery == "agent" and req.wait and settings.sidecar_mode == "classic":
        out.append("rotor: rotor.dev/wait is not enforced in classic sidecar mode")
    if (
        req.delivery == "agent"
        and settings.sidecar_mode == "classic"
        and restart_policy
        in (
            "Never",
            "OnFailure",
        )
    ):
        out.append(
            "rotor: in classic sidecar mode the agent keeps running after the app exits, so this "
            "pod does not complete; use native sidecars (Kubernetes 1.29+)"
        )
    return out


def decide(review: object, settings: WebhookSettings) -> Decision:
    """:func:`mutate` with the outcome spelled out; raises :class:`BadReview`."""
    request = _request(review)
    uid = request["uid"]
    if not _is_pod_create(request):
        return Decision(_answer(uid), "skipped", reason="not a pod creation")
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise BadReview(f"the {KIND} request for a Pod has no object")
    namespace = request.get("namespace")
    try:
        p = plan(pod, settings, namespace if isinstance(namespace, str) else None)
    except InvalidSpec as e:
        status: Status = {"code": 400, "reason": "BadRequest", "message": f"rotor: {e}"}
        return Decision(_answer(uid, allowed=False, status=status), "denied", reason=str(e))
    if not p.ops or p.request is None:
        return Decision(_answer(uid), "skipped", reason=p.reason)
    ops = _json.dumps(p.ops)
    if len(ops) > MAX_PATCH:
        message = (
            f"rotor: the patch for this pod would be {len(ops) // 1024} KiB (at most "
            f"{MAX_PATCH // 1024} KiB; etcd stores no object over 1.5 MiB): ask for fewer "
            "secrets, use fewer containers or a shorter rotor.dev/mount-path"
        )
        status = {"code": 400, "reason": "BadRequest", "message": message}
        return Decision(_answer(uid, allowed=False, status=status), "denied", reason=message)
    patch = base64.b64encode(ops).decode()
    review_out = _answer(
        uid,
        patchType="JSONPatch",
        patch=patch,
        warnings=warnings_for(
            p.request,
            settings,
            pod["spec"].get("restartPolicy", "Always"),
            str(pod["spec"].get("serviceAccountName") or "default"),
        ),
    )
    return Decision(review_out, "injected", p.request)
