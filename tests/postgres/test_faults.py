"""Faults and hostile specs against a real PostgreSQL 15 (issue 24): a crash between the state
commit and the files swap, per-version roles that are not Rotor's, ``onOverlapEnd: terminate``
with and without ``pg_signal_backend``, and an admin login that is not SCRAM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.engine import SecretRotator
from agent.files import AtomicWriter
from agent.metrics import AgentMetrics
from agent.store import FileStore
from agent.targets import build_target, file_admin
from rotor.spec import RotatingSecretSpec
from tests.agent.fakes import FakeClock
from tests.postgres.pgserver import PgServer
from tests.postgres.test_target import (
    SETTINGS,
    files,
    login,
    role_name,
    spec_dict,
    version_roles,
)
from tests.postgres.test_target import template as template  # a fixture


class CrashingWriter(AtomicWriter):
    """The agent's files, with a kill -9 between the state commit and the files swap: while
    ``crash`` is set, the swap never happens (the folder keeps what it held)."""

    crash = False

    def write(self, files: Any) -> None:
        if self.crash:
            raise OSError("killed before the swap")
        super().write(files)


def rotator(
    tmp_path: Path, clock: FakeClock, spec: dict[str, Any], writer: AtomicWriter | None = None
) -> tuple[SecretRotator, CollectorRegistry]:
    parsed = RotatingSecretSpec.from_dict(spec)
    assert parsed.target is not None
    assert parsed.target.postgres is not None
    admin = parsed.target.postgres.admin
    registry = CollectorRegistry()
    r = SecretRotator(
        "db",
        parsed,
        FileStore(tmp_path / ".rotor" / "db.json"),
        writer or AtomicWriter(tmp_path / "db"),
        settings=SETTINGS,
        metrics=AgentMetrics(registry),
        clock=clock,
        writer_id="test",
        target=build_target("db", parsed.target, file_admin(admin.user, admin.password_file), 5),
    )
    return r, registry


@pytest.mark.parametrize("restart_after", [601.0, 3600.0], ids=["overlap-over", "rotation-due"])
async def test_a_crash_between_commit_and_swap_writes_the_committed_files_first(
    pg: PgServer, template: str, tmp_path: Path, restart_after: float
) -> None:
    """The agent commits v2 (role b), is killed before its files swap, and restarts when v1's
    overlap is over (or v3 is due). The app read v1 (role a) just before: it must still log
    in after the restart, until the grace counted from the swap ends."""
    clock = FakeClock()
    spec = spec_dict(pg, role_name(), tmp_path, template=template)
    writer = CrashingWriter(tmp_path / "db")
    r1, _ = rotator(tmp_path, clock, spec, writer)
    await r1.step()
    held = files(tmp_path)  # v1, as the app read it
    await clock.advance(3600)
    writer.crash = True
    await r1.step()
    assert r1.state.version == 2
    assert files(tmp_path) == held  # committed, not swapped
    await clock.advance(restart_after)
    r2, _ = rotator(tmp_path, clock, spec)
    await r2.step()
    assert login(pg, held["username"], held["password"]) is None
    swapped = files(tmp_path)
    assert swapped["username"] != held["username"]  # the committed v2 is in the files
    assert swapped["username.previous"] == held["username"]
    assert login(pg, swapped["username"], swapped["password"]) is None
    assert r2.state.version == 2  # no rotation inside the grace from the swap
    assert r2.wakeup_at() == clock.now + 600
    await clock.advance(600)
    await r2.step()
    assert login(pg, held["username"], held["password"]) is not None  # locked, or changed by v3
    now = files(tmp_path)
    assert login(pg, now["username"], now["password"]) is None


async def test_per_version_drops_only_the_roles_rotor_made(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    """A role of the ``<role>_v<N>`` shape that Rotor did not make (a person's, another
    secret's) is never dropped, even with sessions open or at an overlap end."""
    clock = FakeClock()
    role = role_name()
    pg.psql(f"CREATE ROLE {role}_v77 LOGIN PASSWORD 'someone-elses-123'")
    r, _ = rotator(
        tmp_path, clock, spec_dict(pg, role, tmp_path, template=template, strategy="per-version")
    )
    await r.step()
    for _ in range(2):
        await clock.advance(3600)
        await r.step()
        await clock.advance(601)
        await r.step()
    assert version_roles(pg, role) == [f"{role}_v3", f"{role}_v77"]
    assert pg.psql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{role}_v77'") == "t"


def hba_first(pg: PgServer, line: str) -> None:
    """Put ``line`` first in the server's pg_hba.conf and reload."""
    hba = pg.folder / "data" / "pg_hba.conf"
    hba.write_text(line + "\n" + hba.read_text())
    pg.psql("SELECT pg_reload_conf()")


@pytest.mark.parametrize("method", ["password", "md5"])
async def test_the_admin_password_is_never_sent_but_by_scram(
    pg: PgServer, template: str, tmp_path: Path, method: str
) -> None:
    """A server (or whoever answers for it) that asks for the password in clear or as md5 gets
    nothing: the rotation aborts with a reason that names the fix, nothing is committed."""
    admin = f"{method}_admin_{role_name()}"
    secret = "admin-in-clear-123"
    pg.psql(f"SET password_encryption = 'md5'; CREATE ROLE {admin} LOGIN CREATEROLE "
            f"PASSWORD '{secret}'")  # fmt: skip
    hba_first(pg, f"host all {admin} 127.0.0.1/32 {method}")
    (tmp_path / "admin").write_text(secret)
    spec = spec_dict(pg, role_name(), tmp_path, template=template)
    spec["target"]["postgres"]["admin"] = {"user": admin, "passwordFile": str(tmp_path / "admin")}
    r, _ = rotator(tmp_path, FakeClock(), spec)
    await r.step()
    assert r.state.version == 0
    assert r.state.abort_reason == "AdminLoginRefused"
    assert "did not offer SCRAM-SHA-256" in r.state.last_abort
    assert "scram-sha-256 in pg_hba.conf" in r.state.last_abort
