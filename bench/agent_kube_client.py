"""Footprint of the agent's hand-written Kubernetes client vs the official ``kubernetes`` client.

Each case runs in a fresh interpreter (median of N runs): peak RSS (ru_maxrss) and wall time of
the imports an in-cluster agent needs. The baseline is measured in the same run: a bare
interpreter, and aiohttp alone (which the agent loads anyway for its metrics server).

    python bench/agent_kube_client.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CASES = {
    "bare interpreter": "pass",
    "aiohttp alone": "import aiohttp",
    "agent.kube (aiohttp + hand-written client)": "import agent.kube",
    "agent.incluster (whole in-cluster agent)": "import agent.incluster",
    "kubernetes (client, config, watch)": "from kubernetes import client, config, watch",
    "kubernetes + aiohttp (an agent built on it)": (
        "import aiohttp; from kubernetes import client, config, watch"
    ),
}

PROBE = """
import json, resource, time
t = time.perf_counter()
try:
    exec({code!r})
    ok = True
except ImportError:
    ok = False
ms = (time.perf_counter() - t) * 1000
print(json.dumps({{"ok": ok, "ms": ms, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def measure(code: str, runs: int) -> tuple[float, float] | None:
    rss: list[float] = []
    ms: list[float] = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(code=code)],
            capture_output=True,
            text=True,
            check=True,
        )
        doc = json.loads(out.stdout)
        if not doc["ok"]:
            return None
        rss.append(doc["rss"] / 1024)
        ms.append(doc["ms"])
    return statistics.median(rss), statistics.median(ms)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}, median of {args.runs} fresh interpreters")
    print(f"| {'what is imported':<44} | peak RSS MiB | import ms |")
    print(f"|{'-' * 46}|--------------|-----------|")
    for label, code in CASES.items():
        r = measure(code, args.runs)
        if r is None:
            print(f"| {label:<44} | {'n/a':>12} | {'n/a':>9} |")
        else:
            print(f"| {label:<44} | {r[0]:>12.1f} | {r[1]:>9.0f} |")


if __name__ == "__main__":
    main()
