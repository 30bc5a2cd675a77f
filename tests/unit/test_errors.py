"""The one status table (rotor.errors.from_status) every transport's edge calls."""

from __future__ import annotations

import pytest

from rotor.errors import (
    ConflictError,
    ForbiddenError,
    GoneError,
    NotFoundError,
    PermanentError,
    RetryableError,
    UnavailableError,
    from_status,
    kind_of,
    retry_after,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (0, UnavailableError),  # no answer at all
        (400, PermanentError),
        (401, ForbiddenError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (405, PermanentError),
        (409, ConflictError),
        (410, GoneError),
        (422, PermanentError),
        (429, UnavailableError),
        (500, UnavailableError),
        (503, UnavailableError),
        (504, UnavailableError),
    ],
)
def test_status_table(status: int, kind: type[Exception]) -> None:
    assert kind_of(status) is kind
    err = from_status(status, "GET /x: refused")
    assert type(err) is kind
    assert err.status == status
    assert str(err) == "GET /x: refused"


def test_forbidden_is_permanent_and_conflict_and_gone_are_retryable() -> None:
    assert issubclass(ForbiddenError, PermanentError)
    assert issubclass(ConflictError, RetryableError)
    assert issubclass(GoneError, RetryableError)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-1", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # the HTTP-date form is not read
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after(header) == seconds


def test_the_answer_is_carried_on_the_error() -> None:
    payload = {"kind": "Status", "reason": "TooManyRequests", "code": 429}
    err = from_status(429, "throttled", headers={"Retry-After": "7", "X-A": "b"}, payload=payload)
    assert isinstance(err, UnavailableError)
    assert err.delay == 7.0
    assert err.headers == {"retry-after": "7", "x-a": "b"}
    assert err.payload is payload


def test_a_permanent_error_ignores_retry_after() -> None:
    err = from_status(403, "no", headers={"Retry-After": "7"})
    assert isinstance(err, ForbiddenError)
    assert not hasattr(err, "delay")
    assert err.headers == {"retry-after": "7"}
