"""Database clients as apps run them, for the tests and bench/database_rotation.py.

Each client reads ``username`` and ``password`` of one version from the secret's folder (the
``..data`` protocol of agent/files.py: resolve the link, read the files from that payload, check
the link did not move) and logs in:

* a *new-connection* client opens a new connection for every query (PHP-style, or a pool that
  recycles connections);
* a *long-lived* client keeps its connection for ``hold`` seconds of queries, then reconnects
  with the files as they are then.

A login that fails is counted as a failed *first* login, then the client re-reads the files
and retries (what ``single`` asks of clients); the retry's result is counted too.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo


def read_pair(
    folder: Path, user_file: str = "username", pass_file: str = "password"
) -> tuple[str, str, int]:
    """``(username, password, version)`` of one version, never a mix of two."""
    import json

    while True:
        try:
            payload = os.readlink(folder / "..data")
            base = folder / payload
            user = (base / user_file).read_text()
            password = (base / pass_file).read_text()
            version = int(json.loads((base / ".rotor.json").read_text())["version"])
        except (FileNotFoundError, NotADirectoryError):
            time.sleep(0.001)  # the payload was replaced while we read: resolve again
            continue
        if os.readlink(folder / "..data") == payload:
            return user, password, version


@dataclass
class Tally:
    logins: int = 0
    failed_first: int = 0
    failed_retry: int = 0
    ended: int = 0
    """Sessions ended under a client (``onOverlapEnd: terminate``); it reconnects."""
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: bool, first: bool, error: str = "") -> None:
        with self.lock:
            self.logins += 1
            if not ok:
                if first:
                    self.failed_first += 1
                else:
                    self.failed_retry += 1
                if len(self.errors) < 5:
                    self.errors.append(error)


class Clients:
    """``new`` new-connection clients and ``long`` long-lived ones against one secret folder."""

    def __init__(
        self,
        folder: Path,
        port: int,
        *,
        new: int = 3,
        long: int = 1,
        hold: float = 0.5,
        host: str = "127.0.0.1",
        dbname: str = "postgres",
    ) -> None:
        self.folder = folder
        self.host, self.port, self.dbname = host, port, dbname
        self.tally = Tally()
        self.stop = threading.Event()
        self.hold = hold
        self.threads = [
            threading.Thread(target=self._new_connections, daemon=True) for _ in range(new)
        ] + [threading.Thread(target=self._long_lived, daemon=True) for _ in range(long)]

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """Log in with the pair in the files; on failure count it, re-read and retry once."""
        for first in (True, False):
            user, password, _ = read_pair(self.folder)
            info = make_conninfo(
                host=self.host, port=self.port, dbname=self.dbname, user=user,
                password=password, connect_timeout=10,
            )  # fmt: skip
            try:
                conn = psycopg.connect(info, autocommit=True)
            except psycopg.OperationalError as e:
                self.tally.add(False, first, str(e).strip().splitlines()[-1])
                continue
            self.tally.add(True, first)
            return conn
        raise RuntimeError("the retry failed too")

    def _new_connections(self) -> None:
        while not self.stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute("SELECT 1").fetchone()
            except RuntimeError:
                time.sleep(0.01)
            except psycopg.OperationalError:  # ended at the overlap end right after the login
                with self.tally.lock:
                    self.tally.ended += 1

    def _long_lived(self) -> None:
        while not self.stop.is_set():
            try:
                conn = self._connect()
            except RuntimeError:
                time.sleep(0.01)
                continue
            with conn:
                until = time.monotonic() + self.hold
                try:
                    while time.monotonic() < until and not self.stop.is_set():
                        conn.execute("SELECT 1").fetchone()
                        time.sleep(0.01)
                except psycopg.OperationalError:  # ended at the overlap end: reconnect
                    with self.tally.lock:
                        self.tally.ended += 1

    def start(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def close(self) -> Tally:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.tally


class PoolClients:
    """A connection pool as apps use one: ``size`` connections shared by ``workers`` threads; a
    connection older than ``max_lifetime`` (below the overlap) is closed and a new one opened
    with the files as they are then; one that fails a query (e.g. its session was ended at the
    end of the overlap) is discarded and replaced. Logins are counted like the other clients';
    ended sessions apart (``Tally.ended``)."""

    def __init__(
        self, folder: Path, port: int, *, size: int = 2, workers: int = 2, max_lifetime: float = 0.3
    ) -> None:
        self.clients = Clients(folder, port, new=0, long=0)
        self.tally = self.clients.tally
        self.stop = self.clients.stop
        self.max_lifetime = max_lifetime
        self._idle: list[tuple[float, psycopg.Connection[tuple[object, ...]]]] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(size)
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def _checkout(self) -> tuple[float, psycopg.Connection[tuple[object, ...]]]:
        with self._lock:
            while self._idle:
                born, conn = self._idle.pop()
                if time.monotonic() - born < self.max_lifetime and not conn.closed:
                    return born, conn
                conn.close()
        return time.monotonic(), self.clients._connect()

    def _work(self) -> None:
        while not self.stop.is_set():
            with self._slots:
                try:
                    born, conn = self._checkout()
                except RuntimeError:
                    time.sleep(0.01)
                    continue
                try:
                    conn.execute("SELECT 1").fetchone()
                except psycopg.OperationalError:
                    with self.tally.lock:
                        self.tally.ended += 1
                    conn.close()
                    continue
                with self._lock:
                    self._idle.append((born, conn))
            time.sleep(0.002)

    def start(self) -> PoolClients:
        for t in self.threads:
            t.start()
        return self

    def close(self) -> Tally:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        with self._lock:
            for _, conn in self._idle:
                conn.close()
        return self.tally
