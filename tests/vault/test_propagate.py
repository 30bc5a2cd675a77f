"""controller.propagate: the decision to take a value a person wrote in Vault into the source."""

from __future__ import annotations

import uuid

import hvac
import pytest

from agent.vault import TokenLogin, VaultStore
from controller.propagate import decide_propagation
from controller.vault import TokenAuth, VaultReader
from rotor.external import RotorMetadata, StoreRecord, StoreValues
from rotor.layout import SecretState, checksum
from rotor.protocol import commit, prepare

OLD = {"password": b"old-password-value"}
NEW = {"password": b"new-password-value"}
THEIRS = {"password": b"typed-by-a-person"}
T0 = 1_700_000_000.0
FILES = ("password",)


def committed() -> SecretState:
    return commit(prepare(SecretState(), OLD, T0, "api-0"), T0, 60)


def pending() -> SecretState:
    return prepare(committed(), NEW, T0 + 5, "api-0")


def read(values, version=7, rotor=False, deleted=False) -> StoreValues:
    digest = checksum(values)
    meta = RotorMetadata(2, digest, "api-0", T0, "shop/db") if rotor else None
    return StoreValues(version, values, StoreRecord(version, digest, meta, deleted))


@pytest.mark.parametrize(
    ("state", "got", "action", "reason"),
    [
        (committed(), None, "none", "NotFound"),
        (committed(), read(OLD), "none", "InSync"),
        (pending(), read(NEW), "none", "RotorPending"),
        (committed(), read(NEW, rotor=True), "none", "RotorWrite"),  # an aborted rotation
        (committed(), read({}, deleted=True), "none", "Deleted"),
        (pending(), read(THEIRS), "wait", "RotationInFlight"),
        (committed(), read({"pass": b"x"}), "reject", "KeysMismatch"),
        (committed(), read({**THEIRS, "user": b"x"}), "reject", "KeysMismatch"),
        (committed(), read(THEIRS), "propagate", "Propagate"),
        (SecretState(), read(THEIRS), "propagate", "Propagate"),  # adopt an existing value
    ],
)
def test_decision_table(state, got, action, reason):
    d = decide_propagation(state, got, FILES, T0 + 100, 60, "vault:secret/shop/db")
    assert (d.action, d.reason) == (action, reason)
    assert (d.state is not None) == (action == "propagate")
    assert "typed-by-a-person" not in d.message


def test_propagated_state_keeps_the_previous_value_for_the_overlap():
    d = decide_propagation(committed(), read(THEIRS), FILES, T0 + 100, 60, "vault:secret/shop/db")
    new = d.state
    assert new is not None
    assert new.version == committed().version + 1
    assert new.phase == "committed"
    assert new.current == THEIRS
    assert new.previous == OLD
    assert new.previous_expires == T0 + 160
    assert new.checksum == checksum(THEIRS)
    assert "source version 2" in d.message


def test_keys_mismatch_names_the_keys():
    d = decide_propagation(committed(), read({"pass": b"x"}), FILES, T0, 60, "vault:secret/shop/db")
    assert "missing password" in d.message
    assert "unexpected pass" in d.message


async def test_a_persons_write_in_a_real_store_is_propagated_once(bao):
    p = f"shop/{uuid.uuid4().hex[:10]}"
    agent = VaultStore(bao.url, "secret", TokenLogin(bao.token))
    ctl = VaultReader(bao.url, "secret", TokenAuth(bao.token))
    state = committed()
    await agent.write_pending(p, state.current, None, RotorMetadata(1, "", "api-0", T0, "shop/db"))
    # Rotor's own write: nothing to do
    d = decide_propagation(state, await ctl.read_values(p), FILES, T0 + 10, 60, p)
    assert d.reason == "InSync"
    hvac.Client(url=bao.url, token=bao.token).secrets.kv.v2.create_or_update_secret(
        p, secret={"password": THEIRS["password"].decode()}
    )
    d = decide_propagation(state, await ctl.read_values(p), FILES, T0 + 20, 60, p)
    assert d.action == "propagate"
    assert d.state is not None
    assert d.state.current == THEIRS
    # once the source Secret holds it, the same store version is in sync (no loop)
    again = decide_propagation(d.state, await ctl.read_values(p), FILES, T0 + 30, 60, p)
    assert again.reason == "InSync"
    assert await ctl.store_holds(p, d.state.version, d.state.checksum)
