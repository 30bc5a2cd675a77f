"""Controller benchmarks against the strict Kubernetes emulator (tests/kubeemu.py).

1. Fan-out: one commit of a RotatingSecret with N granted RO consumers (one namespace each) -
   time from the commit (the writer's patch of the source Secret) until every one of the N views
   in the emulator holds the new version. Baseline in the same run: the same N view writes done
   one by one (what a sequential controller would need at best).
2. Memory: RSS of the ``rotor-controller`` process (a subprocess, leader election off) once it
   has reconciled 1,000 and 5,000 RotatingSecrets. Baseline: an idle Python process that only
   imports kopf and kubernetes.

Targets: 1,000 consumers in <= 2 s; <= 150 MiB at 5,000 RotatingSecrets.

    python bench/fanout.py                 # everything
    python bench/fanout.py --fanout 10,100 --rss ""
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller import decide  # noqa: E402
from controller.acl.configmap import DATA_KEY  # noqa: E402
from controller.kube import Kube, path  # noqa: E402
from rotor import API  # noqa: E402
from rotor.layout import ANN_VERSION, LABEL_VIEW_OF, SecretState  # noqa: E402
from rotor.names import SecretRef  # noqa: E402
from rotor.protocol import commit, prepare  # noqa: E402
from rotor.settings.controller import ControllerSettings  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.kubeemu import EmulatorThread  # noqa: E402

DB = SecretRef("shop", "db")
TIMEOUT = 300.0


def wait(cond: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling the emulator costs it time: not too often


def count_views(emu: EmulatorThread, version: int) -> int:
    """Views of shop/db at ``version``, counted inside the emulator's loop (no copies)."""
    assert emu.k8s is not None
    assert emu._loop is not None
    k8s = emu.k8s

    async def count() -> int:
        n = 0
        for (res, _ns, _name), obj in k8s.objects._objects.items():
            if res.plural != "secrets" or obj.deleted:
                continue
            meta = obj.raw.get("metadata", {})
            if (meta.get("labels") or {}).get(LABEL_VIEW_OF) == "shop.db" and (
                meta.get("annotations") or {}
            ).get(ANN_VERSION) == str(version):
                n += 1
        return n

    return asyncio.run_coroutine_threadsafe(count(), emu._loop).result(30)


def write_commit(kube: Kube, value: bytes) -> SecretState:
    obj = kube.get(path("v1", "secrets", "shop", "db")) or {}
    state = SecretState.from_secret(obj.get("data"), obj["metadata"].get("annotations"))
    now = time.time()
    new = commit(prepare(state, {"password": value}, now, "api-0"), now, 3600)
    kube.patch(
        path("v1", "secrets", "shop", "db"),
        {
            "metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": new.annotations(),
            },
            "data": new.secret_data(),
        },
    )
    return new


def bench_fanout(n: int, concurrency: int) -> float:
    """Seconds from the commit until all n views hold it, with the controller's API
    concurrency set to ``concurrency`` (1 = one view after another)."""
    with EmulatorThread() as emu:
        api = emu.api_client()
        kube = Kube(api)
        settings = ControllerSettings(acl_poll=600.0, restart_uninjected=False)
        core = client.CoreV1Api(api)
        # the ACL, as an admin would have approved it
        grants = [{"secret": "shop/db", "principal": "shop/api", "mode": "rw"}]
        grants += [{"secret": "shop/db", "principal": f"c{i}/c", "mode": "ro"} for i in range(n)]
        doc = {"version": 1, "secrets": ["shop/db"], "grants": grants, "requests": []}
        core.create_namespaced_config_map(
            settings.namespace,
            {
                "metadata": {"name": settings.acl_configmap, "namespace": settings.namespace},
                "data": {DATA_KEY: yaml.safe_dump(doc)},
            },
        )
        kube.create(
            path(API, "rotatingsecrets", "shop"),
            {
                "apiVersion": API,
                "kind": "RotatingSecret",
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
            },
        )
        port = free_port()
        with controller_process(emu.url, port, concurrency, ROTOR_ACL_POLL="600s"):
            wait(lambda: kube.get(path("v1", "secrets", "shop", "db")), what="source Secret")
            write_commit(kube, b"value-1-" + b"x" * 24)
            wait(lambda: count_views(emu, 1) == n, what=f"{n} views at version 1")
            start = time.perf_counter()
            write_commit(kube, b"value-2-" + b"y" * 24)
            wait(lambda: count_views(emu, 2) == n, what=f"{n} views at version 2")
            elapsed = time.perf_counter() - start

        kube.close()
    return elapsed


def sequential_baseline(n: int) -> float:
    """The same N view updates, one request after another, on a fresh emulator holding the
    same N views (no controller connected)."""
    with EmulatorThread() as emu:
        kube = Kube(emu.api_client())
        old = SecretState(version=1, current={"password": b"value-1-" + b"x" * 24})
        new = commit(prepare(old, {"password": b"value-2-" + b"y" * 24}, 0, "w"), 0, 3600)
        for i in range(n):
            kube.create(path("v1", "secrets", f"c{i}"), decide.view_body(DB, old, f"c{i}"))
        start = time.perf_counter()
        for i in range(n):
            body = decide.view_patch(DB, new, f"c{i}", ["password"])
            kube.patch(path("v1", "secrets", f"c{i}", "rotor.shop.db"), body)
        elapsed = time.perf_counter() - start
        assert count_views(emu, 2) == n
        kube.close()
        return elapsed


@contextlib.contextmanager
def controller_process(
    url: str, port: int = 0, concurrency: int = 16, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``rotor-controller`` in a process of its own (the emulator keeps this one busy)."""
    full = dict(
        os.environ,
        ROTOR_LEADER_ELECTION="false",
        ROTOR_CONTROLLER_METRICS_PORT=str(port or free_port()),
        ROTOR_LOG_LEVEL="WARNING",
        ROTOR_RESTART_UNINJECTED="false",
        **env,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller.main",
            "--server",
            url,
            f"--api-concurrency={concurrency}",
        ],
        env=full,
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def baseline_rss() -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import kopf, kubernetes, sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    time.sleep(3)  # let the imports finish (a benchmark, not a test)
    value = rss_mib(proc.pid)
    proc.communicate(b"")
    return value


def bench_rss(n: int) -> tuple[float, float]:
    """(RSS MiB once n RotatingSecrets are reconciled, seconds until then)."""
    with EmulatorThread() as emu:
        kube = Kube(emu.api_client(), concurrency=8)

        def make(i: int) -> None:
            kube.create(
                path(API, "rotatingsecrets", f"ns{i % 50}"),
                {
                    "apiVersion": API,
                    "kind": "RotatingSecret",
                    "metadata": {"name": f"s{i}", "namespace": f"ns{i % 50}"},
                    "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
                },
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make, range(n)))
        start = time.monotonic()
        with controller_process(emu.url, ROTOR_ACL_POLL="30s") as proc:

            def reconciled() -> bool:
                assert emu.k8s is not None
                assert emu._loop is not None
                k8s = emu.k8s

                async def count() -> int:
                    return sum(
                        1
                        for (res, _ns, _n), obj in k8s.objects._objects.items()
                        if res.plural == "rotatingsecrets"
                        and not obj.deleted
                        and obj.raw.get("status", {}).get("conditions")
                    )

                done = asyncio.run_coroutine_threadsafe(count(), emu._loop).result(30)
                time.sleep(0.5)
                return done == n

            wait(reconciled, timeout=900, what=f"{n} RotatingSecrets reconciled")
            elapsed = time.monotonic() - start
            time.sleep(2)  # settle (a benchmark, not a test)
            rss = rss_mib(proc.pid)
        kube.close()
        return rss, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fanout", default="10,100,1000", help="consumer counts")
    parser.add_argument("--rss", default="1000,5000", help="RotatingSecret counts")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for n in [int(x) for x in args.fanout.split(",") if x]:
        conc = bench_fanout(n, 16)
        one = bench_fanout(n, 1)
        floor = sequential_baseline(n)
        print(
            f"fan-out  consumers={n:5d}  controller (16 parallel)={conc:6.3f}s  "
            f"controller one-by-one={one:6.3f}s  bare sequential writes={floor:6.3f}s"
        )
    if args.rss:
        base = baseline_rss()
        print(f"rss      idle python + import kopf, kubernetes = {base:6.1f} MiB (baseline)")
        for n in [int(x) for x in args.rss.split(",") if x]:
            rss, secs = bench_rss(n)
            print(
                f"rss      rotatingsecrets={n:5d}  controller={rss:6.1f} MiB  "
                f"(+{rss - base:5.1f} over baseline; reconciled all in {secs:5.1f}s)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
