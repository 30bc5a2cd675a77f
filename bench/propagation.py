"""Propagation: time from the writer's commit to each RO pod's files changing, on the whole
system as processes (rotorctl.harness: kmock emulator, webhook, controller, one rotor-agent
process per pod), next to two baselines measured or modelled in the same run.

    python bench/propagation.py --no-plot          # 1 RW + 10 RO pods in 10 namespaces
    python bench/propagation.py --ro 100 --rotations 50            # the 100 point, plotted

* The system as ``rotor demo`` runs it (rotorctl.harness): the emulator with HTTPS, tokens,
  RBAC and admission; the webhook injects every agent; the controller and each agent run under
  their own ServiceAccount.
* The clock starts when the emulator stores the writer's commit (a hook in the emulator, not a
  watch); an RO pod's new files are matched to their commit by checksum.
* Floor (measured, same run, same emulator, same agents): the controller is stopped and a bare
  client writes the N views itself; time from the first view write's store to each reader.

* Rotor: ``rotor.dev/rotate-now`` on the RotatingSecret, one rotation at a time; an RO pod's
  files changed when its ``..data`` link (swapped atomically by the agent) moves, polled every
  ``--resolution`` seconds (default 10 ms).
* Polling baseline (measured): ``--pollers`` readers that GET the RO view from the same emulator
  every 1 s (random phase) and note when its data changes - an app polling the API.
* Kubelet baseline (modelled): a Secret volume is refreshed when the kubelet resyncs the pod;
  its pod workers resync every ``syncFrequency`` (1 min) jittered by a factor 0.5
  (``wait.Jitter(1m, 0.5)``: a gap in [60 s, 90 s)), and a commit lands at a random moment
  in that cycle. Simulated by Monte Carlo (1e6 commits) rather than waited for: 200 rotations
  at that period would take over 4 hours. The watch-based Secret cache and the volume write
  add time on top, so the model is a lower bound for the kubelet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller import decide  # noqa: E402
from rotor.layout import SecretState  # noqa: E402
from rotor.names import SecretRef  # noqa: E402
from rotor.protocol import commit, prepare  # noqa: E402
from rotorctl.harness import Api, PropagationProbe, System, wait_for  # noqa: E402
from rotorctl.processes import proc_status  # noqa: E402

NS, NAME = "shop", "db"
KUBELET_SYNC = 60.0
KUBELET_JITTER = 0.5


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def kubelet_model(n: int = 1_000_000, seed: int = 1) -> list[float]:
    """Delay from a commit at a uniformly random moment to the next jittered pod resync."""
    rng = random.Random(seed)
    syncs: list[float] = []
    t = rng.uniform(0, KUBELET_SYNC)
    horizon = n * 0.05
    while t < horizon + 2 * KUBELET_SYNC * (1 + KUBELET_JITTER):
        syncs.append(t)
        t += KUBELET_SYNC * (1 + KUBELET_JITTER * rng.random())
    import bisect

    out = []
    for _ in range(n):
        c = rng.uniform(0, horizon)
        out.append(syncs[bisect.bisect_right(syncs, c)] - c)
    return out


class Poller(threading.Thread):
    """Reads the RO view every ``period`` seconds; notes when its data changed."""

    def __init__(self, api: Api, namespace: str, probe: PropagationProbe, period: float) -> None:
        super().__init__(daemon=True)
        self.api = api  # the emulator authenticates: the admin's token and CA
        self.url = f"{api.url}/api/v1/namespaces/{namespace}/secrets/rotor.{NS}.{NAME}"
        self.probe = probe
        self.period = period
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        last = None
        self.stop.wait(random.uniform(0, self.period))
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                req = urllib.request.Request(self.url, headers=self.api.headers())
                with urllib.request.urlopen(req, timeout=5, context=self.api.context) as r:
                    view = json.loads(r.read())
            except OSError:
                view = None
            if view is not None and view.get("data") != last:
                now = time.monotonic()
                last = view.get("data")
                # matched to its commit by content, never to "the latest commit" (see the probe)
                state = SecretState.from_secret(last, None)
                version = self.probe.version_of(state.checksum) if state.current else None
                c = self.probe.commits.get(version) if version else None
                if c is not None and not math.isnan(c.at) and version not in self.seen:
                    self.seen[version] = now - c.at
            self.stop.wait(max(0.0, self.period - (time.monotonic() - start)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ro", type=int, default=10, help="RO pods (one agent process each)")
    ap.add_argument("--namespaces", type=int, default=0, help="consumer namespaces (0: --ro)")
    ap.add_argument("--rotations", type=int, default=30)
    ap.add_argument("--floor-rounds", type=int, default=5, help="bare view writes, no controller")
    ap.add_argument("--pollers", type=int, default=10)
    ap.add_argument("--resolution", type=float, default=0.01)
    ap.add_argument("--plot", default=str(ROOT / "docs" / "propagation.png"))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--real",
        action="store_true",
        help="on a real control plane (make kube-bin); the clock starts at the probe's watch "
        "of the source Secret, and the emulator-only floor is left out",
    )
    args = ap.parse_args(argv)
    args.namespaces = args.namespaces or args.ro
    load = os.getloadavg()[0]

    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="rotor-prop-") as tmp,
        System(Path(tmp), log_level="WARNING", kube="real" if args.real else "emulator") as system,
    ):
        system.rotating_secret(
            NS,
            NAME,
            [{"name": "password", "generator": {"type": "password"}}],
            interval="24h",
            overlap="12h",
        )
        api = system.workload(NS, "api", {"rotor.dev/rw": NAME})
        system.acl("approve", f"{NS}/{NAME}", f"{NS}/api", "rw")
        readers = []
        consumers = [f"web{i}" for i in range(args.namespaces)]
        workloads = []
        for ns in consumers:
            workloads.append(system.workload(ns, "web", {"rotor.dev/ro": f"{NS}/{NAME}"}))
            system.acl("approve", f"{NS}/{NAME}", f"{ns}/web", "ro")
        writer = system.add_pod(api)
        for i in range(args.ro):
            readers.append(system.add_pod(workloads[i % len(workloads)]))
        wait_for(
            lambda: all(r.files(NAME) for r in readers) and writer.files(NAME),
            "every pod has the first value",
            timeout=600,
        )
        started = time.monotonic() - t0
        rss = agent_rss([r.agent.popen.pid for r in readers if r.agent and r.agent.popen])
        print(f"{args.ro} RO agents ready after {started:.0f}s; agent RSS median {rss:.0f} MiB")
        with PropagationProbe(system, NS, NAME, readers, args.resolution) as probe:
            pollers = [
                Poller(system.api, consumers[i % len(consumers)], probe, 1.0)
                for i in range(args.pollers)
            ]
            for p in pollers:
                p.start()
            time.sleep(1.5)  # let pollers read the current view once
            missing = 0
            for n in range(args.rotations):
                v = system.version(NS, NAME)
                system.rotate_now(NS, NAME)
                try:
                    wait_for(
                        lambda v=v: (
                            (c := probe.commits.get(v + 1)) is not None
                            and len(c.seen) == len(readers)
                            and all((v + 1) in p.seen for p in pollers)
                        ),
                        f"rotation {n + 1} everywhere",
                        timeout=20,
                    )
                except Exception as e:
                    missing += 1
                    print(f"  {e}", file=sys.stderr)
                if (n + 1) % 20 == 0:
                    print(f"  {n + 1} rotations", flush=True)
            for p in pollers:
                p.stop.set()
            rotor = probe.delays()
            polling = [d for p in pollers for d in p.seen.values()]
            commits = len(probe.commits)
            floor = (
                emulator_floor(system, probe, readers, consumers, args.floor_rounds)
                if system.emulator is not None
                else []
            )
    kubelet = kubelet_model()
    rows = [
        ("Rotor agent (watch -> files)", rotor),
        ("floor: bare view writes -> same agents, no controller", floor),
        ("polling the view every 1 s (measured)", polling),
        ("kubelet Secret volume, 60 s sync (model)", kubelet),
    ]
    rows = [(label, d) for label, d in rows if d]
    print(
        f"\n{args.rotations} rotations ({commits} commits seen), 1 RW + {args.ro} RO pods "
        f"in {args.namespaces} namespaces, {missing} rotations incomplete; load average "
        f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; clocks start when the "
        + (
            "probe's watch of the real API server delivers the commit"
            if args.real
            else "emulator stores the commit (the floor: the first view write)"
        )
    )
    print(f"{'':54} {'samples':>8} {'p50':>9} {'p99':>9} {'max':>9}")
    for label, d in rows:
        print(f"{label:54} {len(d):8d} {fmt(pct(d, 50)):>9} {fmt(pct(d, 99)):>9} {fmt(max(d)):>9}")
    if rotor and floor:
        print(
            f"the emulator's share (floor / Rotor): p50 {pct(floor, 50) / pct(rotor, 50):.0%}, "
            f"p99 {pct(floor, 99) / pct(rotor, 99):.0%}"
        )
    if not args.no_plot:
        plot(rows, Path(args.plot), args)
    return 0


def emulator_floor(
    system: System, probe: PropagationProbe, readers: list[Any], consumers: list[str], rounds: int
) -> list[float]:
    """The controller stopped, a bare client writes the views itself (one after another, as
    fast as it can) with new committed values; the same RO agents receive and swap them. Time
    from the store of the first view write to each reader's files holding the value."""
    assert system.controller is not None
    system.controller.stop()
    emu = system.emulator
    assert emu is not None
    first: list[float] = []

    def stored(obj: dict[str, Any], at: float) -> None:
        if (obj.get("metadata") or {}).get("name") == f"rotor.{NS}.{NAME}" and not first:
            first.append(at)

    emu.call(lambda k8s: k8s.listeners.append(stored))
    out: list[float] = []
    src = system.source(NS, NAME) or {}
    state = SecretState.from_secret(src.get("data"), (src.get("metadata") or {}).get("annotations"))
    try:
        for _ in range(rounds):
            now = time.time()
            value = {"password": secrets.token_urlsafe(24).encode()}
            state = commit(prepare(state, value, now, "floor"), now, 3600)
            first.clear()
            for ns in consumers:
                body = decide.view_patch(SecretRef(NS, NAME), state, ns, ["password"])
                system.api.patch("v1", "secrets", ns, f"rotor.{NS}.{NAME}", body)

            def held(p: Any, digest: str = state.checksum) -> float | None:
                return next((at for at, d in probe.held.get(p.name, []) if d == digest), None)

            wait_for(lambda: all(held(p) is not None for p in readers), "floor delivered", 120)
            out.extend(t - first[0] for p in readers if (t := held(p)) is not None)
    finally:
        emu.call(lambda k8s: k8s.listeners.remove(stored))
    return out


def fmt(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def agent_rss(pids: list[int]) -> float:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):  # the agent has gone
            if rss := proc_status(pid, "VmRSS"):  # none: a zombie
                out.append(rss)
    return statistics.median(out) if out else float("nan")


def plot(rows: list[tuple[str, list[float]]], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, d in rows:
        s = sorted(d)
        ys = [(i + 1) / len(s) for i in range(len(s))]
        ax.plot(s, ys, label=f"{label}: p99 {fmt(pct(d, 99))}")
    ax.set_xscale("log")
    ax.set_xlabel("seconds from the writer's commit to the reader's new value (log)")
    ax.set_ylabel("fraction of deliveries")
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_title(
        f"Propagation: {args.rotations} rotations, 1 RW + {args.ro} RO pods (rotorctl harness)"
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
