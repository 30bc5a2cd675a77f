"""The external-store conformance suite: every implementation of rotor.external's protocols
passes the same cases (OpenBao through agent.vault/controller.vault, and the MemoryKVStore)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hvac
import pytest

from agent.vault import TokenLogin, VaultStore
from controller.vault import TokenAuth, VaultReader
from rotor.errors import ConflictError, NotFoundError, UnavailableError
from rotor.external import ExternalStoreReader, ExternalStoreWriter, RotorMetadata
from rotor.layout import checksum
from tests.conftest import free_port
from tests.doubles import MemoryKVStore

OLD = {"password": b"old-password-value"}
NEW = {"password": b"new-password-value"}
THEIRS = {"password": b"typed-by-a-person"}


@dataclass
class Impl:
    writer: Any
    reader: Any
    person_writes: Callable[[str, dict[str, bytes]], int]
    down_writer: Any
    down_reader: Any


def openbao(bao) -> Impl:
    root = hvac.Client(url=bao.url, token=bao.token)

    def person(path: str, values: dict[str, bytes]) -> int:
        data = {k: v.decode() for k, v in values.items()}
        resp = root.secrets.kv.v2.create_or_update_secret(path, secret=data)
        return int(resp["data"]["version"])

    nowhere = f"http://127.0.0.1:{free_port()}"
    return Impl(
        VaultStore(bao.url, "secret", TokenLogin(bao.token)),
        VaultReader(bao.url, "secret", TokenAuth(bao.token)),
        person,
        VaultStore(nowhere, "secret", TokenLogin("t"), timeout=2),
        VaultReader(nowhere, "secret", TokenAuth("t"), timeout=2),
    )


def memory() -> Impl:
    store, down = MemoryKVStore(), MemoryKVStore()
    down.unavailable = True
    return Impl(store, store, store.put, down, down)


@pytest.fixture(params=["openbao", "memory"])
def impl(request) -> Impl:
    if request.param == "openbao":
        return openbao(request.getfixturevalue("bao"))
    return memory()


def meta(version: int) -> RotorMetadata:
    return RotorMetadata(version, "", "shop/api-0", 1_700_000_000.0, "shop/db")


def path() -> str:
    return f"shop/{uuid.uuid4().hex[:10]}"


def test_implements_the_protocols(impl):
    assert isinstance(impl.writer, ExternalStoreWriter)
    assert isinstance(impl.reader, ExternalStoreReader)


async def test_absent_path(impl):
    p = path()
    assert await impl.writer.read_version(p) is None
    with pytest.raises(NotFoundError):
        await impl.reader.read_values(p)
    assert not await impl.reader.store_holds(p, 1, checksum(NEW))


async def test_write_then_read_back(impl):
    p = path()
    assert await impl.writer.write_pending(p, OLD, None, meta(1)) == 1
    assert await impl.writer.write_pending(p, NEW, 1, meta(2)) == 2
    rec = await impl.reader.read_version(p)
    assert (rec.store_version, rec.rotor_version, rec.checksum) == (2, 2, checksum(NEW))
    assert (await impl.reader.read_values(p)).values == NEW
    assert (await impl.reader.read_values(p, 1)).values == OLD
    assert await impl.reader.store_holds(p, 2, checksum(NEW))
    assert not await impl.reader.store_holds(p, 1, checksum(OLD))


async def test_check_and_set(impl):
    p = path()
    await impl.writer.write_pending(p, OLD, None, meta(1))
    with pytest.raises(ConflictError):
        await impl.writer.write_pending(p, NEW, None, meta(2))  # create-only, but it exists
    assert impl.person_writes(p, THEIRS) == 2
    with pytest.raises(ConflictError):
        await impl.writer.write_pending(p, NEW, 1, meta(2))
    got = await impl.reader.read_values(p)
    assert got.values == THEIRS
    assert got.record is not None
    assert not got.record.written_by_rotor  # Rotor's metadata describes version 1 only


async def test_retry_of_the_same_write_is_idempotent(impl):
    p = path()
    assert await impl.writer.write_pending(p, NEW, None, meta(1)) == 1
    assert await impl.writer.write_pending(p, NEW, None, meta(1)) == 1
    assert (await impl.reader.read_version(p)).written_by_rotor


async def test_a_store_that_is_down(impl):
    with pytest.raises(UnavailableError):
        await impl.down_writer.write_pending(path(), NEW, None, meta(1))
    with pytest.raises(UnavailableError):
        await impl.down_reader.read_version(path())
    check = await impl.down_reader.check()
    assert (check.ready, check.reason) == (False, "Unreachable")
    assert (await impl.reader.check()).ready
