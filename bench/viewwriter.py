"""The floor of the benches that time view writes: the same writes, sent by a minimal client.

    python bench/viewwriter.py URL CA_FILE TOKEN_FILE CONCURRENCY < writes.json

``writes.json`` is a JSON list of ``[path, merge patch]`` (the view patches the controller would
send, ``controller.decide.view_patch``). This process, of its own as the controller is, sends
them with the agent's client (asyncio + h11, one keep-alive connection per request in flight)
with ``CONCURRENCY`` requests in flight, as the controller keeps (``--api-concurrency``, 16).
It warms up first (connections open, code paths run once: a GET of up to 64 of the paths), so
what is left is the API server's cost of the writes and no decision of Rotor's: a lower bound
of what the controller can do with the same requests. Prints ``start end`` (CLOCK_MONOTONIC,
comparable across processes on one machine): just before the first write and after the last
answer.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def write_all(
    url: str, ca_file: str, token_file: str, concurrency: int, writes: list[Any]
) -> tuple[float, float]:
    from agent.kube import KubeClient, KubeConfig

    sem = asyncio.Semaphore(concurrency)
    config = KubeConfig(url=url, token_file=token_file, ca_file=ca_file or None)
    async with KubeClient(config) as kube:
        warm = [p for p, _ in writes[:64]]
        await asyncio.gather(*(kube.get(p) for p in warm))

        async def write(path: str, body: Any) -> None:
            async with sem:
                await kube.patch(path, body)

        start = time.monotonic()
        await asyncio.gather(*(write(p, b) for p, b in writes))
        return start, time.monotonic()


def main() -> int:
    url, ca_file, token_file, concurrency = sys.argv[1:5]
    writes = json.load(sys.stdin)
    start, end = asyncio.run(write_all(url, ca_file, token_file, int(concurrency), writes))
    print(start, end)
    return 0


def run(
    url: str, ca_file: str, token_file: str, concurrency: int, writes: list[Any]
) -> tuple[float, float]:
    """Run this script in a process of its own; (start, end) monotonic."""
    import subprocess

    out = subprocess.run(
        [sys.executable, __file__, url, ca_file, token_file, str(concurrency)],
        input=json.dumps(writes),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    start, end = out.stdout.split()
    return float(start), float(end)


if __name__ == "__main__":
    raise SystemExit(main())
