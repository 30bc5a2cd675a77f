"""Every condition reason the controller writes (rotor.status), one row each: the status of a
RotatingSecret (controller.decide.secret_status) from what the controller observed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from controller import decide
from controller.model import PodInfo, SourceObs, read_rotating_secret
from rotor import status as st
from rotor.acl import SkippedEntry
from rotor.layout import SecretState
from rotor.names import SecretRef

DB = SecretRef("shop", "db")
KEYS = [{"name": "password", "generator": {"type": "password"}}]
STORES = [{"storeRef": {"name": "vault"}, "path": "shop/db"}]
V2 = SecretState(version=2, current={"password": b"v2"})
FRESH = decide.Staleness(False, 0.0, False)
WRITER = PodInfo("shop", "api-0", "uid-a", "api", 0.0, True, False, (DB,), (), True, True, None)
RW = st.ConsumerStatus("shop/api", "rw", "granted", version=2)
RO = st.ConsumerStatus("web/web", "ro", "granted", version=2)
ORPHANED = st.ConsumerStatus("web/web", "ro", "pending", st.R_NO_WRITER)
"""An RO consumer holding its grant while no principal holds the RW grant (the writer was
revoked)."""


def obs(**spec: Any) -> Any:
    body = {"metadata": {"namespace": "shop", "name": "db", "uid": "u", "generation": 1}}
    body["spec"] = {"keys": KEYS, **spec}
    return read_rotating_secret(body)


def status(
    rsec: Any = None,
    state: SecretState | None = V2,
    writer: PodInfo | None = WRITER,
    consumers: tuple[st.ConsumerStatus, ...] = (RW, RO),
    plan: decide.FanoutPlan | None = None,
    stale: decide.Staleness = FRESH,
    stores: decide.StoreSync | None = None,
    skipped: tuple[SkippedEntry, ...] = (),
) -> st.RotatingSecretStatus:
    """The status of a working secret (a writer, a committed version, one reader up to date),
    with one thing changed."""
    source = None if state is None else SourceObs(DB, state, state.checksum, "", True, True)
    return decide.secret_status(
        rsec or obs(),
        source,
        writer,
        consumers,
        plan or decide.FanoutPlan(),
        stale,
        True,
        stores,
        skipped,
    )


SKIPPED = SkippedEntry("acl.grants[3]", "shop/db", "principal 'x' is not a name")
Build = Callable[[], st.RotatingSecretStatus]
CASES: list[tuple[str, str, str, Build]] = [
    # (condition, status, reason, the status to look at)
    ("Ready", "True", st.R_READY, lambda: status()),
    ("Ready", "False", st.R_INVALID_SPEC, lambda: status(obs(keys=[]))),
    ("Ready", "False", st.R_SOURCE_NOT_OWNED, lambda: decide.source_not_owned_status(obs(), "x")),
    ("Ready", "False", st.R_SUSPENDED, lambda: status(obs(suspend=True))),
    ("Ready", "False", st.R_NO_WRITER, lambda: status(writer=None)),
    ("Ready", "False", st.R_WAITING_FOR_VALUE, lambda: status(state=SecretState())),
    ("Ready", "False", st.R_DELETING, lambda: status(replace(obs(), deleting=True))),
    ("AccessGranted", "True", st.R_GRANTED, lambda: status()),
    (
        "AccessGranted",
        "False",
        st.R_AWAITING_APPROVAL,
        lambda: status(consumers=(replace(RW, state="pending"),)),
    ),
    (
        "AccessGranted",
        "False",
        st.R_DENIED,
        lambda: status(consumers=(replace(RW, state="denied"),)),
    ),
    ("AccessGranted", "False", st.R_NO_REQUESTS, lambda: status(consumers=(RO,))),
    (
        "AccessGranted",
        "Unknown",
        st.R_ACL_STALE,
        lambda: status(stale=decide.Staleness(True, 40.0, False)),
    ),
    (
        "AccessGranted",
        "Unknown",
        st.R_ACL_REVOKED_STALE,
        lambda: status(stale=decide.Staleness(True, 900.0, True)),
    ),
    (
        "AccessGranted",
        "False",
        st.R_ACL_ENTRY_SKIPPED,
        lambda: status(consumers=(), skipped=(SKIPPED,)),
    ),
    ("Published", "True", st.R_UP_TO_DATE, lambda: status()),
    ("Published", "True", st.R_NO_CONSUMERS, lambda: status(consumers=(RW,))),
    ("Published", "False", st.R_NO_WRITER, lambda: status(consumers=(ORPHANED,))),
    (
        "Published",
        "False",
        st.R_PUBLISHING,
        lambda: status(consumers=(RW, replace(RO, version=1))),
    ),
    (
        "Published",
        "True",
        st.R_NOT_COMMITTED,
        lambda: status(plan=decide.FanoutPlan(hold="NotCommitted")),
    ),
    (
        "Published",
        "False",
        st.R_CHECKSUM_MISMATCH,
        lambda: status(plan=decide.FanoutPlan(hold="ChecksumMismatch")),
    ),
    (
        "Published",
        "False",
        st.R_STORE_NOT_SYNCED,
        lambda: status(plan=decide.FanoutPlan(hold="StoreNotSynced")),
    ),
    ("ExternalStoreSynced", "True", st.R_NO_EXTERNAL_STORES, lambda: status()),
    (
        "ExternalStoreSynced",
        "True",
        st.R_IN_SYNC,
        lambda: status(
            obs(externalStores=STORES),
            stores=decide.StoreSync("synced", "vault:shop/db holds version 2"),
        ),
    ),
    (
        "ExternalStoreSynced",
        "False",
        st.R_STORE_NOT_SYNCED,
        lambda: status(
            obs(externalStores=STORES),
            stores=decide.StoreSync("behind", "vault:shop/db does not hold version 2"),
        ),
    ),
    (
        "ExternalStoreSynced",
        "Unknown",
        st.R_STORE_UNAVAILABLE,
        lambda: status(
            obs(externalStores=STORES),
            stores=decide.StoreSync("unavailable", "vault:shop/db: HTTP 503"),
        ),
    ),
    (
        "ExternalStoreSynced",
        "Unknown",
        st.R_NOT_VERIFIED,
        lambda: status(obs(externalStores=STORES), stores=decide.StoreSync("unverified")),
    ),
    ("Rotated", "True", st.R_COMMITTED, lambda: status()),
    ("Rotated", "Unknown", st.R_WAITING_FOR_VALUE, lambda: status(state=SecretState())),
    (
        "Rotated",
        "False",
        st.R_ROTATION_ABORTED,
        lambda: status(state=replace(V2, last_abort="the hook exited 1")),
    ),
]


@pytest.mark.parametrize(
    ("ctype", "cstatus", "reason", "build"),
    CASES,
    ids=[f"{c[0]}-{c[2]}" for c in CASES],
)
def test_condition_reason(ctype: str, cstatus: str, reason: str, build: Build) -> None:
    got = {c.type: c for c in build().conditions}
    assert (got[ctype].status, got[ctype].reason) == (cstatus, reason)
    assert got[ctype].message


def test_every_reason_is_produced() -> None:
    reasons = {v for k, v in vars(st).items() if k.startswith("R_")}
    assert reasons == {reason for _t, _s, reason, _b in CASES}


def _message(built: st.RotatingSecretStatus, ctype: str) -> str:
    return next(c.message for c in built.conditions if c.type == ctype)


def test_a_denied_writer_is_not_told_an_admin_approves_it() -> None:
    text = _message(
        status(consumers=(replace(RW, state="denied", reason=st.R_DENIED),)), "AccessGranted"
    )
    assert "shop/api was denied" in text
    assert "an admin approves it" not in text


def test_a_pending_request_is_named_with_the_command_that_approves_it() -> None:
    pending_rw = st.ConsumerStatus("shop/api", "rw", "pending", st.R_AWAITING_APPROVAL)
    text = _message(status(consumers=(pending_rw,)), "AccessGranted")
    assert "rotor acl approve shop/db shop/api rw" in text
    pending_ro = st.ConsumerStatus("web/web", "ro", "pending", st.R_AWAITING_APPROVAL)
    text = _message(status(consumers=(RW, pending_ro)), "AccessGranted")
    assert "awaiting approval: web/web ro" in text
    assert "rotor acl approve shop/db web/web ro" in text


def test_with_the_writer_revoked_published_does_not_say_there_is_no_consumer() -> None:
    """The RO consumer still holds its grant; the views go because no writer is granted."""
    text = _message(status(consumers=(ORPHANED,)), "Published")
    assert "no granted RO consumer" not in text
    assert "1 RO consumers hold their grant" in text
    assert "RW grant" in text
