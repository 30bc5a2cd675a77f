"""The whole system (rotorctl.harness: emulator, webhook, controller, agent processes) with a
PostgreSQL target: the injected writer agent rotates a role pair, the reader's files always
hold a pair that logs in. Kept small: the harness is shared with tests/system."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotorctl.harness import System, wait_for
from tests.postgres.pgserver import ADMIN, ADMIN_PASSWORD, PgServer
from tests.postgres.test_target import login

NS, NAME, RO_NS = "shop", "db", "web"


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    with System(tmp_path / "sys", log_level="INFO") as s:
        yield s


@pytest.mark.slow
def test_writer_rotates_a_role_pair_and_the_reader_always_holds_one_that_logs_in(
    pg: PgServer, system: System
) -> None:
    pg.psql("CREATE TABLE IF NOT EXISTS items (id int); CREATE ROLE sys_rw NOLOGIN; "
            "GRANT SELECT ON items TO sys_rw")  # fmt: skip
    system.ensure_namespace(NS)
    system.api.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg-admin", "namespace": NS,
                      "annotations": {"rotor.dev/postgres-admin-for": NAME}},
         "data": {"username": base64.b64encode(ADMIN.encode()).decode(),
                  "password": base64.b64encode(ADMIN_PASSWORD.encode()).decode()}}
    )  # fmt: skip
    target = {"host": "127.0.0.1", "port": pg.port, "role": "sys_app", "template": "sys_rw",
              "admin": {"secretRef": {"name": "pg-admin"}}}  # fmt: skip
    system.api.create(
        {"apiVersion": "rotor.dev/v1alpha1", "kind": "RotatingSecret",
         "metadata": {"name": NAME, "namespace": NS},
         "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}],
                  "rotation": {"interval": "1h", "overlap": "30m"},
                  "target": {"postgres": target}}}
    )  # fmt: skip
    api = system.workload(NS, "pg", {"rotor.dev/rw": NAME})
    web = system.workload(RO_NS, "web", {"rotor.dev/ro": f"{NS}/{NAME}"})
    system.add_pod(api)
    reader = system.add_pod(web)
    system.acl("approve", f"{NS}/{NAME}", f"{NS}/pg", "rw")
    system.acl("approve", f"{NS}/{NAME}", f"{RO_NS}/web", "ro")
    for version in (1, 2, 3):
        if version > 1:
            system.rotate_now(NS, NAME)
        files = wait_for(
            lambda v=version: (
                (f := reader.files(NAME))
                and json.loads(f.get(".rotor.json", "{}")).get("version") == v
                and f
            ),
            f"version {version} in the reader's files",
            60,
        )
        assert files["username"] == f"sys_app_{'aba'[version - 1]}"
        assert login(pg, files["username"], files["password"]) is None
        if version > 1:  # the previous pair still logs in during the overlap
            assert login(pg, files["username.previous"], files["password.previous"]) is None
    rotated = next(c for c in system.status(NS, NAME)["conditions"] if c["type"] == "Rotated")
    assert (rotated["status"], rotated["reason"]) == ("True", "Committed")
