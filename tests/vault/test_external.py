"""rotor.external: metadata, KV encoding and error mapping (no server)."""

from __future__ import annotations

import pytest

from rotor.errors import (
    ConflictError,
    ForbiddenError,
    InvalidSpec,
    NotFoundError,
    PermanentError,
    UnavailableError,
)
from rotor.external import (
    RotorMetadata,
    StoreRecord,
    kv_data,
    record_from_kv,
    values_from_kv,
)
from rotor.layout import SecretState, checksum
from rotor.protocol import (
    commit,
    prepare,
)
from rotor.vaultkv import vault_error

OLD = {"password": b"old-value-1"}
NEW = {"password": b"new-value-2"}
THEIRS = {"password": b"set-by-a-person"}
T0 = 1_700_000_000.0


def committed() -> SecretState:
    return commit(prepare(SecretState(), OLD, T0, "w"), T0, 60)


def pending() -> SecretState:
    return prepare(committed(), NEW, T0 + 10, "w")


def meta(values, rotor_version=2) -> RotorMetadata:
    return RotorMetadata(rotor_version, checksum(values), "shop/api-1", T0, "shop/db")


def rec(values, version=3, rotor=False) -> StoreRecord:
    return StoreRecord(version, checksum(values), meta(values) if rotor else None)


def test_metadata_round_trip_only_for_the_version_it_describes():
    m = meta(NEW)
    custom = m.custom_metadata(7)
    assert all(isinstance(v, str) for v in custom.values())
    assert RotorMetadata.parse(custom, 7, checksum(NEW)) == m
    # a person wrote version 8 afterwards: the per-path metadata no longer describes it
    assert RotorMetadata.parse(custom, 8, checksum(NEW)) is None
    # same version number but other values (metadata write lost, then a person's write)
    assert RotorMetadata.parse(custom, 7, checksum(THEIRS)) is None


@pytest.mark.parametrize(
    "custom",
    [None, {}, {"owner": "ops"}, {"rotor-store-version": "x"}, {"rotor-store-version": "7"}],
)
def test_foreign_or_garbled_metadata_is_not_rotors(custom):
    assert RotorMetadata.parse(custom, 7, checksum(NEW)) is None


def test_kv_round_trip_keeps_bytes_and_checksum():
    values = {"key": b"-----BEGIN PRIVATE KEY-----\nAAA\n", "key.pub": b"ssh-ed25519 AAAA"}
    got = record_from_kv(4, kv_data(values, "p"), None, "p")
    assert got.values == values
    assert got.record == StoreRecord(4, checksum(values), None)
    assert "BEGIN" not in repr(got)


def test_binary_value_is_refused_with_the_file_named():
    with pytest.raises(PermanentError, match=r"'blob'.*not UTF-8"):
        kv_data({"blob": b"\xff\xfe"}, "shop/db")


def test_non_string_kv_entry_is_refused_with_the_key_named():
    with pytest.raises(InvalidSpec) as exc:
        values_from_kv({"password": 123}, "secret/shop/db")
    assert exc.value.field == "secret/shop/db.password"


@pytest.mark.parametrize(
    ("status", "detail", "kind", "text"),
    [
        (None, "connection refused", UnavailableError, "did not answer"),
        (400, "check-and-set parameter did not match the current version", ConflictError, "cas"),
        (403, "permission denied", ForbiddenError, '["create", "update"] on path "secret/data/x"'),
        (404, "", NotFoundError, "not found"),
        (500, "internal error", UnavailableError, "500"),
        (503, "Vault is sealed", UnavailableError, "503"),
        (429, "rate limited", UnavailableError, "429"),
        (400, "invalid request", PermanentError, "refused"),
        (401, "permission denied", ForbiddenError, "permission denied"),
        (412, "missing eventually consistent data", UnavailableError, "412"),
        (0, "", UnavailableError, "answered 0"),  # hvac did not say which status
    ],
)
def test_vault_error_mapping(status, detail, kind, text):
    err = vault_error(
        status,
        [detail] if detail else [],
        action="writing",
        path="secret/data/x",
        capability='["create", "update"]',
    )
    assert type(err) is kind
    if text == "cas":
        assert "check-and-set" in str(err)
    else:
        assert text in str(err)
    assert err.status == status
    assert err.payload == ([detail] if detail else [])


def test_vault_error_an_untrusted_certificate_is_permanent():
    err = vault_error(
        None, ["SSLError"], action="reading", path="secret/data/x", capability="", tls=True
    )
    assert type(err) is PermanentError
    assert "caBundle" in str(err)
    assert err.status is None
