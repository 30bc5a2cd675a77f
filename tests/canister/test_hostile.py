"""Hostile canister answers (issue 24, item 2): whoever answers for the IC (a boundary node, a
proxy, the network path) can send any bytes. Each answer below is refused with a clear error,
the last good ACL stays, and the controller's event loop is never blocked more than 100 ms
while it is read (a 24-byte answer used to loop for ever on the loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import leb128
import pytest
from ic.candid import Types, encode
from ic.utils import labelHash

from controller.acl.canister import CanisterAnswerError
from controller.acl.canister.candid import CERTIFIED_ACL, candid_args, decode_one
from controller.acl.canister.wire import MAX_DEPTH
from tests.canister.ic_server import IcServer
from tests.canister.test_backend import seeded

MAX_LAG = 0.1  # seconds the event loop may be held by reading one answer


def u(n: int) -> bytes:
    return bytes(leb128.u.encode(n))


def unknown_field(vec_of: bytes, length: int, elements: bytes = b"") -> bytes:
    """A record with one field the controller does not know: ``vec <vec_of>`` of ``length``."""
    return (
        b"DIDL"
        + u(2)
        + b"\x6d"
        + vec_of
        + b"\x6c\x01"
        + u(labelHash("x"))
        + b"\x00"
        + u(1)
        + b"\x01"
        + u(length)
        + elements
    )


VEC_NULL_BOMB = unknown_field(b"\x7f", 2**62)  # the answer: 22 bytes, 2^62 nulls
"""A ``vec null`` costs no byte per element: ic-py looped over all 2^62 of them."""

X = u(labelHash("x"))
NESTED = b"DIDL" + u(2) + b"\x6e\x00" + b"\x6c\x01" + X + b"\x00" + u(1) + b"\x01"
NESTED += b"\x01" * 100_000 + b"\x00"
"""``record {x: t}`` where ``type t = opt t``, a value 100,000 deep."""

HOSTILE: dict[str, tuple[bytes, str]] = {
    "vec-null-2^62": (VEC_NULL_BOMB, "values per byte"),
    "vec-record-2^62": (
        # record {x: vec record {}}: an empty record costs no byte either
        b"DIDL"
        + u(3)
        + b"\x6d\x01"
        + b"\x6c\x00"
        + b"\x6c\x01"
        + X
        + b"\x00"
        + u(1)
        + b"\x02"
        + u(2**62),
        "values per byte",
    ),
    "text-2^62": (
        b"DIDL" + u(1) + b"\x6c\x01" + X + b"\x71" + u(1) + b"\x00" + u(2**62),
        "unexpected end",
    ),
    "nested-100000": (NESTED, f"nested deeper than {MAX_DEPTH}"),
    "types-10^6": (b"DIDL" + u(10**6) + b"\x6d\x7f" * 1000, "1000000 types"),
    "vec-bool-300000": (
        unknown_field(b"\x7e", 300_000, b"\x00" * 300_000),  # 300 KB read, nothing built
        "without a certificate",
    ),
}


@asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    """The longest the event loop was held, measured by a 5 ms heartbeat."""
    worst = [0.0]

    async def beat() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            worst[0] = max(worst[0], time.monotonic() - t - 0.005)

    task = asyncio.create_task(beat())
    await asyncio.sleep(0.02)
    try:
        yield worst
    finally:
        task.cancel()


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_acl_answer_is_refused_without_holding_the_loop(
    ic_server: IcServer, controller_identity: Any, admin_identity: Any, name: str
) -> None:
    reply, message = HOSTILE[name]
    backend = await seeded(ic_server, controller_identity, admin_identity)
    good = await backend.snapshot()
    ic_server.acl_reply = reply
    # The server's answer, fetched first: the server runs in a thread of this process, and its
    # own work (checking the request's signature) must not count as the controller's stall.
    fetched = await backend.client.query("acl", candid_args())
    assert fetched == reply
    query = backend.client.query

    async def answer(method: str, arg: bytes) -> bytes:
        return fetched

    backend.client.query = answer  # type: ignore[method-assign]
    async with loop_lag() as worst:
        with pytest.raises(CanisterAnswerError, match=message) as info:
            await asyncio.wait_for(backend.snapshot(), 60)
    backend.client.query = query  # type: ignore[method-assign]
    assert worst[0] < MAX_LAG, f"the event loop was held {worst[0] * 1000:.0f} ms"
    assert ic_server.canister_id in str(info.value)
    ic_server.acl_reply = None
    assert await backend.snapshot() == good


async def test_an_answer_over_4_mib_is_not_read(
    ic_server: IcServer, controller_identity: Any, admin_identity: Any
) -> None:
    backend = await seeded(ic_server, controller_identity, admin_identity)
    ic_server.query_body = cbor2.dumps({"status": "replied", "reply": {"arg": bytes(5 << 20)}})
    async with loop_lag() as worst:
        with pytest.raises(CanisterAnswerError, match="larger than 4096 KiB"):
            await backend.snapshot()
    assert worst[0] < MAX_LAG


async def test_the_certificate_is_checked_before_the_acl_is_decoded(
    ic_server: IcServer, controller_identity: Any, admin_identity: Any
) -> None:
    """An answer whose ACL is not an ACL at all, with a certificate that is not one: refused for
    its certificate, which is read and checked first (the ACL was not decoded)."""
    backend = await seeded(ic_server, controller_identity, admin_identity)
    rtype = Types.Record({"acl": Types.Text, "certificate": Types.Opt(Types.Vec(Types.Nat8))})
    value = {"acl": "not an ACL", "certificate": [list(cbor2.dumps({}))]}
    ic_server.acl_reply = bytes(encode([{"type": rtype, "value": value}]))
    with pytest.raises(CanisterAnswerError, match="certificate: expected a map"):
        await backend.snapshot()


def test_the_bounded_decoder_reads_what_ic_py_wrote() -> None:
    acl = {
        "version": 7,
        "secrets": ["shop/db"],
        "grants": [{"secret": "shop/db", "principal": "web/api", "mode": {"ro": None}}],
        "requests": [
            {
                "secret": "shop/db",
                "principal": "web/job",
                "mode": {"rw": None},
                "state": {"pending": None},
            }
        ],
    }
    data = bytes(encode([{"type": CERTIFIED_ACL, "value": {"acl": acl, "certificate": []}}]))
    assert decode_one(data, CERTIFIED_ACL, "acl") == {"acl": acl, "certificate": []}
    cert = bytes(range(256))
    data = bytes(
        encode([{"type": CERTIFIED_ACL, "value": {"acl": acl, "certificate": [list(cert)]}}])
    )
    assert decode_one(data, CERTIFIED_ACL, "acl")["certificate"] == [cert]
    text = bytes(encode([{"type": Types.Text, "value": "x"}]))
    with pytest.raises(CanisterAnswerError, match="acl: not the expected Candid"):
        decode_one(text, CERTIFIED_ACL, "acl")
