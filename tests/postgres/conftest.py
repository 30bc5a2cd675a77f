"""A real PostgreSQL 15 (Debian's package) for the tests of this folder, one per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres.pgserver import PgServer, pg_bin, pg_server


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed here (make system-deps installs postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install .[postgres])")
    with pg_server() as server:
        yield server
