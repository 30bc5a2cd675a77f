"""Faults and hostile specs against a real PostgreSQL 15 (issue 24): a crash between the state
commit and the files swap, per-version roles that are not Rotor's, ``onOverlapEnd: terminate``
with and without ``pg_signal_backend``, and an admin login that is not SCRAM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
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


def admin_spec(pg: PgServer, tmp_path: Path, template: str, grant: str = "") -> dict[str, Any]:
    """A spec whose admin is a fresh CREATEROLE role (``grant``: what else it is granted)."""
    admin = f"admin_{role_name()}"
    pg.psql(f"CREATE ROLE {admin} LOGIN CREATEROLE PASSWORD 'admin-pass-123'")
    if grant:
        pg.psql(f"GRANT {grant} TO {admin}")
    (tmp_path / admin).write_text("admin-pass-123")
    spec = spec_dict(pg, role_name(), tmp_path, template=template, onOverlapEnd="terminate")
    spec["target"]["postgres"]["admin"] = {"user": admin, "passwordFile": str(tmp_path / admin)}
    return spec


async def overlap_end_with_a_session(
    pg: PgServer, r: SecretRotator, clock: FakeClock, tmp_path: Path
) -> psycopg.Connection[Any]:
    """Rotate, open a session as the pair the files held, end that pair's overlap."""
    f = files(tmp_path)
    session = psycopg.connect(pg.conninfo(f["username"].decode(), f["password"].decode()))
    await clock.advance(3600)
    await r.step()
    await clock.advance(601)
    await r.step()
    return session


def alive(session: psycopg.Connection[Any]) -> bool:
    try:
        session.execute("SELECT 1").fetchone()
    except psycopg.OperationalError:
        return False
    return True


async def test_terminate_without_pg_signal_backend_is_a_recorded_failure(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    """With the privileges CREATEROLE gives, PostgreSQL 15 refuses to end another role's
    sessions: the role is locked, the failure is recorded on the state (the controller's
    Rotated condition) and counted; after the grant the next overlap end clears it."""
    spec = admin_spec(pg, tmp_path, template)
    admin = spec["target"]["postgres"]["admin"]["user"]
    clock = FakeClock()
    r, reg = rotator(tmp_path, clock, spec)
    await r.step()
    session = await overlap_end_with_a_session(pg, r, clock, tmp_path)
    failure = r.state.last_retire_failure
    assert failure.startswith("PermissionDenied: overlap end of version 1: ")
    assert f"GRANT pg_signal_backend TO {admin}" in failure
    assert alive(session)  # PostgreSQL kept it: that is what the record says
    assert reg.get_sample_value(
        "rotor_agent_target_failures_total",
        {"secret": "db", "step": "retire", "reason": "PermissionDenied"},
    )
    session.close()
    pg.psql(f"GRANT pg_signal_backend TO {admin}")
    session = await overlap_end_with_a_session(pg, r, clock, tmp_path)
    assert not alive(session)
    assert r.state.last_retire_failure == ""


async def test_terminate_with_pg_signal_backend_ends_the_retired_sessions(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    r, _ = rotator(tmp_path, clock, admin_spec(pg, tmp_path, template, "pg_signal_backend"))
    await r.step()
    held = files(tmp_path)
    session = await overlap_end_with_a_session(pg, r, clock, tmp_path)
    assert not alive(session)
    assert "not permitted to log in" in (login(pg, held["username"], held["password"]) or "")
    now = files(tmp_path)
    assert login(pg, now["username"], now["password"]) is None
    assert r.state.last_retire_failure == ""
