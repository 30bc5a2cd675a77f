"""The controller's cost against the size of the cluster it runs in (issue 18).

N pods that have nothing to do with Rotor (about 4 KB each, a ReplicaSet owner, Running) and M
unrelated Deployments are created in the strict emulator (tests/kubeemu.py) before the
controller (``rotor-controller --server URL``, a process of its own, leader election off)
starts, beside one RotatingSecret (its status tells that the controller is up). Then every pod
is updated once (a status patch, as the kubelet makes them), then every Deployment. Measured
for the controller process: peak RSS (``VmHWM``), and CPU (``utime + stime``) spent on the
updates less what it spends idle over the same time. Baseline in the same run: N = M = 0.

Targets: peak RSS <= 2 MiB per 1,000 unrelated pods; <= 0.2 ms of controller CPU per unrelated
pod update.

The controller at 5,000 RotatingSecrets and the fan-out to 1,000 consumers are bench/fanout.py's
(``--rss 5000``, ``--fanout 1000``), with their own floors.

    python bench/controller_scale.py                      # N = M/10 = 5,000, then N = M = 0
    python bench/controller_scale.py --pods 2000 --deployments 200
    python bench/controller_scale.py --controller-root /tmp/old-tree   # another tree's controller

The machine is shared (2 cores): N is kept at a few thousand, and each phase is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.kube import Kube, path  # noqa: E402
from rotor import API  # noqa: E402
from rotorctl.processes import proc_status  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.kubeemu import EmulatorThread  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SETTLE_TIMEOUT = 300.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait(cond: Callable[[], Any], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def settle(pid: int, quiet: float = 0.03, window: float = 2.0) -> float:
    """Wait until the process spends less than ``quiet`` CPU seconds in ``window`` (its idle
    loops cost about nothing); returns when it did."""
    end = time.monotonic() + SETTLE_TIMEOUT
    last = cpu_seconds(pid)
    while time.monotonic() < end:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - last < quiet:
            return time.monotonic()
        last = now
    raise SystemExit("the controller did not settle")


def pod_body(ns: str, name: str, rs: str) -> dict[str, Any]:
    """A Running pod of a ReplicaSet, about 4 KB of JSON, as the API server stores one."""
    env = [
        {"name": f"APP_SETTING_{i:02d}", "value": f"value-{i:02d}-" + "x" * 24} for i in range(40)
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": rs.rsplit("-", 1)[0], "pod-template-hash": rs.rsplit("-", 1)[1]},
            "annotations": {"kubectl.kubernetes.io/default-container": "app"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs,
                    "uid": "00000000-0000-0000-0000-000000000000",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": "default",
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/team/app:1.2.3",
                    "env": env,
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                {"name": "app", "ready": True, "restartCount": 0, "started": True}
            ],
        },
    }


def deployment_body(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": 10,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
        },
        "status": {"replicas": 10, "readyReplicas": 10},
    }


@contextlib.contextmanager
def controller(url: str, root: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(
        os.environ,
        PYTHONPATH=str(root),
        ROTOR_LEADER_ELECTION="false",
        ROTOR_CONTROLLER_METRICS_PORT=str(free_port()),
        ROTOR_LOG_LEVEL="WARNING",
        ROTOR_ACL_POLL="30s",
        ROTOR_MANAGE_CERTS="false",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.main", "--server", url], env=env, cwd=root
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def run(n_pods: int, n_deployments: int, root: Path) -> dict[str, float]:
    with EmulatorThread() as emu:
        kube = Kube(emu.api_client(), concurrency=4)
        pods = [
            (f"ns{i % 50}", f"app{i // 10}-5d8f7", f"app{i // 10}-5d8f7-{i:05d}")
            for i in range(n_pods)
        ]
        deps = [(f"ns{i % 50}", f"dep{i}") for i in range(n_deployments)]
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda p: kube.create(path("v1", "pods", p[0]), pod_body(p[0], p[2], p[1])),
                    pods,
                )
            )
            list(
                pool.map(
                    lambda d: kube.create(
                        path("apps/v1", "deployments", d[0]), deployment_body(*d)
                    ),
                    deps,
                )
            )
        kube.create(
            path(API, "rotatingsecrets", "shop"),
            {
                "apiVersion": API,
                "kind": "RotatingSecret",
                "metadata": {"name": "probe", "namespace": "shop"},
                "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
            },
        )
        probe = path(API, "rotatingsecrets", "shop", "probe")
        out: dict[str, float] = {}
        with controller(emu.url, root) as proc:
            start = time.monotonic()
            wait(
                lambda: ((kube.get(probe) or {}).get("status") or {}).get("conditions"),
                300,
                "the probe's status",
            )
            settle(proc.pid)
            out["ready_s"] = time.monotonic() - start
            out["rss_ready"] = proc_status(proc.pid, "VmRSS")
            # idle CPU rate, to subtract from the churn's
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(6)
            idle_rate = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
            out["idle_cpu_pct"] = idle_rate * 100

            def churn(kind: str, items: list[Any], patch: Callable[[Any], None]) -> None:
                c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(patch, items))
                sent = time.monotonic()
                done = settle(proc.pid)
                cpu = cpu_seconds(proc.pid) - c0 - idle_rate * (done - t0)
                out[f"{kind}_updates"] = len(items)
                out[f"{kind}_send_s"] = sent - t0
                out[f"{kind}_cpu_ms_per_update"] = (
                    max(cpu, 0.0) * 1000 / len(items) if items else 0.0
                )

            churn(
                "pod",
                pods,
                lambda p: kube.patch(
                    path("v1", "pods", p[0], p[2], "status"),
                    {
                        "status": {
                            "conditions": [
                                {
                                    "type": "Ready",
                                    "status": "True",
                                    "lastProbeTime": "2026-01-02T00:00:00Z",
                                }
                            ]
                        }
                    },
                ),
            )
            churn(
                "deployment",
                deps,
                lambda d: kube.patch(
                    path("apps/v1", "deployments", d[0], d[1], "status"),
                    {"status": {"observedGeneration": 2, "readyReplicas": 9}},
                ),
            )
            out["rss_end"] = proc_status(proc.pid, "VmRSS")
            out["rss_peak"] = proc_status(proc.pid, "VmHWM")
        kube.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=5000, help="unrelated pods (N)")
    parser.add_argument("--deployments", type=int, default=500, help="unrelated Deployments (M)")
    parser.add_argument(
        "--controller-root", type=Path, default=ROOT, help="the source tree whose controller runs"
    )
    args = parser.parse_args()
    root = args.controller_root.resolve()
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load:.1f}")
    print(f"controller from {root}")
    loaded = run(args.pods, args.deployments, root)
    base = run(0, 0, root)
    for label, r in ((f"N={args.pods} M={args.deployments}", loaded), ("N=0 M=0 (baseline)", base)):
        print(
            f"{label:22s} ready {r['ready_s']:6.1f}s  RSS ready {r['rss_ready']:6.1f} MiB  "
            f"end {r['rss_end']:6.1f} MiB  peak {r['rss_peak']:6.1f} MiB  "
            f"idle CPU {r['idle_cpu_pct']:.2f} %"
        )
    if args.pods:
        per_k = (loaded["rss_peak"] - base["rss_peak"]) * 1000 / args.pods
        deps = args.deployments * 1000 // args.pods
        print(
            f"peak RSS per 1,000 unrelated pods (and their {deps} Deployments): "
            f"{per_k:.2f} MiB  (target <= 2 MiB)"
        )
        print(
            "controller CPU per unrelated pod update: "
            f"{loaded['pod_cpu_ms_per_update']:.3f} ms  (target <= 0.2 ms; "
            f"{loaded['pod_updates']:.0f} updates sent in {loaded['pod_send_s']:.1f}s)"
        )
    if args.deployments:
        print(
            "controller CPU per unrelated Deployment update: "
            f"{loaded['deployment_cpu_ms_per_update']:.3f} ms  "
            f"({loaded['deployment_updates']:.0f} updates sent in "
            f"{loaded['deployment_send_s']:.1f}s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
