"""``rotor-agent standalone`` as a real process with a PostgreSQL target: it rotates a role pair
every second while clients read the files and log in continuously; none of their logins fails.
And a config the agent cannot serve standalone is a clear error."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_until
from tests.postgres.consumers import Clients, read_pair
from tests.postgres.pgserver import ADMIN, ADMIN_PASSWORD, PgServer

AGENT = [sys.executable, "-m", "agent", "standalone"]


def config(pg: PgServer, tmp_path: Path, role: str, **target: Any) -> Path:
    pw = tmp_path / "admin-password"
    pw.write_text(ADMIN_PASSWORD)
    body: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": pg.port,
        "role": role,
        "admin": {"user": ADMIN, "passwordFile": str(pw)},
    }
    body.update(target)
    doc = [
        {
            "name": "db",
            "spec": {
                "keys": [{"name": "password", "generator": {"type": "password", "length": 24}}],
                "rotation": {"interval": "1s", "overlap": "500ms"},
                "target": {"postgres": body},
            },
        }
    ]
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_standalone_agent_rotates_a_pair_and_no_login_fails(pg: PgServer, tmp_path: Path) -> None:
    pg.psql(
        "CREATE TABLE IF NOT EXISTS items (id int); CREATE ROLE app_sa_rw NOLOGIN; "
        "GRANT SELECT ON items TO app_sa_rw"
    )
    cfg = config(pg, tmp_path, "app_sa", template="app_sa_rw")
    out = tmp_path / "out"
    env = {**os.environ, "ROTOR_JITTER": "0"}
    proc = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "--dir", str(out), "--metrics-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        folder = out / "db"
        wait_until("the first .rotor.json", lambda: (folder / ".rotor.json").exists())
        _, _, first = read_pair(folder)
        clients = Clients(folder, pg.port, new=2, long=1).start()
        try:
            wait_until("six more rotations", lambda: read_pair(folder)[2] >= first + 6)
        finally:
            tally = clients.close()
        users = set()
        for _ in range(2):  # the two roles take turns
            user = read_pair(folder)[0]
            users.add(user)
            wait_until("the other role to become current", lambda u=user: read_pair(folder)[0] != u)
        assert users == {"app_sa_a", "app_sa_b"}
    finally:
        proc.terminate()
        log, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, log
    assert tally.logins > 50
    assert tally.failed_first == 0, tally.errors
    state = json.loads((out / ".rotor" / "db.json").read_text())
    assert base64.b64decode(state["data"]["password"]).decode() not in log  # no value logged
    assert "password changed secret=db role=app_sa_" in log


def test_an_admin_secret_ref_is_refused_standalone_naming_the_field(
    pg: PgServer, tmp_path: Path
) -> None:
    cfg = config(pg, tmp_path, "app_x", admin={"user": ADMIN, "secretRef": {"name": "pg"}})
    r = subprocess.run(
        [*AGENT, "--config", str(cfg), "--dir", str(tmp_path / "o"), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "spec.target.postgres.admin.secretRef" in r.stderr
    assert "passwordFile" in r.stderr
    assert "Traceback" not in r.stderr
