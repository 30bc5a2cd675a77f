"""``rotor-agent standalone``'s memory under hostile connections to its HTTP server (issue 24,
item 3): N connections each holding an unfinished request head of K KiB.

    python bench/agent_hostile_connections.py [--connections 300] [--head-kib 63]

Prints the agent's RSS (``VmRSS``) ready, with the connections held, and after they closed, its
peak (``VmHWM``), how many of the connections the agent kept open, and whether ``/healthz``
answered meanwhile. Before the bounds, 300 x 63 KiB took the agent from 28 to 66 MiB (its
limit is 64Mi) and it stayed at 63 MiB after they closed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rotorctl.processes import free_port, proc_status  # noqa: E402

AGENT = [sys.executable, "-m", "agent", "standalone"]
SECRET = {"name": "s0", "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]}}


def healthz(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return str(r.status)
    except OSError as e:
        return type(e).__name__


def still_open(socks: list[socket.socket]) -> int:
    """How many the server has not closed (a closed one reads EOF or an answer at once)."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            s.recv(1)  # EOF or an answer (400, 503): the server is done with it
        except BlockingIOError:
            n += 1  # nothing yet: still held open
        except OSError:
            pass
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--head-kib", type=int, default=63)
    parser.add_argument("--hold", type=float, default=3.0, help="seconds to hold them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rotor-bench-") as tmp:
        folder = Path(tmp)
        port = free_port()
        metrics = ["--metrics-port", str(port)]
        cfg = folder / "config.json"
        cfg.write_text(json.dumps([SECRET]))
        proc = subprocess.Popen(
            [*AGENT, "--config", str(cfg), "--dir", str(folder), *metrics],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while healthz(port) != "200":
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the agent did not start")
                time.sleep(0.05)
            ready = proc_status(proc.pid, "VmRSS")
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (args.head_kib * 1024)
            socks = []
            for _ in range(args.connections):
                s = socket.create_connection(("127.0.0.1", port))
                with contextlib.suppress(OSError):  # the agent may have closed it already
                    s.sendall(head)
                socks.append(s)
            time.sleep(args.hold)
            held = proc_status(proc.pid, "VmRSS")
            probe = healthz(port)
            kept = still_open(socks)
            for s in socks:
                s.close()
            time.sleep(2)
            after = proc_status(proc.pid, "VmRSS")
            peak = proc_status(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{args.connections} connections x {args.head_kib} KiB unfinished request heads")
    print("| ready MiB | held MiB | after close MiB | peak MiB | kept open | /healthz meanwhile |")
    print("|---|---|---|---|---|---|")
    print(f"| {ready:.1f} | {held:.1f} | {after:.1f} | {peak:.1f} | {kept} | {probe} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
