"""rotor.protocol: one table of cases per decision of the rotation protocol (no I/O)."""

from __future__ import annotations

import pytest

from rotor.layout import SecretState
from rotor.protocol import commit, merge_data, prepare, publishable, secret_patch

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
A, B = {"pw": b"aaaaaaaaaa"}, {"pw": b"bbbbbbbbbb"}

COMMITTED = commit(prepare(SecretState(), A, T0, "w"), T0, 60)
PENDING = prepare(COMMITTED, B, T0 + 10, "w")


# -- step 6: when a value may be published -------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "annotation", "expected"),
    [
        (COMMITTED, COMMITTED.checksum, True),
        (COMMITTED, "", False),  # the checksum annotation does not match the data
        (COMMITTED, PENDING.checksum + "x", False),
        (PENDING, PENDING.checksum, False),  # a rotation in flight
        (SecretState(), SecretState().checksum, False),  # no value yet
        (None, "", False),  # the Secret does not decode
    ],
)
def test_publishable(state: SecretState | None, annotation: str, expected: bool) -> None:
    assert publishable(state, annotation) is expected


# -- the Secret patch ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "old", "expected"),
    [
        ({"pw": "YQ=="}, ["pw", "pw.pending"], {"pw": "YQ==", "pw.pending": None}),
        ({"pw": "YQ==", "pw.previous": "Yg=="}, ["pw"], {"pw": "YQ==", "pw.previous": "Yg=="}),
        ({}, ["pw"], {"pw": None}),
        ({"pw": "YQ=="}, [], {"pw": "YQ=="}),
    ],
)
def test_merge_data_nulls_vanished_keys(
    data: dict[str, str], old: list[str], expected: dict[str, str | None]
) -> None:
    assert merge_data(data, old) == expected


def test_secret_patch_of_a_commit_deletes_the_pending_keys() -> None:
    committed = commit(PENDING, T0 + 20, 60)
    patch = secret_patch(
        committed,
        PENDING.secret_data(),
        annotations={"rotor.dev/rotate-handled": "1"},
        resource_version="42",
    )
    assert patch["metadata"]["resourceVersion"] == "42"
    assert patch["metadata"]["annotations"] == {
        **committed.annotations(),
        "rotor.dev/rotate-handled": "1",
    }
    assert patch["data"] == {**committed.secret_data(), "pw.pending": None}
    assert "resourceVersion" not in secret_patch(committed, ())["metadata"]
