"""rotor.layout: the Secret encoding (the transitions are tests/unit/test_protocol.py)."""

from __future__ import annotations

import base64

import pytest

from rotor.errors import InvalidSpec
from rotor.layout import (
    ANN_PHASE,
    ANN_PREVIOUS_EXPIRES,
    ANN_ROTATED_AT,
    ANN_VERSION,
    SecretState,
    checksum,
    format_time,
    parse_time,
    view_name,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
A, B, C = {"pw": b"aaaaaaaaaa"}, {"pw": b"bbbbbbbbbb"}, {"pw": b"cccccccccc"}


def b64(v: bytes) -> str:
    return base64.b64encode(v).decode()


def test_secret_round_trip_and_views_never_show_pending() -> None:
    s = SecretState(
        version=3,
        phase="pending",
        current=A,
        previous=C,
        pending=B,
        rotated_at=T0,
        previous_expires=T0 + 3600,
        writer="shop/api-1",
        pending_since=T0 + 7200,
    )
    data = s.secret_data()
    assert data == {"pw": b64(A["pw"]), "pw.previous": b64(C["pw"]), "pw.pending": b64(B["pw"])}
    assert s.view_data() == {"pw": b64(A["pw"]), "pw.previous": b64(C["pw"])}
    ann = s.annotations()
    assert ann[ANN_VERSION] == "3"
    assert ann[ANN_PHASE] == "pending"
    assert ann[ANN_ROTATED_AT] == "2026-01-01T00:00:00Z"
    assert ann[ANN_PREVIOUS_EXPIRES] == "2026-01-01T01:00:00Z"
    assert SecretState.from_secret(data, ann) == s
    assert SecretState.from_secret(None, None) == SecretState()


def test_repr_never_shows_values() -> None:
    s = SecretState(version=2, current=A, previous=B, pending=C)
    text = repr(s)
    for v in (A, B, C):
        assert v["pw"].decode() not in text
    assert "version=2" in text


@pytest.mark.parametrize(
    ("data", "ann", "field", "problem"),
    [
        ({"pw": "not base64!"}, {}, "data.pw", "is not base64"),
        ({}, {ANN_VERSION: "two"}, f"metadata.annotations[{ANN_VERSION}]", "is not an integer"),
        (
            {},
            {ANN_PHASE: "rotating"},
            f"metadata.annotations[{ANN_PHASE}]",
            "'rotating' is unknown",
        ),
        (
            {},
            {ANN_ROTATED_AT: "yesterday"},
            f"metadata.annotations[{ANN_ROTATED_AT}]",
            "'yesterday' is not an RFC 3339 UTC time",
        ),
    ],
)
def test_from_secret_errors_name_the_field(
    data: dict[str, str], ann: dict[str, str], field: str, problem: str
) -> None:
    with pytest.raises(InvalidSpec) as e:
        SecretState.from_secret(data, ann)
    assert (e.value.field, e.value.problem) == (field, problem)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"x": b"1", "y": b"2"}, {"y": b"2", "x": b"1"}, True),  # order does not matter
        ({"ab": b"c"}, {"a": b"bc"}, False),  # no ambiguity of joins
        ({"x": b"1"}, {"x": b"2"}, False),
        ({}, {}, True),
    ],
)
def test_checksum(a: dict[str, bytes], b: dict[str, bytes], same: bool) -> None:
    assert (checksum(a) == checksum(b)) is same
    assert len(checksum(a)) == 64


def test_time_format_round_trip_and_view_name() -> None:
    assert format_time(T0) == "2026-01-01T00:00:00Z"
    assert parse_time("2026-01-01T00:00:00Z", "f") == T0
    assert view_name("shop", "db") == "rotor.shop.db"
