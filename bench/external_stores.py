"""External stores: the cost of rotation step 3 on a real OpenBao, and the audit receiver's rate.

1. ``VaultStore.write_pending`` (a CAS data write plus the metadata merge PATCH, in a worker
   thread) and ``read_version``, median of --writes; baseline in the same run: one plain hvac
   ``create_or_update_secret`` on the same server.
2. The audit receiver: --entries audit entries shaped like OpenBao's (2 KB each, half to a
   referenced path) sent over one TCP connection to its socket input, until all are counted;
   baseline in the same run: ``json.loads`` of the same lines alone.

    python bench/external_stores.py [--writes 200] [--entries 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import hvac
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.vault import TokenLogin, VaultStore
from audit.app import make_events_app
from audit.receiver import Receiver
from rotor.auditwire import AuditConfig
from rotor.external import RotorMetadata
from rotor.settings.audit import AuditSettings
from tests.conftest import free_port
from tests.vault.conftest import start_bao


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.2f} ms"


async def bench_writes(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bao = start_bao(Path(tmp))
        try:
            root = hvac.Client(url=bao.url, token=bao.token)
            store = VaultStore(bao.url, "secret", TokenLogin(bao.token))
            meta = RotorMetadata(1, "", "shop/api-0", time.time(), "shop/db")
            plain, step3, reads = [], [], []
            expected = None
            for i in range(n):
                values = {"password": f"value-{i:08d}-{'x' * 24}".encode()}
                t = time.perf_counter()
                root.secrets.kv.v2.create_or_update_secret("bench/plain", secret={"p": str(i)})
                plain.append(time.perf_counter() - t)
                t = time.perf_counter()
                expected = await store.write_pending("bench/rotor", values, expected, meta)
                step3.append(time.perf_counter() - t)
                t = time.perf_counter()
                await store.read_version("bench/rotor")
                reads.append(time.perf_counter() - t)
        finally:
            bao.stop()
    print(f"OpenBao dev server, {n} writes each (median):")
    print(f"  baseline: plain hvac KV v2 write        {ms(plain)}")
    print(f"  write_pending (CAS write + metadata)    {ms(step3)}")
    print(f"  read_version (recovery / hold read)     {ms(reads)}")


async def bench_receiver(n: int) -> None:
    def line(i: int) -> bytes:
        path = "secret/data/shop/db" if i % 2 else f"secret/data/other/{i % 100}"
        entry = {
            "time": "2026-11-24T08:42:36Z",
            "type": "response",
            "auth": {"display_name": "token-alice", "client_token": "hmac-sha256:" + "a" * 64},
            "request": {
                "operation": "update",
                "path": path,
                "mount_point": "secret/",
                "mount_type": "kv",
                "data": {"data": {f"k{j}": "hmac-sha256:" + "b" * 64 for j in range(20)}},
            },
            "response": {"data": {"version": i}},
        }
        return json.dumps(entry).encode() + b"\n"

    lines = [line(i) for i in range(n)]
    t = time.perf_counter()
    for raw in lines:
        json.loads(raw)
    baseline = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(AuditConfig(paths=frozenset({"secret/shop/db"})).to_dict()))
        port = free_port()
        settings = AuditSettings(
            host="127.0.0.1", socket_port=port, events_port=0, config_file=str(cfg)
        )
        receiver = Receiver.create(settings, CollectorRegistry())
        app = make_events_app(receiver, serve_socket=True)
        from aiohttp.test_utils import TestServer

        async with TestServer(app):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            t = time.perf_counter()
            for chunk in range(0, n, 500):
                writer.write(b"".join(lines[chunk : chunk + 500]))
                await writer.drain()
            counter = receiver.metrics.entries
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = sum(counter.labels(r)._value.get() for r in ("event", "unreferenced"))
                if done >= n:
                    break
                await asyncio.sleep(0.01)
            took = time.perf_counter() - t
            writer.close()
    size = sum(len(x) for x in lines) / n
    print(f"audit receiver, {n} entries of {size:.0f} B over one TCP connection:")
    print(f"  baseline: json.loads alone              {n / baseline:,.0f} entries/s")
    print(f"  socket input -> filter -> queue          {n / took:,.0f} entries/s")
    print(f"  queued paths: {len(receiver.queue)} (coalesced from {n // 2} events)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--entries", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(bench_writes(args.writes))
    asyncio.run(bench_receiver(args.entries))


if __name__ == "__main__":
    main()
