"""Footprint of the agent's in-cluster mode: its Kubernetes client's imports and whole agents.

1. Imports: each case in a fresh interpreter (median of N runs): peak RSS (VmHWM), CPU time
   and wall time of the imports (CPU time is the steadier figure on a busy machine). Baselines
   measured in the same run: a bare interpreter, and ``asyncio + ssl + prometheus_client`` (the
   floor of a Python agent with TLS and real Prometheus metrics); aiohttp and the official
   ``kubernetes`` client for comparison.
2. Real in-cluster runs: ``rotor-agent run`` against the strict Kubernetes emulator of
   tests/kubeemu.py, metrics server on: an RW writer of one secret (first value generated,
   committed with two patches, files written), an RO agent (its view read, files written), and
   with ``--bao`` a writer whose RotatingSecret has an OpenBao KV v2 external store (a real
   ``bao server -dev``; hvac loaded). Time from start to ``/readyz`` 200 and the process's peak
   RSS (VmHWM) at that point, median of N.

    python bench/agent_kube_client.py [--runs 5] [--no-bao]
"""

from __future__ import annotations

import argparse
import asyncio
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STDERR = None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL
sys.path.insert(0, str(ROOT))

CASES = {
    "bare interpreter": "pass",
    "asyncio + ssl + prometheus_client (floor)": "import asyncio, ssl, prometheus_client",
    "floor + h11 + json": "import asyncio, ssl, prometheus_client, h11, json",
    "aiohttp alone": "import aiohttp",
    "agent.kube (h11 client)": "import agent.kube",
    "agent.incluster (whole in-cluster agent)": "import agent.incluster",
    "kubernetes (client, config, watch)": "from kubernetes import client, config, watch",
    "kubernetes + aiohttp (an agent built on it)": (
        "import aiohttp; from kubernetes import client, config, watch"
    ),
}

PROBE = """
import json, time
t = time.perf_counter()
c = time.process_time()
try:
    exec({code!r})
    ok = True
except ImportError:
    ok = False
ms = (time.perf_counter() - t) * 1000
cpu = (time.process_time() - c) * 1000
rss = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
print(json.dumps({{"ok": ok, "ms": ms, "cpu": cpu, "rss": rss}}))
"""


def measure(code: str, runs: int) -> tuple[float, float, float] | None:
    rss: list[float] = []
    ms: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(code=code)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        doc = json.loads(out.stdout)
        if not doc["ok"]:
            return None
        rss.append(doc["rss"] / 1024)
        ms.append(doc["ms"])
        cpu.append(doc["cpu"])
    return statistics.median(rss), statistics.median(cpu), statistics.median(ms)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(url: str, name: str, mode: str, bao: Any = None) -> None:
    from agent.kube import (
        KubeClient,
        KubeConfig,
        rotating_secret_path,
        rotating_secrets_path,
        secrets_path,
    )
    from rotor.layout import SecretState, view_name
    from rotor.protocol import commit, prepare

    spec: dict[str, Any] = {"keys": [{"name": "password", "generator": {"type": "password"}}]}
    async with KubeClient(KubeConfig(url=url)) as kube:
        meta = {"name": name, "namespace": "shop"}
        if mode == "ro":  # what the controller publishes for a consumer: the view, a value
            now = time.time()
            state = commit(prepare(SecretState(), {"password": b"x" * 32}, now, "w"), now, 3600)
            await kube.create(
                secrets_path("app"),
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": view_name("shop", name),
                        "namespace": "app",
                        "annotations": state.annotations(),
                    },
                    "data": state.view_data(),
                },
            )
            return
        if bao is not None:
            await kube.create(
                "/apis/rotor.dev/v1alpha1/namespaces/shop/externalstores",
                {
                    "apiVersion": "rotor.dev/v1alpha1",
                    "kind": "ExternalStore",
                    "metadata": {"name": f"vault-{name}", "namespace": "shop"},
                    "spec": {
                        "vault": {
                            "server": bao.url,
                            "mount": "secret",
                            "auth": {"token": {"secretRef": {"name": "vault-token"}}},
                        }
                    },
                },
            )
            spec["externalStores"] = [
                {"storeRef": {"name": f"vault-{name}"}, "path": f"shop/{name}"}
            ]
        await kube.create(
            rotating_secrets_path("shop"),
            {
                "apiVersion": "rotor.dev/v1alpha1",
                "kind": "RotatingSecret",
                "metadata": meta,
                "spec": spec,
            },
        )
        await kube.patch(
            rotating_secret_path("shop", name) + "/status", {"status": {"writer": {"pod": "p"}}}
        )
        await kube.create(
            secrets_path("shop"), {"apiVersion": "v1", "kind": "Secret", "metadata": meta}
        )


def incluster_run(url: str, name: str, mode: str, bao: Any = None) -> tuple[float, float]:
    """Seconds to ready and peak RSS (MiB) of one ``rotor-agent run`` process."""
    asyncio.run(seed(url, name, mode, bao))
    port = free_port()
    with tempfile.TemporaryDirectory() as mount:
        env = {
            **os.environ,
            "ROTOR_MODE": mode,
            "ROTOR_SECRETS": f"shop/{name}",
            "ROTOR_POD_NAME": "p",
            "ROTOR_POD_NAMESPACE": "shop" if mode == "rw" else "app",
            "ROTOR_MOUNT_PATH": mount,
            "ROTOR_METRICS_PORT": str(port),
            "ROTOR_KUBE_URL": url,
            "ROTOR_LOG_LEVEL": "WARNING",
        }
        if bao is not None:
            env["ROTOR_VAULT_TOKEN"] = bao.token
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run"], env=env, cwd=ROOT, stderr=STDERR
        )
        ready = None
        while ready is None and time.perf_counter() - start < 30:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - start
            except OSError:
                time.sleep(0.005)
        rss = vm_hwm(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if ready is None:
            raise SystemExit(f"the {mode} agent did not become ready in 30 s")
        return ready, rss / 1024


def vm_hwm(pid: int) -> int:
    """Peak RSS (KiB) of a process's own memory (``VmHWM``; unlike ``ru_maxrss`` it does not
    inherit the parent's figure across fork and exec)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--no-bao", action="store_true", help="skip the OpenBao external-store run")
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}, median of {args.runs} fresh interpreters")
    print(f"| {'what is imported':<44} | peak RSS MiB | import CPU ms | import wall ms |")
    print(f"|{'-' * 46}|--------------|---------------|----------------|")
    for label, code in CASES.items():
        r = measure(code, args.runs)
        if r is None:
            print(f"| {label:<44} | {'n/a':>12} | {'n/a':>13} | {'n/a':>14} |")
        else:
            print(f"| {label:<44} | {r[0]:>12.1f} | {r[1]:>13.0f} | {r[2]:>14.0f} |")

    from tests.kubeemu import EmulatorThread

    crds = [
        {
            "spec": {
                "group": "rotor.dev",
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural},
                "versions": [{"name": "v1alpha1", "subresources": {"status": {}}}],
            }
        }
        for kind, plural in (
            ("RotatingSecret", "rotatingsecrets"),
            ("ExternalStore", "externalstores"),
        )
    ]
    cases: list[tuple[str, str, bool]] = [
        ("RW writer, 1 secret, metrics on", "rw", False),
        ("RO agent, 1 secret, metrics on", "ro", False),
    ]
    if not args.no_bao:
        cases.append(("RW writer + OpenBao external store (hvac)", "rw", True))
    bao = None
    if not args.no_bao:
        from tests.vault.conftest import start_bao

        bao_dir = tempfile.mkdtemp(prefix="bench-bao-")
        bao = start_bao(Path(bao_dir))
    print()
    print(f"rotor-agent run against the strict emulator, median of {args.runs}")
    print("| agent | start to /readyz 200 ms | peak RSS MiB |")
    print("|---|---:|---:|")
    try:
        with EmulatorThread(crds=crds) as emu:
            for i, (label, mode, external) in enumerate(cases):
                runs = [
                    incluster_run(emu.url, f"c{i}s{r}", mode, bao if external else None)
                    for r in range(args.runs)
                ]
                ready = statistics.median(r[0] for r in runs)
                rss = statistics.median(r[1] for r in runs)
                print(f"| {label} | {ready * 1000:.0f} | {rss:.1f} |")
    finally:
        if bao is not None:
            bao.stop()


if __name__ == "__main__":
    main()
