"""Database rotation: failed first logins of clients while the agent rotates a PostgreSQL
password, ``single`` (one role, changed in place) against ``alternating`` (two roles), in the
same run, on the same server, at the same time.

    python bench/database_rotation.py      # >= 100 rotations and >= 10,000 logins each, 1 s
    python bench/database_rotation.py --rotations 10 --min-logins 0    # a quick look
    python bench/database_rotation.py --kills 25    # alternating + terminate + a pool, kill -9s

One real PostgreSQL 15 (Debian's package; tests/postgres/pgserver.py starts it on a free
127.0.0.1 port, SCRAM-SHA-256 on TCP) and one real ``rotor-agent standalone`` process rotating
two secrets, one per strategy, each every ``--interval`` (jitter 0, overlap half the interval;
``alternating`` locks the retired role when the overlap ends). Against each secret folder,
``--clients`` threads open a new connection per query and ``--long-lived`` threads hold a
connection for ``--hold`` seconds and then reconnect; every login reads ``username`` and
``password`` of one version from the files (tests/postgres/consumers.py). A failed login counts
as a failed *first* login; the client re-reads the files and retries (counted too). The run
goes on until each strategy has had ``--rotations`` rotations and its clients ``--min-logins``
logins (or ``--max-seconds`` passed).

Target: 0 failed first logins in ``alternating`` over >= 10,000 logins; ``single`` is the
baseline (the failure the issue measured: a client that read the old password just before the
ALTER ROLE fails its login). Prints a table and, with ``--json``, the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.postgres.consumers import Clients, PoolClients, read_pair  # noqa: E402
from tests.postgres.pgserver import ADMIN, ADMIN_PASSWORD, pg_server  # noqa: E402

STRATEGIES = ("single", "alternating")


def _config(folder: Path, port: int, strategy: str, interval: float) -> Path:
    pw = folder / "admin-password"
    pw.write_text(ADMIN_PASSWORD)
    target: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "role": f"bench_{strategy}",
        "strategy": strategy,
        "admin": {"user": ADMIN, "passwordFile": str(pw)},
    }
    if strategy == "alternating":
        target["template"] = "bench_rw"
    ms = round(interval * 1000)
    doc = [
        {
            "name": strategy,
            "spec": {
                "keys": [{"name": "password", "generator": {"type": "password", "length": 32}}],
                "rotation": {"interval": f"{ms}ms", "overlap": f"{ms // 2}ms"},
                "target": {"postgres": target},
            },
        }
    ]
    path = folder / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Killer:
    """kill -9 of the agent right after it writes its state, then a restart: the state file's
    change is the commit (or the prepare); the files swap comes after it, so a kill that lands
    before the swap leaves the committed version ahead of the files (the crash window). Each
    kill is classified after the fact from the state file and the files."""

    def __init__(self, start: Any, state: Path, files: Path) -> None:
        self.start, self.state, self.files = start, state, files
        self.proc: subprocess.Popen[str] = start()
        self.kills = {"commit-before-swap": 0, "pending": 0, "other": 0}

    def _stored(self) -> tuple[int, str]:
        doc = json.loads(self.state.read_text())
        ann = doc.get("annotations") or {}
        return int(ann.get("rotor.dev/version") or 0), str(ann.get("rotor.dev/phase"))

    def kill_once(self, timeout: float) -> None:
        """Wait for the next state write, kill at once, classify, restart."""
        mtime = self.state.stat().st_mtime_ns
        deadline = time.monotonic() + timeout
        while self.state.stat().st_mtime_ns == mtime:
            if time.monotonic() > deadline:
                return
            time.sleep(0.0002)
        self.proc.kill()
        self.proc.wait()
        version, phase = self._stored()
        shown = read_pair(self.files)[2]
        kind = "pending" if phase == "pending" else "other"
        if phase == "committed" and version > shown:
            kind = "commit-before-swap"
        self.kills[kind] += 1
        self.proc = self.start()
        _wait(lambda: read_pair(self.files)[2] >= version or phase == "pending", 30, "restart")


def _friendly_clients(
    files: Path, port: int, args: argparse.Namespace, overlap: float
) -> dict[str, Any]:
    """Clients that follow docs/database.md: new connections from the files, long-lived ones
    that reconnect, and a pool that recycles connections within the overlap."""
    return {
        "new-connection": Clients(files, port, new=args.clients, long=0).start(),
        "long-lived": Clients(files, port, new=0, long=args.long_lived, hold=args.hold).start(),
        "pool": PoolClients(files, port, max_lifetime=overlap * 0.6).start(),
    }


def kills_main(args: argparse.Namespace) -> dict[str, Any]:
    """``alternating`` with ``onOverlapEnd: terminate`` (the admin holds pg_signal_backend),
    new-connection, long-lived and pooled clients, and ``--kills`` kill -9s of the agent right
    after its state writes. Target: 0 failed logins of these friendly clients across kills."""
    with pg_server() as pg, tempfile.TemporaryDirectory(prefix="rotor-dbkill-") as tmp:
        pg.psql(
            "CREATE TABLE items (id int); CREATE ROLE bench_rw NOLOGIN; "
            f"GRANT SELECT ON items TO bench_rw; GRANT pg_signal_backend TO {ADMIN}"
        )
        folder = Path(tmp)
        cfg = _config(folder, pg.port, "alternating", args.interval)
        doc = yaml.safe_load(cfg.read_text())
        doc[0]["spec"]["target"]["postgres"]["onOverlapEnd"] = "terminate"
        cfg.write_text(yaml.safe_dump(doc))
        out_dir, files = folder / "out", folder / "out" / "alternating"
        env = {**os.environ, "ROTOR_JITTER": "0", "ROTOR_LOG_LEVEL": "WARNING"}

        def start() -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-m", "agent", "standalone", "--config", str(cfg),
                 "--dir", str(out_dir), "--metrics-port", "0"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip

        killer = Killer(start, out_dir / ".rotor" / "alternating.json", files)
        try:
            _wait(lambda: (files / ".rotor.json").exists(), 60, "the first value")
            first = read_pair(files)[2]
            overlap = args.interval / 2
            kinds = _friendly_clients(files, pg.port, args, overlap)
            started = time.monotonic()
            while (
                sum(killer.kills.values()) < args.kills
                and time.monotonic() - started < args.max_seconds
            ):
                killer.kill_once(timeout=3 * args.interval)
            time.sleep(2 * args.interval)  # the last restart's overlap ends under the clients
            elapsed = time.monotonic() - started
            tallies = {k: c.close() for k, c in kinds.items()}
            rotations = read_pair(files)[2] - first
        finally:
            killer.proc.kill()
            killer.proc.wait()
    return _kill_report(killer.kills, tallies, rotations, elapsed)


def _kill_report(
    kills: dict[str, int], tallies: dict[str, Any], rotations: int, elapsed: float
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "elapsed_s": round(elapsed, 1),
        "rotations": rotations,
        "kills": kills,
    }
    for k, t in tallies.items():
        res[k] = {"logins": t.logins, "failed_logins": t.failed_first + t.failed_retry,
                  "sessions_ended": t.ended, "sample_errors": t.errors[:2]}  # fmt: skip
    res["target_met"] = all(res[k]["failed_logins"] == 0 for k in tallies)
    print(
        f"alternating + terminate under kill -9: {sum(kills.values())} kills "
        f"({kills['commit-before-swap']} between commit and swap, "
        f"{kills['pending']} while pending), {rotations} rotations, {res['elapsed_s']}s"
    )
    print(f"{'clients':<15} {'logins':>8} {'failed logins':>13} {'sessions ended':>14}")
    for k in tallies:
        r = res[k]
        print(f"{k:<15} {r['logins']:>8} {r['failed_logins']:>13} {r['sessions_ended']:>14}")
    print(f"target (0 failed logins across kills): {'met' if res['target_met'] else 'NOT met'}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rotations", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds (at least 1)")
    ap.add_argument(
        "--min-logins",
        type=int,
        default=10_000,
        help="go on rotating until each strategy's clients made this many logins",
    )
    ap.add_argument("--max-seconds", type=float, default=600.0, help="stop by then anyway")
    ap.add_argument("--clients", type=int, default=4, help="new-connection clients per secret")
    ap.add_argument("--long-lived", type=int, default=1, help="long-lived clients per secret")
    ap.add_argument("--hold", type=float, default=0.5, help="seconds a long-lived client holds")
    ap.add_argument(
        "--kills",
        type=int,
        default=0,
        help="instead: alternating + terminate + a pool, with this many kill -9s of the agent",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.kills:
        res = kills_main(args)
        if args.json:
            print(json.dumps(res, indent=1))
        return 0
    out: dict[str, Any] = {"rotations_asked": args.rotations, "interval_s": args.interval}
    with pg_server() as pg, tempfile.TemporaryDirectory(prefix="rotor-dbbench-") as tmp:
        pg.psql(
            "CREATE TABLE items (id int); CREATE ROLE bench_rw NOLOGIN; "
            "GRANT SELECT ON items TO bench_rw; CREATE ROLE bench_single LOGIN; "
            "GRANT SELECT ON items TO bench_single"
        )
        folder = Path(tmp)
        env = {**os.environ, "ROTOR_JITTER": "0", "ROTOR_LOG_LEVEL": "WARNING"}
        procs: dict[str, subprocess.Popen[str]] = {}
        clients: dict[str, Clients] = {}
        start_version: dict[str, int] = {}
        try:
            # One agent process rotates both secrets (same process, same server, same time).
            both = folder / "both.yaml"
            docs = [
                yaml.safe_load(_config(folder, pg.port, s, args.interval).read_text())[0]
                for s in STRATEGIES
            ]
            both.write_text(yaml.safe_dump(docs))
            procs["agent"] = subprocess.Popen(
                [sys.executable, "-m", "agent", "standalone", "--config", str(both),
                 "--dir", str(folder / "out2"), "--metrics-port", "0"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            for s in STRATEGIES:
                sf = folder / "out2" / s
                _wait(lambda sf=sf: (sf / ".rotor.json").exists(), 60, f"the first {s} value")
                start_version[s] = read_pair(sf)[2]
            started = time.monotonic()
            for s in STRATEGIES:
                clients[s] = Clients(
                    folder / "out2" / s,
                    pg.port,
                    new=args.clients,
                    long=args.long_lived,
                    hold=args.hold,
                ).start()

            def done() -> bool:
                if time.monotonic() - started > args.max_seconds:
                    return True
                return all(
                    read_pair(folder / "out2" / s)[2] >= start_version[s] + args.rotations
                    and clients[s].tally.logins >= args.min_logins
                    for s in STRATEGIES
                )

            _wait(done, args.max_seconds + 60, "the rotations and logins")
            elapsed = time.monotonic() - started
            tallies = {s: clients[s].close() for s in STRATEGIES}
            versions = {s: read_pair(folder / "out2" / s)[2] for s in STRATEGIES}
        finally:
            for c in clients.values():
                c.stop.set()
            for p in procs.values():
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        out["elapsed_s"] = round(elapsed, 1)
        for s in STRATEGIES:
            t = tallies[s]
            out[s] = {
                "rotations": versions[s] - start_version[s],
                "logins": t.logins,
                "failed_first_logins": t.failed_first,
                "failed_retries": t.failed_retry,
                "failed_per_1000": round(1000 * t.failed_first / max(1, t.logins), 2),
                "failed_per_rotation": round(
                    t.failed_first / max(1, versions[s] - start_version[s]), 3
                ),
                "sample_errors": t.errors[:2],
            }
    single, alt = out["single"], out["alternating"]
    out["target_met"] = alt["failed_first_logins"] == 0 and alt["logins"] >= 10_000
    print(f"database rotation: {args.rotations} rotations every {args.interval:g}s each, "
          f"{args.clients} new-connection + {args.long_lived} long-lived clients per secret, "
          f"one PostgreSQL 15, {out['elapsed_s']}s")  # fmt: skip
    print(f"{'strategy':<12} {'rotations':>9} {'logins':>8} {'failed 1st':>10} "
          f"{'per 1000':>9} {'per rot.':>9} {'retries failed':>14}")  # fmt: skip
    for s in STRATEGIES:
        r = out[s]
        print(f"{s:<12} {r['rotations']:>9} {r['logins']:>8} {r['failed_first_logins']:>10} "
              f"{r['failed_per_1000']:>9} {r['failed_per_rotation']:>9} "
              f"{r['failed_retries']:>14}")  # fmt: skip
    ratio = (
        "inf" if alt["failed_first_logins"] == 0 and single["failed_first_logins"] else
        f"{single['failed_per_1000'] / alt['failed_per_1000']:.1f}x"
        if alt["failed_per_1000"] else "n/a"
    )  # fmt: skip
    print(f"single/alternating failure rate: {ratio}; target (alternating: 0 failed over "
          f">= 10,000 logins): {'met' if out['target_met'] else 'NOT met'}")  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
