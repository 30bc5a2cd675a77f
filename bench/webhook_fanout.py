"""rotor-webhook's memory for pods of many containers x secrets (issue 24, item 1): one review
of a pod with N containers asking for 64 secrets by volume delivery (64 mounts per container).

    python bench/webhook_fanout.py [--containers 2000 6000 20000] [--delivery volume|env|agent]

Each review goes to a fresh webhook process (``webhook.cli.serve``, TLS, as in
bench/webhook_hostile.py), so its peak RSS (``VmHWM``, /proc/PID/status) is that review's.
Before the bound, 2,000 containers took the webhook to 134 MiB (the chart's limit is 128Mi),
6,000 to 338 MiB, and 20,000 answered 135 MiB. Target: under 128 MiB, with a clear denial.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.webhook_hostile import SERVER, healthy  # noqa: E402
from rotorctl.processes import free_port, proc_status  # noqa: E402
from rotorctl.tls import make_certs  # noqa: E402

LIMIT_MIB = 128.0  # the chart's memory limit for the webhook


def review(containers: int, delivery: str) -> bytes:
    names = ",".join(f"s{i:02d}" for i in range(64))
    annotations = {"rotor.dev/ro": names}
    if delivery != "agent":
        annotations["rotor.dev/delivery"] = delivery
    spec = {"containers": [{"name": f"c{i}", "image": "x"} for i in range(containers)]}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "api-", "namespace": "shop", "annotations": annotations},
        "spec": spec,
    }
    request = {
        "uid": "0b5e3c2a-1111-4b1e-9d5f-2f6c1a7e9a01",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop",
        "operation": "CREATE",
        "object": pod,
    }
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return json.dumps(body, separators=(",", ":")).encode()


async def one(containers: int, delivery: str, tmp: Path) -> str:
    import aiohttp

    ca, cert, key = make_certs(tmp)
    port, mport = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(mport), str(cert), str(key)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    ctx = ssl.create_default_context(cafile=str(ca))
    body = review(containers, delivery)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
            if not await healthy(s, port, ctx, server):
                return f"| {containers} | the webhook did not start |"
            before = proc_status(server.pid, "VmHWM")
            start = time.perf_counter()
            url = f"https://127.0.0.1:{port}/mutate"
            headers = {"Content-Type": "application/json"}
            async with s.post(url, data=body, headers=headers, ssl=ctx) as r:
                raw = await r.read()
            ms = (time.perf_counter() - start) * 1000
            peak = proc_status(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(30)
    resp = json.loads(raw)["response"]
    said = "allowed" if resp["allowed"] else f"denied: {resp['status']['message'][:90]}..."
    return (
        f"| {containers} | {len(body) // 1024} | {len(raw) // 1024} | {ms:.0f} | {before:.1f} | "
        f"{peak:.1f} | {'yes' if peak < LIMIT_MIB else 'NO'} | {said} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, nargs="+", default=[2000, 6000, 20000])
    parser.add_argument("--delivery", choices=("volume", "env", "agent"), default="volume")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    print(f"64 secrets, delivery {args.delivery}; one fresh webhook process per review")
    print(
        "| containers | review KiB | answer KiB | ms | RSS before MiB | peak RSS MiB | "
        f"< {LIMIT_MIB:.0f} MiB | answer |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.containers:
        with tempfile.TemporaryDirectory(prefix="rotor-bench-") as tmp:
            print(asyncio.run(one(n, args.delivery, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
