"""Rotor's errors, in one place.

::

    RotorError                      base of everything Rotor raises on purpose
    ├── InvalidSpec                 user input is wrong: names the field and the fix (permanent)
    │   └── AnnotationError         ... and the field is a pod annotation
    ├── PermanentError              retrying will not help (e.g. access denied)
    │   ├── NotFoundError           the thing asked for does not exist
    │   ├── ForbiddenError          401/403: this identity may not do this (yet)
    │   └── LoginFailed             an external store refused the login (or no token to give)
    └── RetryableError              try again later, with backoff
        ├── ConflictError           someone else moved first (stale resourceVersion, CAS)
        ├── GoneError               410: a watch resumed from a version too old; list again
        └── UnavailableError        a backend (API server, ACL, external store) did not answer

An error made from an answer carries it: ``status`` (the HTTP status; None when there was no
answer), ``headers`` (lower-case names) and ``payload`` (the decoded body, e.g. a Kubernetes
Status), and a retryable one its ``delay`` (from ``Retry-After``). :func:`from_status` is the one
status table every transport's edge calls (``agent/kube.py``, ``controller/kube.py``,
``rotor/vaultkv.py``, ``controller/acl/canister/transport.py``): errors are classified by
status, exception type and structured payload, never by message text.

Messages never include a secret value: callers pass names, versions and reasons only.
"""

from __future__ import annotations

from collections.abc import Mapping


class RotorError(Exception):
    """Base class of every error Rotor raises on purpose (with the answer it came from, if any)."""

    def __init__(
        self,
        *args: object,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        payload: object = None,
    ) -> None:
        super().__init__(*args)
        self.status = status
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.payload = payload


class InvalidSpec(RotorError):
    """User input (a spec, a flag, an env var, an annotation) is wrong.

    ``str()`` gives ``"<field>: <problem>; <fix>"``, which is what a user sees.
    """

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        text = f"{field}: {problem}"
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class AnnotationError(InvalidSpec):
    """A ``rotor.dev/*`` annotation on a pod is malformed."""


class PermanentError(RotorError):
    """Retrying the same operation will not help."""


class NotFoundError(PermanentError):
    """The object asked for does not exist."""


class ForbiddenError(PermanentError):
    """401/403: the caller's identity may not do this (a grant may still be pending)."""


class LoginFailed(PermanentError):
    """An external store refused the login, or the service-account token could not be read."""


class RetryableError(RotorError):
    """A transient failure: try again later, with backoff."""

    def __init__(
        self,
        message: str,
        *,
        delay: float | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        payload: object = None,
    ) -> None:
        super().__init__(message, status=status, headers=headers, payload=payload)
        self.delay = delay


class ConflictError(RetryableError):
    """Someone else changed the object first; re-read, never overwrite."""


class GoneError(RetryableError):
    """410: the version a watch resumed from is too old; list again."""


class UnavailableError(RetryableError):
    """A backend did not answer (connection refused, timeout, 5xx)."""


# -- the status table ------------------------------------------------------------------------------
def kind_of(status: int) -> type[RotorError]:
    """The error class for an HTTP error status, the same for every transport.

    0 means no answer at all and is retryable, as 429 and 5xx are.
    """
    if status in (401, 403):
        return ForbiddenError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 410:
        return GoneError
    if status == 0 or status == 429 or status >= 500:
        return UnavailableError
    return PermanentError


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header; None when absent or not delay-seconds.

    The HTTP-date form (RFC 9110 10.2.3) is not read: the API server (its priority and fairness
    429s) and the peers here send seconds, and a date would need a clock in this pure table.
    """
    value = (value or "").strip()
    return float(value) if value.isdigit() else None


def from_status(
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    payload: object = None,
    forbidden: type[ForbiddenError] = ForbiddenError,
) -> RotorError:
    """The Rotor error for an HTTP answer with ``status``; the answer is carried on it.

    ``message`` is what a user reads (the transport words it: names and reasons, never data);
    a retryable error's ``delay`` comes from ``Retry-After``. ``forbidden``: the class for
    401/403, a transport's subclass saying whose identity was refused (e.g. the pod's service
    account, so the agent never reads a store's refusal as a missing grant).
    """
    kind = forbidden if status in (401, 403) else kind_of(status)
    if issubclass(kind, RetryableError):
        carried = {k.lower(): v for k, v in (headers or {}).items()}
        wait = retry_after(carried.get("retry-after"))
        return kind(message, delay=wait, status=status, headers=headers, payload=payload)
    return kind(message, status=status, headers=headers, payload=payload)
