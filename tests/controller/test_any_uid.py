"""The controller runs as a uid that has no line in /etc/passwd: the chart's runAsUser 65532 in
an image without such a user, under containerd (podman adds one, so tests/images never saw it;
the real node in tests/e2e did: kopf asked getpass.getuser() for its peering identity and the
controller crashed with ``KeyError: 'getpwuid(): uid not found: 65532'``)."""

from __future__ import annotations

import pwd

import pytest

from tests.controller.conftest import eventually, running_controller


async def test_controller_starts_as_a_uid_without_a_passwd_entry(
    kube_emulator, controller_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    async for h in running_controller(kube_emulator, controller_settings):  # fails if it died
        await h.rsec("default", "db")
        status = await eventually(lambda h=h: h.status("default", "db"), what="a status")
        assert status.get("conditions"), status
