"""The Vault edge (rotor.vaultkv.vault_error and map_exception, controller.vault.not_ready)
against a real OpenBao: each representative failure arrives as the right typed error with the
answer carried (status, Vault's errors list); no classification by message text."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import hvac
import pytest

from agent.vault import TokenLogin, VaultStore
from controller.vault import TokenAuth, VaultReader, not_ready
from rotor.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PermanentError,
    RotorError,
    UnavailableError,
)
from rotor.external import RotorMetadata
from tests.conftest import free_port

NEW = {"password": b"new-password-value"}


def meta(version: int) -> RotorMetadata:
    return RotorMetadata(version, "", "shop/api-0", 0.0, "shop/db")


def default_policy_token(bao) -> str:
    root = hvac.Client(url=bao.url, token=bao.token)
    return str(root.auth.token.create(policies=["default"])["auth"]["client_token"])


async def test_a_token_without_the_policy_is_forbidden_403(bao):
    reader = VaultReader(bao.url, "secret", TokenAuth(default_policy_token(bao)))
    with pytest.raises(ForbiddenError, match=r'\["read"\] on path "secret/data/shop/x"') as e:
        await reader.read_version("shop/x")
    assert e.value.status == 403
    assert isinstance(e.value.payload, list)
    assert any("permission denied" in x for x in e.value.payload)  # Vault's errors list


@dataclass
class Rotating:
    """A token file whose first read is a revoked token (the next one works)."""

    tokens: list[str]
    reads: list[str] = field(default_factory=list)

    def read(self) -> str:
        self.reads.append(self.tokens[min(len(self.reads), len(self.tokens) - 1)])
        return self.reads[-1]


async def test_a_refused_token_logs_in_again_once(bao):
    login = Rotating(["s.revoked", bao.token])
    reader = VaultReader(bao.url, "secret", login)
    assert await reader.read_version(f"shop/{uuid.uuid4().hex[:8]}") is None
    assert len(login.reads) == 2  # the 403 (typed, not its text) made it log in again


async def test_a_check_and_set_mismatch_is_a_conflict_400(bao):
    p = f"shop/{uuid.uuid4().hex[:10]}"
    store = VaultStore(bao.url, "secret", TokenLogin(bao.token))
    assert await store.write_pending(p, NEW, None, meta(1)) == 1
    with pytest.raises(ConflictError) as e:
        await store.write_pending(p, {"password": b"other"}, 7, meta(2))
    assert e.value.status == 400
    assert isinstance(e.value.payload, list)


async def test_an_absent_version_is_not_found(bao):
    reader = VaultReader(bao.url, "secret", TokenAuth(bao.token))
    with pytest.raises(NotFoundError):
        await reader.read_values(f"shop/{uuid.uuid4().hex[:10]}")


async def test_a_refused_connection_is_unavailable_without_a_status():
    store = VaultStore(f"http://127.0.0.1:{free_port()}", "secret", TokenLogin("t"), timeout=2)
    with pytest.raises(UnavailableError, match="did not answer") as e:
        await store.read_version("shop/x")
    assert e.value.status is None


# -- the Ready check, from the edge's errors (pure) ---------------------------------------------
TLS = PermanentError("tls", payload=["SSLError"])
PREFLIGHT = (
    "preflight capability check returned 403, please ensure client's policies grant access to "
    'path "x/"'
)


@pytest.mark.parametrize(
    ("err", "reason", "text"),
    [
        (TLS, "Unreachable", "caBundle"),
        (UnavailableError("x", payload=["ConnectionError"]), "Unreachable", "did not answer"),
        (UnavailableError("x", status=503, payload=["sealed"]), "Unreachable", "answered 503"),
        (UnavailableError("x", status=0, payload=[]), "Unreachable", "answered 0"),
        (ForbiddenError("x", status=403, payload=[PREFLIGHT]), "MountNotFound", "no such mount"),
        (ForbiddenError("x", status=403, payload=["permission denied"]), "AuthFailed", "refused"),
        (ForbiddenError("x", status=401, payload=[]), "AuthFailed", "refused"),
        (PermanentError("x", status=400, payload=["bad"]), "MountNotFound", "400 bad"),
    ],
)
def test_not_ready(err: RotorError, reason: str, text: str) -> None:
    check = not_ready(err, "http://vault:8200", "secret")
    assert (check.ready, check.reason) == (False, reason)
    assert text in check.message
