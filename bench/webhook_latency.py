"""Admission latency and throughput of rotor-webhook, side by side with a kopf peer, in one run.

    python bench/webhook_latency.py [--seconds 5] [--rounds 3] [--kopf-site DIR]

The versions every server process imports (kopf, jsonpatch, jsonpointer, aiohttp) are printed
with the figures; the pinned ones are in ``bench/webhook-peer.txt`` (``PEER_PINS``). Points at 1,
8 and 64 concurrent requests.

Each server runs in a subprocess pinned to one CPU (os.sched_setaffinity); the load client runs
in another process pinned to a different CPU, keeps one HTTPS keep-alive connection per
concurrent request, and sends the same AdmissionReview (a Grafana-shaped pod that asks for a
secret) back to back. Reported: p50 and p99 latency at 8 concurrent requests, throughput at 8
and 64. The peer is what a Python team would pick: kopf's ``@kopf.on.mutate`` handler on kopf's
``WebhookServer`` (same certificate), doing the same patch work (Rotor's ``build_patch``) and
letting kopf turn it into the JSON patch, as kopf handlers do. A third column is the floor: a
bare aiohttp server over the same TLS that reads the body and returns the same answer bytes,
precomputed: what any aiohttp webhook costs on this machine before doing any work. Where Rotor's
throughput equals the floor's, the load client (one Python process on one core), not the server,
is the limit; the server's CPU time per request (from /proc) is the figure that does not depend
on the client.

Targets (one server core): p50 <= 2 ms and p99 <= 10 ms at 8 concurrent; >= 2x kopf's
throughput at 8 and 64.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "webhook" / "fixtures" / "grafana.yaml"
TARGET_P50_MS, TARGET_P99_MS, TARGET_RATIO = 2.0, 10.0, 2.0


def review_body() -> bytes:
    import yaml

    pod = yaml.safe_load(FIXTURE.read_text())
    pod["metadata"]["annotations"]["rotor.dev/rw"] = "grafana-admin"
    pod["metadata"]["annotations"]["rotor.dev/ro"] = "shared/smtp"
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "6f1c1e2a-0c39-4d4e-9d7b-1b2f3a4c5d6e",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "monitoring",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    return json.dumps(review).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- servers (each in its own process) ------------------------------------------------------


def serve_rotor(port: int, cert: str, key: str) -> None:
    from prometheus_client import CollectorRegistry

    from rotor.settings.webhook import WebhookSettings
    from webhook.cli import serve

    settings = WebhookSettings(
        host="127.0.0.1", port=port, metrics_port=free_port(), cert_file=cert, key_file=key
    )

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(
            serve(settings, asyncio.Event(), registry=CollectorRegistry(), started=started)
        )
        await started.wait()
        print(_ready_line(), flush=True)
        await task

    asyncio.run(main())


PEER_PINS = {"kopf": "1.45.2", "jsonpatch": "1.48", "jsonpointer": "3.12", "aiohttp": "3.14.5"}
"""The versions the published figures were measured with (``bench/webhook-peer.txt``); the kopf
peer's cost depends on them: kopf diffs the whole pod with jsonpatch per request, and the ratio
moved from about 3x with jsonpatch 1.33 to about 11x with 1.48 in an earlier run."""


def _ready_line() -> str:
    """``ready`` and the versions this server process imports (printed by the bench)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = ["ready"]
    for name in PEER_PINS:
        try:
            parts.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name}=-")
    return " ".join(parts)


def serve_kopf(port: int, cert: str, key: str) -> None:
    import functools

    import jsonpatch
    import kopf
    from kopf._cogs.structs import references
    from kopf._core.engines.admission import serve_admission_request
    from kopf._core.intents.registries import OperatorRegistry
    from kopf._core.reactor.inventory import ResourceMemories

    from rotor.settings.webhook import WebhookSettings
    from webhook.inject import build_patch

    settings = WebhookSettings()
    registry = OperatorRegistry()

    @kopf.on.mutate("", "v1", "pods", id="rotor", operation="CREATE", registry=registry)
    def inject(body: Any, patch: Any, namespace: Any, **_: Any) -> None:
        ops = build_patch(dict(body), settings, namespace)
        if ops:
            patch.fns.append(lambda raw: jsonpatch.apply_patch(raw, ops, in_place=True))

    pods = references.Resource(
        group="",
        version="v1",
        plural="pods",
        kind="Pod",
        namespaced=True,
        preferred=True,
        verbs=["create"],
    )

    async def main() -> None:
        insights = references.Insights()
        insights.webhook_resources.add(pods)
        fn = functools.partial(
            serve_admission_request,
            settings=kopf.OperatorSettings(),
            registry=registry,
            insights=insights,
            memories=ResourceMemories(),
            memobase=kopf.Memo(),
            indices={},
        )
        server = kopf.WebhookServer(addr="127.0.0.1", port=port, certfile=cert, pkeyfile=key)
        async with server:
            async for _ in server(fn):
                print(_ready_line(), flush=True)

    asyncio.run(main())


def serve_floor(port: int, cert: str, key: str) -> None:
    """A bare aiohttp TLS server that reads the body and returns Rotor's answer, precomputed once:
    the floor, i.e. what moving the same bytes costs with no work per request."""
    from aiohttp import web

    from rotor.settings.webhook import WebhookSettings
    from webhook.admission import mutate

    answer = json.dumps(mutate(json.loads(review_body()), WebhookSettings())).encode()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/mutate", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        print(_ready_line(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


SERVERS = {"rotor": serve_rotor, "kopf": serve_kopf, "floor": serve_floor}


# --- the load client ------------------------------------------------------------------------


async def _worker(
    port: int,
    ctx: ssl.SSLContext,
    request: bytes,
    until: float,
    warm_until: float,
    out: list[float],
    total: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        while (now := time.perf_counter()) < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            done = time.perf_counter()
            if b'"patch"' not in body:
                raise RuntimeError("the answer carries no patch: " + body[:200].decode())
            total.append(1)
            if now >= warm_until:
                out.append(done - now)
    finally:
        writer.close()


def run_client(port: int, path: str, cafile: str, concurrency: int, seconds: float) -> None:
    body = review_body()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body
    ctx = ssl.create_default_context(cafile=cafile)

    total: list[int] = []

    async def main() -> list[float]:
        out: list[float] = []
        start = time.perf_counter()
        warm = start + min(1.0, seconds / 4)
        until = warm + seconds
        await asyncio.gather(
            *(_worker(port, ctx, request, until, warm, out, total) for _ in range(concurrency))
        )
        return out

    latencies = asyncio.run(main())
    if len(latencies) < 2:
        raise SystemExit(
            f"{len(latencies)} answer(s) at {concurrency} concurrent in {seconds:g} s: too few "
            "for percentiles (a loaded machine: raise --seconds)"
        )
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "total": len(total),
                "rps": len(latencies) / seconds,
                "p50_ms": q[49] * 1000,
                "p99_ms": q[98] * 1000,
            }
        )
    )


# --- orchestration --------------------------------------------------------------------------


def _pinned(cpu: int, site: str = "") -> dict[str, str]:
    path = os.pathsep.join(p for p in (site, str(ROOT)) if p)
    return {**os.environ, "PYTHONPATH": path, "BENCH_CPU": str(cpu)}


def _pin_from_env() -> None:
    cpu = os.environ.get("BENCH_CPU")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CONCURRENCY = (1, 8, 64)


def measure(
    server: str, cert: str, key: str, cafile: str, seconds: float, site: str = ""
) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", server, str(port), cert, key],
        stdout=subprocess.PIPE,
        text=True,
        env=_pinned(server_cpu, site),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"{server} did not start")
        path = "/rotor" if server == "kopf" else "/mutate"
        results: dict[str, Any] = {"server": server, "server_cpu": server_cpu}
        results["versions"] = " ".join(line[1:])
        for concurrency in CONCURRENCY:
            cpu_before = _cpu_seconds(proc.pid)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    str(port),
                    path,
                    cafile,
                    str(concurrency),
                    str(seconds),
                ],
                capture_output=True,
                text=True,
                env=_pinned(client_cpu),
                check=False,
            )
            if out.returncode != 0:
                raise SystemExit(
                    f"the load client against {server} at {concurrency} concurrent failed: "
                    f"{(out.stderr.strip().splitlines() or ['no output'])[-1]}"
                )
            point = json.loads(out.stdout)
            point["cpu_us"] = (_cpu_seconds(proc.pid) - cpu_before) / point["total"] * 1e6
            results[concurrency] = point
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        for key in ("VmRSS", "VmHWM"):
            line = next((x for x in status if x.startswith(key + ":")), "")
            results[key] = int(line.split()[1]) / 1024 if line else 0.0
        return results
    finally:
        proc.terminate()
        proc.wait(10)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"server_cpu": runs[0]["server_cpu"], "versions": runs[0]["versions"]}
    out["VmHWM"] = max(r["VmHWM"] for r in runs)
    for conc in CONCURRENCY:
        out[conc] = {
            f: statistics.median(r[conc][f] for r in runs)
            for f in ("rps", "p50_ms", "p99_ms", "cpu_us")
        }
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("--serve", "--client"):
        _pin_from_env()
        if sys.argv[1] == "--serve":
            role, port, cert, key = sys.argv[2:6]
            SERVERS[role](int(port), cert, key)
        else:
            port, path, cafile, conc, secs = sys.argv[2:7]
            run_client(int(port), path, cafile, int(conc), float(secs))
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per point")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--kopf-site",
        action="append",
        default=[],
        help="a folder put first on the kopf peer's path, e.g. `pip install --target DIR "
        "jsonpatch==1.33`, for one more kopf column (repeatable)",
    )
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        print("note: one CPU only; server and client share it", file=sys.stderr)

    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    columns = [("rotor", "rotor", ""), ("kopf", "kopf", "")]
    columns += [(f"kopf+{i + 1}", "kopf", site) for i, site in enumerate(args.kopf_site)]
    columns.append(("floor", "floor", ""))
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, cafile = (os.path.join(tmp, n) for n in ("tls.crt", "tls.key", "ca.crt"))
        leaf.cert_chain_pems[0].write_to_path(cert)
        leaf.private_key_pem.write_to_path(key)
        ca.cert_pem.write_to_path(cafile)
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in columns}
        for _ in range(args.rounds):  # interleaved, so background load hits all alike
            for label, server, site in columns:
                runs[label].append(measure(server, cert, key, cafile, args.seconds, site))
    med = {label: _median(runs[label]) for label, _, _ in columns}
    rotor = med["rotor"]
    load = os.getloadavg()[0]
    print(
        f"{args.rounds} rounds of {args.seconds:g} s per point, medians; server pinned to CPU "
        f"{rotor['server_cpu']}, client to another; load average {load:.2f} "
        f"on {os.cpu_count()} CPUs; python {sys.version.split()[0]}"
    )
    for label, _, site in columns:
        print(
            f"  {label}: {med[label]['versions']}{f' (first on its path: {site})' if site else ''}"
        )
    pinned = " ".join(f"{k}={v}" for k, v in PEER_PINS.items())
    if med["kopf"]["versions"] != pinned:
        print(f"  note: the kopf peer's versions differ from the pinned ones ({pinned})")
    print()
    rows = [
        (f"{stat} at {conc} concurrent ({unit})", field, conc)
        for conc in CONCURRENCY
        for stat, field, unit in (
            ("p50", "p50_ms", "ms"),
            ("p99", "p99_ms", "ms"),
            ("requests/s", "rps", "/s"),
        )
    ]
    rows.append(("server CPU per request at 1 (µs)", "cpu_us", 1))
    rows.append(("server CPU per request at 64 (µs)", "cpu_us", 64))
    peers = [label for label, server, _ in columns if server == "kopf"]
    head = " | ".join(f"{p} | rotor vs {p}" for p in peers)
    print(f"| measure | rotor-webhook | {head} | bare aiohttp+TLS (floor) |")
    print("|---|---:|" + "---:|---:|" * len(peers) + "---:|")
    for label, field, conc in rows:
        r, f = rotor[conc][field], med["floor"][conc][field]
        cells = []
        for p in peers:
            k = med[p][conc][field]
            ratio = r / k if field == "rps" else k / r  # >1: rotor is better
            cells.append(f"{k:.2f} | {ratio:.1f}x")
        print(f"| {label} | {r:.2f} | {' | '.join(cells)} | {f:.2f} |")
    print(
        "\nserver memory after the 64-concurrent point (peak VmHWM over the rounds): "
        + ", ".join(f"{label} {med[label]['VmHWM']:.1f} MiB" for label, _, _ in columns)
    )
    kopf = med["kopf"]
    ok_latency = rotor[8]["p50_ms"] <= TARGET_P50_MS and rotor[8]["p99_ms"] <= TARGET_P99_MS
    ok_ratio = all(rotor[c]["rps"] >= TARGET_RATIO * kopf[c]["rps"] for c in (8, 64))
    print(
        f"\ntargets: p50 <= {TARGET_P50_MS} ms and p99 <= {TARGET_P99_MS} ms at 8: "
        f"{'met' if ok_latency else 'MISSED'}; >= {TARGET_RATIO}x kopf throughput at 8 and 64: "
        f"{'met' if ok_ratio else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
