"""A real PostgreSQL server for tests and the bench: initdb into a temporary folder, pg_ctl on a
free 127.0.0.1 port with its socket in that folder (TESTING.md). Runs the server as the
``postgres`` user when started as root (PostgreSQL refuses to run as root).

Authentication: ``trust`` on the Unix socket (the fixture sets up roles there), SCRAM-SHA-256
on TCP, and ``log_statement=all`` so tests can check what reaches the server log. The admin the
agent uses is ``rotor_admin`` (CREATEROLE, not a superuser), password :data:`ADMIN_PASSWORD`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ADMIN = "rotor_admin"
ADMIN_PASSWORD = "admin-pass-for-tests-only"


def pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl (Debian keeps them off PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(d) / "initdb").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    folder: Path
    port: int
    bin: Path

    @property
    def socket_dir(self) -> str:
        return str(self.folder / "sock")

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL over the socket as the superuser (trust); returns psql's unaligned output."""
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.socket_dir, "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        return out.stdout.strip()

    def conninfo(self, user: str, password: str, db: str = "postgres") -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host="127.0.0.1", port=self.port, dbname=db, user=user, password=password,
            connect_timeout=5,
        )  # fmt: skip


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """Start a fresh server; stop it and remove its folder afterwards."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="rotor-pg-"))
    (folder / "sock").mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (folder, folder / "sock"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    data = folder / "data"
    server = PgServer(folder, _free_port(), bindir)
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                      "--no-sync"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    opts = (
        f"-p {server.port} -k {server.socket_dir} -c listen_addresses=127.0.0.1 "
        "-c log_statement=all -c max_connections=200 -c fsync=off"
    )
    try:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(server.log_file),
                          "-o", opts, "-w", "-t", "60", "start"]),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
        server.psql(f"CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}'")
        yield server
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                          "stop"]),
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
