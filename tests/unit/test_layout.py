"""rotor.layout: the Secret encoding and the pure transitions of the rotation protocol."""

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
from rotor.protocol import ProtocolError, abort, commit, expire_previous, prepare

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
A, B, C = {"pw": b"aaaaaaaaaa"}, {"pw": b"bbbbbbbbbb"}, {"pw": b"cccccccccc"}


def b64(v: bytes) -> str:
    return base64.b64encode(v).decode()


def test_full_rotation_cycle() -> None:
    s0 = SecretState()
    s1 = commit(prepare(s0, A, T0, "w"), T0, overlap=60)
    assert (s1.version, s1.phase, s1.current, s1.previous) == (1, "committed", A, {})
    assert s1.previous_expires is None  # nothing to keep on the first value
    p = prepare(s1, B, T0 + 100, "w")
    assert (p.phase, p.pending, p.current, p.pending_since, p.writer) == (
        "pending",
        B,
        A,
        T0 + 100,
        "w",
    )
    s2 = commit(p, T0 + 101, overlap=60)
    assert (s2.version, s2.current, s2.previous, s2.pending) == (2, B, A, {})
    assert (s2.rotated_at, s2.previous_expires, s2.pending_since) == (T0 + 101, T0 + 161, None)
    assert expire_previous(s2, T0 + 160) is s2
    s3 = expire_previous(s2, T0 + 161)
    assert (s3.previous, s3.previous_expires, s3.current) == ({}, None, B)


def test_commit_without_overlap_keeps_no_previous() -> None:
    s1 = commit(prepare(SecretState(), A, T0, "w"), T0, 0)
    s2 = commit(prepare(s1, B, T0, "w"), T0, 0)
    assert (s2.previous, s2.previous_expires) == ({}, None)


def test_abort_keeps_current() -> None:
    s1 = commit(prepare(SecretState(), A, T0, "w"), T0, 60)
    aborted = abort(prepare(s1, C, T0 + 5, "w"))
    assert (aborted.version, aborted.phase, aborted.current, aborted.pending) == (
        1,
        "committed",
        A,
        {},
    )
    assert aborted.pending_since is None


@pytest.mark.parametrize(
    ("make", "field", "problem"),
    [
        (
            lambda: prepare(prepare(SecretState(), A, T0, "w"), B, T0, "w"),
            "phase",
            "a rotation is already pending",
        ),
        (lambda: prepare(SecretState(), {}, T0, "w"), "values", "no values to prepare"),
        (lambda: commit(SecretState(), T0, 60), "phase", "nothing is pending"),
        (lambda: commit(SecretState(phase="pending"), T0, 60), "phase", "nothing is pending"),
    ],
)
def test_transitions_refuse_the_wrong_phase(make: object, field: str, problem: str) -> None:
    with pytest.raises(ProtocolError) as e:
        make()  # type: ignore[operator]
    assert (e.value.field, e.value.problem) == (field, problem)


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
