"""Footprint of ``rotor-agent standalone``: peak RSS, time to the first file, idle CPU.

Each figure is printed next to a bare ``python3 -c pass`` (or ``time.sleep``) and
``import asyncio, ssl, prometheus_client`` (the floor of a Python agent with TLS and real
Prometheus metrics) measured in the same run on the same machine, so the agent's own cost can be
read off whatever the machine's load. Targets (issue 15): peak RSS <= 28 MiB with 1 password and
metrics on, and with an ed25519 and an rsa key; <= 30 MiB with 20 secrets; first file <= 300 ms
after start; idle CPU <= 0.1 % of a core (no polling). Key pairs are made by a short-lived child
(agent/keygen.py), whose own peak is printed too (it is not part of the agent's resident set).

    python3 bench/agent_footprint.py [--idle-seconds 60] [--runs 5] [--python shipped|dev|PATH]

The agent runs from a venv installed as its image installs it (bench/shipped.py: not editable;
the development venv's editable install carries an import hook the image does not);
``--python dev`` measures the development venv instead.

Peak RSS is ``VmHWM`` of the process (``/proc/<pid>/status``: the high-water mark since exec),
read once the agent was ready, just before SIGTERM. Time to first file is from just before
``Popen`` to the moment the first secret's file exists (polled every 0.5 ms). Idle CPU is
user+system time of the agent over the idle window (``/proc/<pid>/stat``), 1 secret rotating
every 24h.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shipped import agent_interpreter  # noqa: E402

PY = sys.executable
"""The agent's interpreter (``--python``; by default a venv installed as the image installs it)."""
MIB = 1024.0
PORTS: dict[int, int] = {}
"""Metrics port of each agent started (pid -> port)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(folder: Path, n: int, key_pair: bool = False) -> Path:
    keys: list[dict[str, object]] = [{"name": "password", "generator": {"type": "password"}}]
    if key_pair:
        keys.append({"name": "signing-key", "generator": {"type": "ed25519"}})
        keys.append({"name": "tls-key", "generator": {"type": "rsa", "bits": 2048}})
    secrets = [
        {"name": f"s{i}", "spec": {"keys": keys, "rotation": {"interval": "24h"}}} for i in range(n)
    ]
    path = folder / f"config-{n}-{key_pair}.json"
    path.write_text(json.dumps(secrets))
    return path


def hwm(status: str) -> float:
    """``VmHWM`` (peak RSS since exec) from a ``/proc/<pid>/status`` text, in MiB."""
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / MIB


def baseline() -> tuple[float, float, float]:
    """``python3 -c pass``: (peak RSS MiB, ms from start to exit, CPU ms)."""
    t0 = time.perf_counter()
    pid = subprocess.Popen([PY, "-c", "pass"]).pid
    _, _, usage = os.wait4(pid, 0)
    ms = (time.perf_counter() - t0) * 1000
    # ru_maxrss would include the forking bench's own RSS (kept across exec): read VmHWM of a
    # bare interpreter that prints its status as its only work instead.
    status = subprocess.run(
        [PY, "-c", "print(open('/proc/self/status').read())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return hwm(status), ms, (usage.ru_utime + usage.ru_stime) * 1000


def floor() -> float:
    """Peak RSS (MiB) of ``import asyncio, ssl, prometheus_client`` in a fresh interpreter."""
    code = "import asyncio, ssl, prometheus_client; print(open('/proc/self/status').read())"
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    return hwm(out)


def run_agent(
    folder: Path, cfg: Path, metrics: bool, first_file: str
) -> tuple[subprocess.Popen[bytes], float, float]:
    """Start the agent; return it, the ms until ``first_file`` existed and its CPU ms then."""
    port = str(free_port()) if metrics else "0"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "agent",
            "standalone",
            "--config",
            str(cfg),
            "--dir",
            str(folder),
            "--metrics-port",
            port,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cfg.parent,  # not the checkout: ``-m agent`` would find its sources first
    )
    if metrics:
        PORTS[proc.pid] = int(port)
    target = folder / first_file
    deadline = t0 + 30
    while not target.exists():
        if time.perf_counter() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"agent did not write {target}")
        time.sleep(0.0005)
    ms = (time.perf_counter() - t0) * 1000
    return proc, ms, cpu_seconds(proc.pid) * 1000


def wait_ready(proc: subprocess.Popen[bytes], folder: Path, n: int) -> None:
    """Every secret's files are there and, with the metrics server on, ``/readyz`` answers 200
    and one Prometheus scrape of ``/metrics`` was served (so the peak includes a scrape)."""
    deadline = time.monotonic() + 60
    while not all((folder / f"s{i}" / "password").exists() for i in range(n)):
        if time.monotonic() > deadline:
            raise SystemExit("agent not ready in 60 s")
        time.sleep(0.01)
    port = PORTS.get(proc.pid)
    while port:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as m:
                        m.read()
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the metrics server did not answer in 60 s")
        time.sleep(0.01)


def stop(proc: subprocess.Popen[bytes]) -> float:
    """Stop the agent; its peak RSS (VmHWM) in MiB while it ran."""
    peak = hwm(Path(f"/proc/{proc.pid}/status").read_text())
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    return peak


def keygen_child(runs: int, python: str = PY) -> tuple[float, float]:
    """The key generator child alone (ed25519 + rsa:2048, as the agent starts it): median
    (peak RSS MiB, wall ms). It lives for one rotation, beside the agent, then exits."""
    code = (
        "import sys; sys.path.append(sys.argv.pop(1)); from agent.keygen import main; "
        "main(); sys.stderr.write(open('/proc/self/status').read())"
    )
    src = str(Path(__file__).resolve().parent.parent)
    rss, ms = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [python, "-P", "-c", code, src, "ed25519", "rsa:2048"],
            capture_output=True,
            check=True,
        )
        ms.append((time.perf_counter() - t0) * 1000)
        rss.append(hwm(out.stderr.decode()))
    return statistics.median(rss), statistics.median(ms)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    tmp: Path, n: int, metrics: bool, key_pair: bool, runs: int
) -> tuple[float, float, float]:
    """Median (peak RSS MiB, ms to first file, CPU ms to first file) over ``runs`` starts."""
    rss, start, cpu = [], [], []
    cfg = config(tmp, n, key_pair)
    for r in range(runs):
        folder = tmp / f"out-{n}-{metrics}-{key_pair}-{r}"
        proc, ms, cpu_ms = run_agent(folder, cfg, metrics, "s0/password")
        wait_ready(proc, folder, n)
        rss.append(stop(proc))
        start.append(ms)
        cpu.append(cpu_ms)
    return statistics.median(rss), statistics.median(start), statistics.median(cpu)


def idle_cpu(tmp: Path, seconds: float) -> tuple[float, float]:
    """(agent %, baseline %) of one core over ``seconds`` of idling."""
    folder = tmp / "idle"
    proc, _, _ = run_agent(folder, config(tmp, 1), True, "s0/password")
    wait_ready(proc, folder, 1)
    base = subprocess.Popen([PY, "-c", f"import time; time.sleep({seconds + 5})"])
    time.sleep(0.5)
    a0, b0, t0 = cpu_seconds(proc.pid), cpu_seconds(base.pid), time.monotonic()
    time.sleep(seconds)
    a1, b1, t1 = cpu_seconds(proc.pid), cpu_seconds(base.pid), time.monotonic()
    stop(proc)
    base.kill()
    base.wait()
    wall = t1 - t0
    return (a1 - a0) / wall * 100, (b1 - b0) / wall * 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--python",
        default="shipped",
        help="the agent's interpreter: shipped (default: installed as the image does), dev (this "
        "one, the editable install) or a path",
    )
    args = p.parse_args()
    global PY
    PY = agent_interpreter(args.python)

    bases = [baseline() for _ in range(args.runs)]
    base_rss, base_ms, base_cpu_ms = (statistics.median(b[i] for b in bases) for i in range(3))
    floor_rss = statistics.median(floor() for _ in range(args.runs))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n, metrics, key_pair in [
            (1, True, False),
            (20, True, False),
            (1, False, False),
            (20, False, False),
            (1, True, True),
        ]:
            rss, ms, cpu_ms = measure(tmp, n, metrics, key_pair, args.runs)
            rows.append((n, metrics, key_pair, rss, ms, cpu_ms))
        cpu, base_cpu = idle_cpu(tmp, args.idle_seconds)
    child_rss, child_ms = keygen_child(args.runs)

    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {load:.1f}, "
          f"median of {args.runs} runs; the agent's interpreter: {PY} ({args.python})")  # fmt: skip
    print()
    print("| process | peak RSS MiB | first file ms (wall) | CPU ms by then |")
    print("|---|---:|---:|---:|")
    print(
        f"| bare `python3 -c pass` (baseline) | {base_rss:.1f} | {base_ms:.0f} (to exit) "
        f"| {base_cpu_ms:.0f} (to exit) |"
    )
    print(f"| `import asyncio, ssl, prometheus_client` (floor) | {floor_rss:.1f} | | |")
    for n, metrics, key_pair, rss, ms, cpu_ms in rows:
        what = (
            f"{n} secret{'s' if n > 1 else ''} (password{' + ed25519 + rsa' if key_pair else ''})"
        )
        what += ", metrics server on" if metrics else ", `--metrics-port 0`"
        print(f"| {what} | {rss:.1f} | {ms:.0f} | {cpu_ms:.0f} |")
    print()
    print(
        f"idle CPU over {args.idle_seconds:.0f} s (1 secret, metrics on): agent {cpu:.3f} % of a "
        f"core; baseline `time.sleep` {base_cpu:.3f} %"
    )
    print(
        f"key generator child (ed25519 + rsa:2048, lives for one rotation): peak RSS "
        f"{child_rss:.1f} MiB, {child_ms:.0f} ms start to exit"
    )
    one, twenty, keys = rows[0], rows[1], rows[4]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print()
    print(f"targets: RSS <= 28 MiB, 1 password, metrics on: {verdict(one[3] <= 28)} "
          f"({one[3]:.1f}; {one[3] - floor_rss:+.1f} over the floor); "
          f"RSS <= 28 MiB with ed25519 + rsa: {verdict(keys[3] <= 28)} ({keys[3]:.1f}); "
          f"RSS <= 30 MiB with 20 secrets: {verdict(twenty[3] <= 30)} ({twenty[3]:.1f}); "
          f"first file <= 300 ms: {verdict(one[4] <= 300)} ({one[4]:.0f}); "
          f"idle CPU <= 0.1 %: {verdict(cpu <= 0.1)} ({cpu:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
