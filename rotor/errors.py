"""Rotor's errors, in one place.

::

    RotorError                      base of everything Rotor raises on purpose
    ├── InvalidSpec                 user input is wrong: names the field and the fix (permanent)
    │   └── AnnotationError         ... and the field is a pod annotation
    ├── PermanentError              retrying will not help (e.g. access denied)
    │   ├── NotFoundError           the thing asked for does not exist
    │   └── LoginFailed             an external store refused the login (or no token to give)
    └── RetryableError              try again later, with backoff
        ├── ConflictError           someone else moved first (stale resourceVersion, CAS)
        └── UnavailableError        a backend (API server, ACL, external store) did not answer

Messages never include a secret value: callers pass names, versions and reasons only.
"""

from __future__ import annotations


class RotorError(Exception):
    """Base class of every error Rotor raises on purpose."""


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


class LoginFailed(PermanentError):
    """An external store refused the login, or the service-account token could not be read."""


class RetryableError(RotorError):
    """A transient failure: try again later, with backoff."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ConflictError(RetryableError):
    """Someone else changed the object first; re-read, never overwrite."""


class UnavailableError(RetryableError):
    """A backend did not answer (connection refused, timeout, 5xx)."""
