"""Fan-out to RO consumers that really watch, and the controller's memory in a realistic state,
against the strict Kubernetes emulator (kubeemu/emulator.py).

The system runs as ``rotor demo`` and tests/system run it (rotorctl/harness.py): the emulator
with HTTPS, tokens and RBAC (``secure=True``), the chart's ServiceAccounts and RBAC applied
(rotorctl/chartrbac.py), the controller under the chart's ServiceAccount, each watcher under
its consumer's ServiceAccount (the Roles the controller writes are what let it read its view).

1. Fan-out: one RotatingSecret with N granted RO consumers, one namespace each, and N watchers,
   one per namespace, each following its view with the agent's own client
   (``agent.kube.KubeClient.follow``, a connection per watcher as in N agent pods) in a separate
   watcher process. The clock starts when the emulator **stores** the writer's commit of the
   source Secret (an emulator hook, not a watch) and stops when each watcher has received the new
   version; the figure is the last watcher (p50 beside it). Floors measured in the same run on the
   same emulator, with the controller stopped: the same N view writes sent by a bare client (the
   agent's client, in a process of its own as the controller is, under the controller's
   ServiceAccount) with as many requests in flight as the controller keeps (``--concurrency``,
   16) **with the N watchers connected** (the emulator's own cost of writing and delivering to N
   watchers), and the same writes with no watcher connected.
2. Memory: the controller's RSS once it has reconciled M RotatingSecrets, each with a writer pod
   (Ready, injected), an RO pod in a consumer namespace, the view the controller writes there,
   a committed source Secret and the Events the controller emits; baseline: an idle Python that
   imports kopf and kubernetes.

Targets: 1,000 consumers in <= 2 s; <= 150 MiB at 5,000 RotatingSecrets.

    python bench/fanout.py                          # 10 and 100 consumers, memory at 500
    python bench/fanout.py --fanout 10,100,1000 --rss 1000,5000     # the large points
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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
from kubeemu.emulator import EmulatorThread  # noqa: E402
from rotor import API  # noqa: E402
from rotor.kubepaths import secret_path  # noqa: E402
from rotor.layout import ANN_PHASE, ANN_VERSION, LABEL_VIEW_OF, SecretState  # noqa: E402
from rotor.names import SecretRef  # noqa: E402
from rotor.protocol import commit, prepare  # noqa: E402
from rotor.settings.controller import ControllerSettings  # noqa: E402
from rotorctl import chartrbac  # noqa: E402
from rotorctl.kubeapi import Api  # noqa: E402
from rotorctl.processes import proc_status  # noqa: E402
from tests.conftest import free_port  # noqa: E402

DB = SecretRef("shop", "db")
VIEW = "rotor.shop.db"
TIMEOUT = 300.0
ROTOR_NS = "rotor-system"
CONSUMER_SA = "c"  # the ServiceAccount of every consumer (principal c<i>/c)


class Secure:
    """The secure emulator as the harness sets it up: the chart's identities applied, and
    token files and a kubeconfig for the identities this bench runs as."""

    def __init__(self, emu: EmulatorThread, workdir: Path) -> None:
        self.emu = emu
        self.dir = workdir
        assert emu.ca_file is not None
        self.ca_file = str(emu.ca_file)
        admin = Api(emu.url, emu.admin_token, emu.ca_file)
        for d in chartrbac.identities(ROTOR_NS):
            admin.ensure(d)
        self.controller_kubeconfig = emu.write_kubeconfig(
            workdir / "controller.kubeconfig",
            emu.issue_token(ROTOR_NS, chartrbac.CONTROLLER_SA),
            chartrbac.CONTROLLER_SA,
        )

    def token_file(self, namespace: str, account: str) -> str:
        f = self.dir / "tokens" / f"{namespace}.{account}"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(self.emu.issue_token(namespace, account))
        return str(f)

    def token_dir(self, namespaces: list[str]) -> str:
        """A token file per consumer namespace (its ServiceAccount ``c``), for the watchers."""
        for ns in namespaces:
            self.token_file(ns, CONSUMER_SA)
        return str(self.dir / "tokens")


def wait(cond: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


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


class StoreClock:
    """When the emulator stored the source's commit of each version, and each view's."""

    def __init__(self, emu: EmulatorThread) -> None:
        self.commits: dict[int, float] = {}
        self.views: dict[int, list[float]] = {}
        emu.call(lambda k8s: k8s.listeners.append(self._stored))

    def _stored(self, obj: dict[str, Any], at: float) -> None:
        m = obj.get("metadata") or {}
        ann = m.get("annotations") or {}
        if not ann.get(ANN_VERSION):
            return
        v = int(ann[ANN_VERSION])
        if m.get("name") == "db" and m.get("namespace") == "shop":
            if ann.get(ANN_PHASE) == "committed":
                self.commits.setdefault(v, at)
        elif m.get("name") == VIEW:
            self.views.setdefault(v, []).append(at)


class Watchers:
    """N watchers (the agent's client, one session each) in a process of their own."""

    def __init__(self, secure: Secure, namespaces: list[str]) -> None:
        self.n = len(namespaces)
        self.seen: dict[int, list[float]] = {}
        self.ready = threading.Event()
        tokens = secure.token_dir(namespaces)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--watch",
                secure.emu.url,
                ",".join(namespaces),
                secure.ca_file,
                tokens,
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if parts == [b"ready"]:
                self.ready.set()
            elif len(parts) == 3:
                self.seen.setdefault(int(parts[1]), []).append(float(parts[2]))

    def have(self, version: int) -> bool:
        return len(self.seen.get(version, ())) >= self.n

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def _watch_main(url: str, namespaces: list[str], ca_file: str, tokens: str) -> None:
    """The watcher process: follow each namespace's view (as its ServiceAccount ``c``); print
    ``ns version monotonic``."""
    from agent.kube import KubeClient, KubeConfig, secrets_path

    out = sys.stdout
    started: set[str] = set()

    async def one(ns: str) -> None:
        config = KubeConfig(
            url=url,
            token_file=f"{tokens}/{ns}.{CONSUMER_SA}",
            ca_file=ca_file,
            timeout=60,
            watch_timeout=3600,
        )
        async with KubeClient(config) as kube:
            async for obj in kube.follow(secrets_path(ns), VIEW):
                at = time.monotonic()
                ann = ((obj or {}).get("metadata") or {}).get("annotations") or {}
                out.write(f"{ns} {ann.get(ANN_VERSION, 0)} {at}\n")
                out.flush()
                started.add(ns)

    # Start them 50 at a time, as a rollout would: 1,000 lists at once swamp the emulator.
    tasks = []
    for i in range(0, len(namespaces), 50):
        batch = namespaces[i : i + 50]
        tasks += [asyncio.ensure_future(one(ns)) for ns in batch]
        while not started.issuperset(batch):
            await asyncio.sleep(0.05)
    out.write("ready\n")
    out.flush()
    await asyncio.gather(*tasks)


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


def acl_configmap(core: client.CoreV1Api, settings: ControllerSettings, grants: list[Any]) -> None:
    secrets = sorted({g["secret"] for g in grants})
    doc = {"version": 1, "secrets": secrets, "grants": grants, "requests": []}
    core.create_namespaced_config_map(
        settings.namespace,
        {
            "metadata": {"name": settings.acl_configmap, "namespace": settings.namespace},
            "data": {DATA_KEY: yaml.safe_dump(doc)},
        },
    )


def bare_writes(secure: Secure, n: int, version: int, concurrency: int) -> tuple[float, float]:
    """The N view patches to ``version`` from a minimal client (bench/viewwriter.py) in a
    process of its own, as the controller's ServiceAccount, ``concurrency`` requests in flight
    as the controller keeps: (start, end) monotonic."""
    from bench import viewwriter

    token = secure.token_file(ROTOR_NS, chartrbac.CONTROLLER_SA)
    old = SecretState(version=version - 1, current={"password": b"v%d" % (version - 1)})
    new = commit(prepare(old, {"password": b"v%d-" % version + b"z" * 24}, 0, "w"), 0, 3600)
    writes = [
        [secret_path(f"c{i}", VIEW), decide.view_patch(DB, new, f"c{i}", ["password"])]
        for i in range(n)
    ]
    return viewwriter.run(secure.emu.url, secure.ca_file, token, concurrency, writes)


def bench_fanout(n: int, concurrency: int) -> dict[str, float]:
    """Every figure of one fan-out point, on one emulator."""
    out: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="rotor-fanout-") as tmp,
        EmulatorThread(secure=True) as emu,
    ):
        secure = Secure(emu, Path(tmp))
        api = emu.api_client()
        kube = Kube(api, concurrency=concurrency)
        clock = StoreClock(emu)
        settings = ControllerSettings(acl_poll=600.0, restart_uninjected=False)
        grants = [{"secret": "shop/db", "principal": "shop/api", "mode": "rw"}]
        grants += [{"secret": "shop/db", "principal": f"c{i}/c", "mode": "ro"} for i in range(n)]
        acl_configmap(client.CoreV1Api(api), settings, grants)
        kube.create(
            path(API, "rotatingsecrets", "shop"),
            {
                "apiVersion": API,
                "kind": "RotatingSecret",
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
            },
        )
        watchers: Watchers | None = None
        try:
            with controller_process(secure, 0, concurrency, ROTOR_ACL_POLL="600s"):
                wait(lambda: kube.get(path("v1", "secrets", "shop", "db")), what="source Secret")
                write_commit(kube, b"value-1-" + b"x" * 24)
                wait(lambda: count_views(emu, 1) == n, what=f"{n} views at version 1")
                watchers = Watchers(secure, [f"c{i}" for i in range(n)])
                wait(watchers.ready.is_set, timeout=900, what=f"{n} watchers following")
                wait(lambda: watchers is not None and watchers.have(1), what="watchers at 1")
                write_commit(kube, b"value-2-" + b"y" * 24)
                try:
                    wait(lambda: watchers is not None and watchers.have(2), 600, "watchers at 2")
                except SystemExit:
                    got = len(watchers.seen.get(2, ()))
                    views = count_views(emu, 2)
                    raise SystemExit(
                        f"{n} consumers: after 600 s {got} watchers have version 2, "
                        f"{views} views hold it in the emulator"
                    ) from None
            t0 = clock.commits[2]
            seen = watchers.seen[2]
            out["rotor_last"] = max(seen) - t0
            out["rotor_p50"] = statistics.median(seen) - t0
            out["views_stored"] = max(clock.views[2]) - t0
            # floor 1: the same writes by a bare client, the N watchers connected
            start, end = bare_writes(secure, n, 3, concurrency)
            wait(lambda: watchers is not None and watchers.have(3), what="watchers at 3")
            out["floor_watched_last"] = max(watchers.seen[3]) - start
            out["floor_watched_p50"] = statistics.median(watchers.seen[3]) - start
            out["floor_watched_writes"] = end - start
        finally:
            if watchers is not None:
                watchers.stop()
        # floor 2: the same writes, nobody watching
        start, end = bare_writes(secure, n, 4, concurrency)
        out["floor_bare"] = end - start
        assert count_views(emu, 4) == n
        kube.close()
    return out


@contextlib.contextmanager
def controller_process(
    secure: Secure, port: int = 0, concurrency: int = 16, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``rotor-controller`` in a process of its own (the emulator keeps this one busy), under
    the chart's ServiceAccount, with the ConfigMap ACL as the harness runs it."""
    full = dict(
        os.environ,
        KUBECONFIG=str(secure.controller_kubeconfig),  # as the harness runs it (kopf reads it)
        ROTOR_NAMESPACE=ROTOR_NS,
        ROTOR_ACL_BACKEND="configmap",
        ROTOR_ACL_CONFIGMAP="rotor-acl",
        ROTOR_MANAGE_CERTS="false",
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
            f"--api-concurrency={concurrency}",
        ],
        env=full,
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def baseline_rss() -> float:
    """VmRSS (MiB) of an idle Python that has imported kopf and kubernetes (read once the
    imports are done: on a loaded machine they take more than a few seconds)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import kopf, kubernetes, sys; print('ready', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    value = proc_status(proc.pid, "VmRSS")
    proc.communicate(b"")
    return value


def _pod(ns: str, name: str, sa: str, annotations: dict[str, str]) -> dict[str, Any]:
    now = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": sa, "rotor.dev/injected": "true"},
            "annotations": {**annotations, "rotor.dev/status": "injected"},
        },
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        },
    }


def _create_pod(kube: Kube, pod: dict[str, Any]) -> None:
    """Create a pod, then set its status through ``/status``: like a real API server, the
    secure emulator keeps no status from a create's body (the kubelet writes it)."""
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    kube.create(path("v1", "pods", ns), {k: v for k, v in pod.items() if k != "status"})
    kube.patch(path("v1", "pods", ns, name, "status"), {"status": pod["status"]})


def _count(emu: EmulatorThread, pred: Callable[[Any, dict[str, Any]], bool]) -> int:
    assert emu.k8s is not None
    assert emu._loop is not None
    k8s = emu.k8s

    async def count() -> int:
        return sum(
            1
            for (res, _ns, _n), obj in k8s.objects._objects.items()
            if not obj.deleted and pred(res, obj.raw)
        )

    return asyncio.run_coroutine_threadsafe(count(), emu._loop).result(60)


def bench_rss(m: int) -> dict[str, float]:
    """The controller's RSS once it has reconciled m RotatingSecrets, each with a Ready writer
    pod, an RO pod in a consumer namespace (granted), a committed source Secret and a view."""
    namespaces = 50
    out: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="rotor-fanout-") as tmp,
        EmulatorThread(secure=True) as emu,
    ):
        secure = Secure(emu, Path(tmp))
        api = emu.api_client()
        kube = Kube(api, concurrency=8)
        settings = ControllerSettings(acl_poll=600.0, restart_uninjected=False)
        grants = []
        for i in range(m):
            ns = f"ns{i % namespaces}"
            grants.append({"secret": f"{ns}/s{i}", "principal": f"{ns}/api{i}", "mode": "rw"})
            grants.append(
                {"secret": f"{ns}/s{i}", "principal": f"c{i % namespaces}/web", "mode": "ro"}
            )
        acl_configmap(client.CoreV1Api(api), settings, grants)

        def make(i: int) -> None:
            ns, c = f"ns{i % namespaces}", f"c{i % namespaces}"
            kube.create(
                path(API, "rotatingsecrets", ns),
                {
                    "apiVersion": API,
                    "kind": "RotatingSecret",
                    "metadata": {"name": f"s{i}", "namespace": ns},
                    "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
                },
            )
            _create_pod(kube, _pod(ns, f"api{i}-0", f"api{i}", {"rotor.dev/rw": f"s{i}"}))
            _create_pod(kube, _pod(c, f"web-{i}", "web", {"rotor.dev/ro": f"{ns}/s{i}"}))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make, range(m)))
        start = time.monotonic()
        with controller_process(secure, ROTOR_ACL_POLL="600s") as proc:
            wait(
                lambda: (
                    _count(
                        emu,
                        lambda r, o: (
                            r.plural == "secrets"
                            and (o["metadata"].get("labels") or {}).get("rotor.dev/secret")
                        ),
                    )
                    >= m
                ),
                timeout=1800,
                what=f"{m} source Secrets",
            )

            def commit_one(i: int) -> None:  # the writer agent's first commit
                ns = f"ns{i % namespaces}"
                obj = kube.get(path("v1", "secrets", ns, f"s{i}")) or {}
                state = SecretState.from_secret(obj.get("data"), obj["metadata"].get("annotations"))
                new = commit(
                    prepare(
                        state, {"password": b"p%05d" % i + b"x" * 26}, time.time(), f"api{i}-0"
                    ),
                    time.time(),
                    3600,
                )
                kube.patch(
                    path("v1", "secrets", ns, f"s{i}"),
                    {
                        "metadata": {
                            "resourceVersion": obj["metadata"]["resourceVersion"],
                            "annotations": new.annotations(),
                        },
                        "data": new.secret_data(),
                    },
                )

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(commit_one, range(m)))
            wait(
                lambda: (
                    _count(
                        emu,
                        lambda r, o: (
                            r.plural == "secrets"
                            and (o["metadata"].get("labels") or {}).get(LABEL_VIEW_OF)
                            and (o["metadata"].get("annotations") or {}).get(ANN_VERSION) == "1"
                        ),
                    )
                    >= m
                ),
                timeout=1800,
                what=f"{m} views",
            )
            wait(
                lambda: (
                    _count(
                        emu,
                        lambda r, o: (
                            r.plural == "rotatingsecrets"
                            and ((o.get("status") or {}).get("writer") or {}).get("pod")
                        ),
                    )
                    >= m
                ),
                timeout=1800,
                what=f"{m} writers in status",
            )
            out["reconciled_s"] = time.monotonic() - start
            time.sleep(5)  # settle (a benchmark, not a test)
            out["rss"] = proc_status(proc.pid, "VmRSS")
            out["hwm"] = proc_status(proc.pid, "VmHWM")
            out["events"] = _count(emu, lambda r, o: r.plural == "events")
            out["objects"] = _count(emu, lambda r, o: True)
        kube.close()
    return out


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("kmock", "kopf", "kubernetes", "aiohttp"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--fanout", default="10,100", help="consumer counts")
    parser.add_argument("--concurrency", type=int, default=16, help="controller API concurrency")
    parser.add_argument("--rss", default="500", help="RotatingSecret counts (realistic state)")
    parser.add_argument("--watch", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        url, namespaces, ca, tokens = args.watch
        asyncio.run(_watch_main(url, namespaces.split(","), ca, tokens))
        return 0
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {versions()}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    for n in [int(x) for x in args.fanout.split(",") if x]:
        r = bench_fanout(n, args.concurrency)
        share = r["floor_watched_last"] / r["rotor_last"]
        print(
            f"fan-out  consumers={n:5d}  store->last watcher {r['rotor_last']:6.3f}s "
            f"(p50 {r['rotor_p50']:6.3f}s; views stored {r['views_stored']:6.3f}s)  "
            f"floor: bare writes->last watcher {r['floor_watched_last']:6.3f}s "
            f"(p50 {r['floor_watched_p50']:6.3f}s; writes {r['floor_watched_writes']:6.3f}s)  "
            f"bare writes unwatched {r['floor_bare']:6.3f}s  emulator share {share:4.0%}  "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    if args.rss:
        base = baseline_rss()
        print(f"rss      idle python + import kopf, kubernetes = {base:6.1f} MiB (baseline)")
        for m in [int(x) for x in args.rss.split(",") if x]:
            r = bench_rss(m)
            print(
                f"rss      rotatingsecrets={m:5d} (+{m} writer pods, {m} RO pods, {m} views, "
                f"{r['events']:.0f} Events; {r['objects']:.0f} objects)  controller "
                f"RSS {r['rss']:6.1f} MiB, peak {r['hwm']:6.1f} MiB (+{r['rss'] - base:5.1f} over "
                f"baseline; reconciled in {r['reconciled_s']:5.1f}s)  "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
