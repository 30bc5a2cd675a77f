"""The PostgreSQL target against a real PostgreSQL 15: the engine (fake clock, real files, real
state file) rotates a role pair; every pair the files hold logs in; failures abort with nothing
committed; passwords reach the server only as SCRAM verifiers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from agent.engine import SecretRotator
from agent.files import METADATA, AtomicWriter
from agent.metrics import AgentMetrics
from agent.store import FileStore
from agent.targets import build_target, file_admin
from rotor.protocol import prepare
from rotor.settings.agent import AgentSettings
from rotor.spec import RotatingSecretSpec
from tests.agent.fakes import FakeClock
from tests.conftest import free_port
from tests.postgres.pgserver import ADMIN, ADMIN_PASSWORD, PgServer

SETTINGS = AgentSettings(jitter=0.0, backoff_base=2.0, backoff_max=60.0)
_ids = itertools.count(1)


def spec_dict(pg: PgServer, role: str, tmp_path: Path, **target: Any) -> dict[str, Any]:
    pw = tmp_path / "admin-password"
    if not pw.exists():
        pw.write_text(ADMIN_PASSWORD + "\n")
    body: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": pg.port,
        "role": role,
        "admin": {"user": ADMIN, "passwordFile": str(pw)},
        "connectTimeout": "2s",
    }
    body.update(target)
    return {
        "keys": [{"name": "password", "generator": {"type": "password", "length": 24}}],
        "rotation": {"interval": "1h", "overlap": "10m"},
        "target": {"postgres": body},
    }


def make(tmp_path: Path, clock: FakeClock, spec: dict[str, Any]) -> tuple[SecretRotator, Any]:
    parsed = RotatingSecretSpec.from_dict(spec)
    assert parsed.target is not None
    pgs = parsed.target.postgres
    assert pgs is not None
    registry = CollectorRegistry()
    target = build_target(
        "db", parsed.target, file_admin(pgs.admin.user, pgs.admin.password_file), 5.0
    )
    r = SecretRotator(
        "db",
        parsed,
        FileStore(tmp_path / ".rotor" / "db.json"),
        AtomicWriter(tmp_path / "db"),
        settings=SETTINGS,
        metrics=AgentMetrics(registry),
        clock=clock,
        writer_id="test",
        target=target,
    )
    return r, registry


def files(tmp_path: Path) -> dict[str, bytes]:
    return AtomicWriter(tmp_path / "db").read()


def login(pg: PgServer, user: bytes | str, password: bytes | str) -> str | None:
    """None when ``user`` logs in with ``password`` and runs a query; else the error."""
    u = user.decode() if isinstance(user, bytes) else user
    p = password.decode() if isinstance(password, bytes) else password
    try:
        with psycopg.connect(pg.conninfo(u, p)) as c:
            c.execute("SELECT count(*) FROM items").fetchone()
    except psycopg.Error as e:
        return str(e)
    return None


@pytest.fixture
def template(pg: PgServer) -> str:
    """A template role with the grants the app needs (SELECT on a table)."""
    name = f"app_rw_{next(_ids)}"
    pg.psql(f"CREATE TABLE IF NOT EXISTS items (id int); CREATE ROLE {name} NOLOGIN; "
            f"GRANT SELECT ON items TO {name}")  # fmt: skip
    return name


def role_name() -> str:
    return f"app{next(_ids)}"


async def test_alternating_rotates_a_pair_and_every_pair_in_the_files_logs_in(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    role = role_name()
    r, reg = make(tmp_path, clock, spec_dict(pg, role, tmp_path, template=template))
    await r.step()
    f = files(tmp_path)
    assert f["username"] == f"{role}_a".encode()
    assert login(pg, f["username"], f["password"]) is None  # created, with the template's grants
    seen = [f["username"]]
    for _ in range(4):
        await clock.advance(3600)
        await r.step()
        f = files(tmp_path)
        seen.append(f["username"])
        assert login(pg, f["username"], f["password"]) is None
        # the previous pair stays valid through the overlap
        assert login(pg, f["username.previous"], f["password.previous"]) is None
        meta = json.loads(f[METADATA])
        assert meta["version"] == r.state.version
        assert meta["previousVersion"] == r.state.version - 1
        # overlap ends: the retired role is locked, the current one still logs in
        old = f["username.previous"], f["password.previous"]
        await clock.advance(601)
        await r.step()
        f = files(tmp_path)
        assert "password.previous" not in f
        assert "not permitted to log in" in (login(pg, *old) or "")
        assert login(pg, f["username"], f["password"]) is None
    assert seen == [f"{role}_{s}".encode() for s in "ababa"]
    assert (
        reg.get_sample_value("rotor_agent_rotations_total", {"secret": "db", "result": "success"})
        == 5
    )


async def test_a_rotation_never_changes_the_password_consumers_use(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    """Rotate-now twice inside the overlap: each pair held stays valid until the rotation after
    next (the zero-failure guarantee of alternating users)."""
    clock = FakeClock()
    r, _ = make(tmp_path, clock, spec_dict(pg, role_name(), tmp_path, template=template))
    await r.step()
    held = [files(tmp_path)]
    for _ in range(3):
        r.request_rotation()
        await r.step()
        held.append(files(tmp_path))
        now = held[-1]
        assert login(pg, now["username"], now["password"]) is None
        assert login(pg, held[-2]["username"], held[-2]["password"]) is None
    # the pair from two rotations ago is the one the last rotation changed
    assert login(pg, held[-3]["username"], held[-3]["password"]) is not None


async def test_passwords_reach_the_server_only_as_scram_verifiers(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    role = role_name()
    r, _ = make(tmp_path, clock, spec_dict(pg, role, tmp_path, template=template))
    values = []
    for _ in range(3):
        r.request_rotation()
        await r.step()
        values.append(files(tmp_path)["password"].decode())
    log = pg.log_text()
    assert f'ALTER ROLE "{role}_a" WITH LOGIN PASSWORD' in log  # log_statement=all is on
    assert "SCRAM-SHA-256$4096:" in log
    for v in values:
        assert v not in log
    stored = pg.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname LIKE '{role}\\_%'")
    assert stored.splitlines()
    assert all(x.startswith("SCRAM-SHA-256$") for x in stored.split())


async def test_single_changes_one_role_in_place(pg: PgServer, tmp_path: Path) -> None:
    clock = FakeClock()
    role = role_name()
    pg.psql(f"CREATE ROLE {role} LOGIN; GRANT SELECT ON items TO {role}")
    r, _ = make(tmp_path, clock, spec_dict(pg, role, tmp_path, strategy="single"))
    await r.step()
    first = files(tmp_path)
    assert first["username"] == role.encode()
    assert login(pg, role, first["password"]) is None
    await clock.advance(3600)
    await r.step()
    second = files(tmp_path)
    assert second["username"] == role.encode()
    assert login(pg, role, second["password"]) is None
    # the honest limit of single: the previous password is gone at once
    assert "password authentication failed" in (login(pg, role, first["password"]) or "")


def _counter(reg: Any, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, {"secret": "db", **labels}) or 0.0


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [("port", "DatabaseUnreachable"), ("password", "AdminLoginRefused")],
)
async def test_unreachable_or_refused_aborts_with_nothing_committed(
    pg: PgServer, template: str, tmp_path: Path, breakage: str, reason: str
) -> None:
    clock = FakeClock()
    good = spec_dict(pg, role_name(), tmp_path, template=template)
    r, _ = make(tmp_path, clock, good)
    await r.step()
    before = files(tmp_path)
    assert r.state.version == 1
    bad = json.loads(json.dumps(good))
    if breakage == "port":
        bad["target"]["postgres"]["port"] = free_port()
    else:
        wrong = tmp_path / "wrong-password"
        wrong.write_text("not-the-admin-password")
        bad["target"]["postgres"]["admin"]["passwordFile"] = str(wrong)
    r2, reg = make(tmp_path, clock, bad)
    await clock.advance(3600)
    await r2.step()
    assert r2.state.version == 1
    assert r2.state.phase == "committed"
    assert r2.state.last_abort.startswith(reason + ": ")
    assert r2.state.abort_reason == reason
    assert files(tmp_path) == before  # consumers keep a working pair
    assert login(pg, before["username"], before["password"]) is None
    assert _counter(reg, "rotor_agent_target_failures_total", step="apply", reason=reason) == 1
    assert _counter(reg, "rotor_agent_rotations_total", result="aborted") == 1
    assert r2.retry_at is not None  # backs off and retries
    stored = json.loads((tmp_path / ".rotor" / "db.json").read_text())
    assert stored["annotations"]["rotor.dev/last-abort"].startswith(reason)
    for v in before.values():  # the recorded reason never carries a value
        assert v.decode(errors="replace") not in stored["annotations"]["rotor.dev/last-abort"]
    # the database comes back: the next rotation commits and clears the abort
    r3, _ = make(tmp_path, clock, good)
    await clock.advance(120)
    await r3.step()
    assert r3.state.version == 2
    assert r3.state.last_abort == ""


async def test_a_template_that_does_not_exist_names_the_field(pg: PgServer, tmp_path: Path) -> None:
    clock = FakeClock()
    role = role_name()
    r, reg = make(tmp_path, clock, spec_dict(pg, role, tmp_path, template="no_such_template"))
    await r.step()
    assert not r.ready
    assert r.state.version == 0
    assert r.state.abort_reason == "TemplateRoleMissing"
    assert "spec.target.postgres.template: role 'no_such_template' does not exist" in (
        r.state.last_abort
    )
    assert pg.psql(f"SELECT count(*) FROM pg_roles WHERE rolname LIKE '{role}%'") == "0"
    assert (
        _counter(
            reg, "rotor_agent_target_failures_total", step="apply", reason="TemplateRoleMissing"
        )
        == 1
    )


async def test_a_rotation_found_pending_is_applied_again_then_committed(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    r, _ = make(tmp_path, clock, spec_dict(pg, role_name(), tmp_path, template=template))
    await r.step()
    stored = await r.store.read()
    assert r.target is not None
    values = r.target.values_for(stored.state, {"password": b"pending-password-123"})
    await r.store.write(prepare(stored.state, values, clock.time(), "test"), stored.token)
    # a restarted agent finds it pending: the password is set (again) before the commit
    r2, _ = make(tmp_path, clock, spec_dict(pg, role_name(), tmp_path, template=template))
    r2.target = r.target
    await r2.step()
    f = files(tmp_path)
    assert r2.state.version == 2
    assert f["password"] == b"pending-password-123"
    assert login(pg, f["username"], f["password"]) is None


async def test_no_password_admin_on_a_unix_socket(pg: PgServer, template: str, tmp_path: Path):
    """``host`` is the socket folder and ``admin`` has no password (the test server trusts its
    socket; in a pod that is peer authentication on the database's own socket)."""
    clock = FakeClock()
    spec = spec_dict(pg, role_name(), tmp_path, template=template)
    spec["target"]["postgres"]["host"] = pg.socket_dir
    spec["target"]["postgres"]["admin"] = {"user": "postgres"}
    r, _ = make(tmp_path, clock, spec)
    await r.step()
    f = files(tmp_path)
    assert r.state.version == 1
    assert login(pg, f["username"], f["password"]) is None


def version_roles(pg: PgServer, role: str) -> list[str]:
    out = pg.psql(f"SELECT rolname FROM pg_roles WHERE rolname LIKE '{role}\\_v%' ORDER BY 1")
    return out.split()


async def test_per_version_makes_a_role_per_version_and_drops_it_when_its_overlap_ends(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    role = role_name()
    r, reg = make(
        tmp_path, clock, spec_dict(pg, role, tmp_path, template=template, strategy="per-version")
    )
    await r.step()
    f = files(tmp_path)
    assert f["username"] == f"{role}_v1".encode()
    assert login(pg, f["username"], f["password"]) is None
    await clock.advance(3600)
    await r.step()
    f = files(tmp_path)
    assert f["username"] == f"{role}_v2".encode()
    assert login(pg, f["username.previous"], f["password.previous"]) is None
    await clock.advance(601)
    await r.step()
    assert version_roles(pg, role) == [f"{role}_v2"]  # v1 dropped at its overlap end
    # two rotate-nows inside an overlap skip v3's overlap end: it goes at v4's
    for _ in range(2):
        r.request_rotation()
        await r.step()
    f = files(tmp_path)
    assert f["username"] == f"{role}_v4".encode()
    assert login(pg, f["username.previous"], f["password.previous"]) is None
    await clock.advance(601)
    await r.step()
    assert version_roles(pg, role) == [f"{role}_v4"]
    assert login(pg, files(tmp_path)["username"], files(tmp_path)["password"]) is None
    assert not reg.get_sample_value(
        "rotor_agent_target_failures_total",
        {"secret": "db", "step": "retire", "reason": "DatabaseError"},
    )


async def test_a_version_role_that_owns_objects_is_kept_and_the_failure_counted(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    role = role_name()
    pg.psql(f"GRANT CREATE ON SCHEMA public TO {template}")
    r, reg = make(
        tmp_path, clock, spec_dict(pg, role, tmp_path, template=template, strategy="per-version")
    )
    await r.step()
    f = files(tmp_path)
    with psycopg.connect(pg.conninfo(f["username"].decode(), f["password"].decode())) as c:
        c.execute(f"CREATE TABLE owned_by_{role} (id int)")
    await clock.advance(3600)
    await r.step()
    await clock.advance(601)
    await r.step()
    assert version_roles(pg, role) == [f"{role}_v1", f"{role}_v2"]
    assert (
        reg.get_sample_value(
            "rotor_agent_target_failures_total",
            {"secret": "db", "step": "retire", "reason": "DatabaseError"},
        )
        == 1
    )
    assert "password.previous" not in files(tmp_path)  # the overlap is over anyway
    pg.psql(f"ALTER TABLE owned_by_{role} OWNER TO {template}")
    r.request_rotation()
    await r.step()  # the next rotation drops it
    assert version_roles(pg, role) == [f"{role}_v2", f"{role}_v3"]


async def test_an_admin_without_createrole_is_permission_denied(
    pg: PgServer, template: str, tmp_path: Path
) -> None:
    weak = f"weak_admin_{next(_ids)}"
    pg.psql(f"CREATE ROLE {weak} LOGIN PASSWORD 'weak-pass-123'")
    (tmp_path / "weak").write_text("weak-pass-123")
    spec = spec_dict(pg, role_name(), tmp_path, template=template)
    spec["target"]["postgres"]["admin"] = {"user": weak, "passwordFile": str(tmp_path / "weak")}
    clock = FakeClock()
    r, _ = make(tmp_path, clock, spec)
    await r.step()
    assert r.state.version == 0
    assert r.state.abort_reason == "PermissionDenied"
    assert f"admin '{weak}' may not change role" in r.state.last_abort
    assert "grant it CREATEROLE" in r.state.last_abort
