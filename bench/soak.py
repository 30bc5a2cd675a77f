"""Soak: >= 1,000 rotations to readers in several namespaces with writer and reader restarts and
API watch drops injected; checks every reader reaches every version and none ever holds a value
that was never committed (rotorctl/soak.py has the method and the checker).

    python bench/soak.py                          # a short run: 60 rotations, 3 x 2 readers
    python bench/soak.py --rotations 1000 --namespaces 5 --per-namespace 2     # the soak

Exit status 1 when anything was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rotorctl import soak  # noqa: E402
from rotorctl.harness import System  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rotations", type=int, default=60)
    ap.add_argument("--namespaces", type=int, default=3, help="consumer namespaces")
    ap.add_argument("--per-namespace", type=int, default=2, help="RO pods per namespace")
    ap.add_argument("--rw", type=int, default=2, help="writer replicas")
    ap.add_argument("--fault-every", type=int, default=5, help="rotations between faults")
    ap.add_argument("--deadline", type=float, default=20.0, help="seconds a reader may take")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", default=",".join(soak.FAULTS), help="kinds injected, in turn")
    ap.add_argument("--log-level", default="WARNING", help="of the controller and agents")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    keep = os.environ.get("ROTOR_SOAK_DIR")  # keep the logs there
    folder = contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="soak-")
    with folder as tmp, System(Path(tmp), log_level=args.log_level) as system:
        result = soak.run(
            system,
            rotations=args.rotations,
            rw=args.rw,
            namespaces=args.namespaces,
            per_namespace=args.per_namespace,
            fault_every=args.fault_every,
            deadline=args.deadline,
            seed=args.seed,
            faults=tuple(f for f in args.faults.split(",") if f),
            progress=lambda m: print(" ", m, flush=True),
        )
    print(
        "the system as `rotor demo` runs it: the emulator with HTTPS, tokens, RBAC and admission"
        " (the webhook injects every agent), the controller and each agent under its own identity"
    )
    print(result.summary())
    d = sorted(result.delays)
    if d:
        p99 = d[min(len(d) - 1, round(0.99 * (len(d) - 1)))]
        print(
            f"commit-to-reader over {len(d)} deliveries: p50 {statistics.median(d) * 1000:.0f} ms,"
            f" p99 {p99 * 1000:.0f} ms, max {d[-1] * 1000:.0f} ms (faults included)"
        )
    print(f"load average at the start {load:.1f}, at the end {os.getloadavg()[0]:.1f}")
    for v, pod in result.late[:20]:
        print(f"  late: version {v} at {pod}")
    for pod in result.stale_at_end:
        print(f"  stale at the end: {pod}")
    for pod, at in result.never_committed[:20]:
        print(f"  never committed: {pod} at {at - time.monotonic():.0f}s")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
