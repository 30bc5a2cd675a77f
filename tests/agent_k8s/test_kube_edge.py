"""agent.kube, the agent's API edge: each representative failure arrives as the right typed
error with the answer carried (status, headers, Status body). Permissions, conflicts and TLS
against the secure strict emulator; throttling and 503 from the scripted server of test_kube."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.kube import Forbidden, Gone, KubeClient, KubeConfig, secret_path, secrets_path
from rotor.errors import (
    ConflictError,
    ForbiddenError,
    GoneError,
    NotFoundError,
    UnavailableError,
)
from tests.agent_k8s.test_kube import Script, scripted, status
from tests.kubeemu import EmulatorThread

__all__ = ["scripted"]

NS = "shop"


@pytest.fixture(scope="module")
def secure() -> Iterator[EmulatorThread]:
    with EmulatorThread([], secure=True) as emu:
        yield emu


def config(emu: EmulatorThread, tmp_path: Path, token: str, *, trust: bool = True) -> KubeConfig:
    (tmp_path / "token").write_text(token)
    ca = str(emu.ca_file) if trust else None
    return KubeConfig(url=emu.url, token_file=str(tmp_path / "token"), ca_file=ca, timeout=5)


def test_the_agents_names_are_the_shared_errors() -> None:
    assert issubclass(Forbidden, ForbiddenError)  # the pod's identity, not a store's
    assert Gone is GoneError


async def test_a_refused_permission_is_forbidden_with_the_status_body(
    secure: EmulatorThread, tmp_path: Path
) -> None:
    cfg = config(secure, tmp_path, secure.issue_token(NS, "app"))
    async with KubeClient(cfg) as kube:
        with pytest.raises(Forbidden) as e:
            await kube.get(secret_path(NS, "db"))
    assert e.value.status == 403
    assert isinstance(e.value.payload, dict)
    assert e.value.payload["reason"] == "Forbidden"
    assert "system:serviceaccount:shop:app" in str(e.value)


async def test_an_unknown_token_is_forbidden_401(secure: EmulatorThread, tmp_path: Path) -> None:
    async with KubeClient(config(secure, tmp_path, "not-a-token")) as kube:
        with pytest.raises(ForbiddenError) as e:
            await kube.get(secrets_path(NS))
    assert e.value.status == 401


async def test_a_stale_resource_version_is_a_conflict(
    secure: EmulatorThread, tmp_path: Path
) -> None:
    async with KubeClient(config(secure, tmp_path, secure.admin_token)) as kube:
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": NS}}
        made = await kube.create(secrets_path(NS), {**body, "data": {}})
        rv = made["metadata"]["resourceVersion"]
        await kube.patch(secret_path(NS, "db"), {"data": {"a": "MQ=="}}, resource_version=rv)
        with pytest.raises(ConflictError) as e:
            await kube.patch(secret_path(NS, "db"), {"data": {"a": "Mg=="}}, resource_version=rv)
        assert e.value.status == 409
        assert isinstance(e.value.payload, dict)
        assert e.value.payload["reason"] == "Conflict"
        with pytest.raises(NotFoundError) as nf:
            await kube.get(secret_path(NS, "missing"))
        assert nf.value.status == 404


async def test_an_untrusted_certificate_is_unavailable(
    secure: EmulatorThread, tmp_path: Path
) -> None:
    cfg = config(secure, tmp_path, secure.admin_token, trust=False)
    async with KubeClient(cfg) as kube:
        with pytest.raises(UnavailableError, match=r"TLS .* CERTIFICATE_VERIFY_FAILED") as e:
            await kube.get(secrets_path(NS))
    assert e.value.status is None


@pytest.mark.parametrize(
    ("code", "reason", "headers", "delay"),
    [
        (429, "TooManyRequests", {"Retry-After": "3"}, 3.0),
        (503, "ServiceUnavailable", {}, None),
        (410, "Expired", {}, None),
    ],
)
async def test_throttling_outages_and_expiry_carry_the_answer(
    scripted: tuple[Script, str],
    code: int,
    reason: str,
    headers: dict[str, str],
    delay: float | None,
) -> None:
    script, url = scripted
    script.answers = [status(code, reason, headers)]
    async with KubeClient(KubeConfig(url=url)) as kube:
        with pytest.raises(UnavailableError if code != 410 else GoneError) as e:
            await kube.get(secret_path(NS, "db"))
    assert e.value.status == code
    assert getattr(e.value, "delay", None) == delay
    assert isinstance(e.value.payload, dict)
    assert e.value.payload["reason"] == reason
    if headers:
        assert e.value.headers["retry-after"] == headers["Retry-After"]
