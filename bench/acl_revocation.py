"""How soon a revocation takes effect when the ACL holds 10,000 pending requests and tenants keep
asking for more: the controller's real ACL loop over the ConfigMap backend, in one run.

    python bench/acl_revocation.py [--pending 10000] [--asks 2000] [--rounds 5] [--poll 1]

A Kubernetes emulator (kubeemu.emulator, on 127.0.0.1) holds the ACL ConfigMap, seeded with
``--pending`` pending requests and one grant. The controller's ``acl_loop`` runs with
``--poll`` seconds between reads, while its index holds ``--asks`` new asks (as if that many
Deployments had appeared) spread over 100 namespaces, which it records beside the loop. Each round
an admin revokes the grant; the figure is the time until the controller's ACL no longer has it
(what every reconcile then acts on: the RoleBinding and views go in that reconcile). Printed next
to it, measured in the same run: one snapshot read at this size (the floor), and what one request
write cost the old way (read, parse, render, write the whole document per request), times the
asks.

Target: revocation within one poll with 10,000 pending requests: the first ACL read that starts
after the revocation applies it, so the delay is at most a read under way, the pause (``--poll``)
and that read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def run(args: argparse.Namespace) -> int:
    from kubernetes import client
    from prometheus_client import CollectorRegistry

    from controller.acl.configmap import (
        DATA_KEY,
        REQUESTS_SUFFIX,
        ConfigMapAclBackend,
        render_document,
    )
    from controller.kube import Kube
    from controller.metrics import Metrics
    from controller.model import Want
    from controller.operator import Controller
    from kubeemu.emulator import EmulatorThread
    from rotor.acl import AccessRequest, AclSnapshot, Grant
    from rotor.names import Principal, SecretRef
    from rotor.settings.controller import ControllerSettings

    db = SecretRef("shop", "db")
    writer = Principal("shop", "api")
    secrets = [SecretRef("shop", f"s{i:04d}") for i in range(100)]
    pending = tuple(
        AccessRequest(secrets[i % 100], Principal(f"old-{i // 100:03d}", f"sa-{i:05d}"), "ro")
        for i in range(args.pending)
    )
    seed = AclSnapshot(
        1,
        grants=frozenset({Grant(db, writer, "rw")}),
        requests=pending,
        secrets=frozenset({db, *secrets}),
    )
    with EmulatorThread() as emu:
        api = emu.api_client()
        core = client.CoreV1Api(api)
        ns = "rotor-system"
        # grants in rotor-acl (ACL admins write it), the known secrets and the requests in
        # rotor-acl-requests (the controller writes it)
        grants = AclSnapshot(1, grants=seed.grants, requests=(), secrets=frozenset())
        asked = AclSnapshot(1, grants=frozenset(), requests=seed.requests, secrets=seed.secrets)
        text = render_document(asked)  # the larger document: every pending request
        for name, part in (("rotor-acl", grants), ("rotor-acl" + REQUESTS_SUFFIX, asked)):
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=name, namespace=ns),
                data={DATA_KEY: render_document(part)},
            )
            await asyncio.to_thread(core.create_namespaced_config_map, ns, body)
        admin = ConfigMapAclBackend(core, ns, "rotor-acl")
        t0 = time.perf_counter()
        await admin.snapshot()
        read_s = time.perf_counter() - t0
        # the old way: every recorded request re-read, re-parsed, re-rendered the document
        t0 = time.perf_counter()
        await admin.request_access(secrets[0], Principal("probe", "probe"), "ro")
        one_write_s = time.perf_counter() - t0

        settings = ControllerSettings(acl_poll=args.poll)
        kube = Kube(emu.api_client())
        ctl = Controller(
            settings,
            kube,
            ConfigMapAclBackend(client.CoreV1Api(emu.api_client()), ns, "rotor-acl"),
            Metrics(CollectorRegistry()),
        )
        asks = [
            Want(secrets[i % 100], Principal(f"new-{i % 100:03d}", f"sa-{i:05d}"), "ro")
            for i in range(args.asks)
        ]
        for i in range(0, len(asks), 20):
            ctl.set_wants(("Deployment", "x", f"d{i}"), tuple(asks[i : i + 20]))
        loop_task = asyncio.create_task(ctl.acl_loop())
        delays: list[float] = []
        try:
            deadline = time.monotonic() + 120
            while ctl.acl is None or Grant(db, writer, "rw") not in ctl.acl.grants:
                assert time.monotonic() < deadline, "the controller never read the ACL"
                await asyncio.sleep(0.01)
            for _ in range(args.rounds):
                await admin.revoke(db, writer, "rw")
                t0 = time.perf_counter()
                while ctl.acl is not None and Grant(db, writer, "rw") in ctl.acl.grants:
                    assert time.perf_counter() - t0 < 120, "the revocation never arrived"
                    await asyncio.sleep(0.005)
                delays.append(time.perf_counter() - t0)
                await admin.approve(db, writer, "rw")
                while ctl.acl is None or Grant(db, writer, "rw") not in ctl.acl.grants:
                    await asyncio.sleep(0.01)
        finally:
            loop_task.cancel()
            with_pending = await admin.snapshot()
            kube.close()
    recorded = sum(1 for r in with_pending.requests if r.principal.namespace.startswith("new-"))
    worst = max(delays)
    kib = len(text.encode()) / 1024
    print(f"ACL requests document: {kib:.0f} KiB, {args.pending} pending requests")
    print(f"asks from new workloads: {args.asks}; recorded during the run: {recorded}")
    print("| figure | seconds | vs one snapshot read |")
    print("|---|---|---|")
    print(f"| one snapshot read (floor) | {read_s:.3f} | 1.0x |")
    print(
        f"| revocation delay, median of {len(delays)} | {statistics.median(delays):.3f} | "
        f"{statistics.median(delays) / read_s:.1f}x |"
    )
    print(f"| revocation delay, worst | {worst:.3f} | {worst / read_s:.1f}x |")
    print(f"| one request write the old way | {one_write_s:.3f} | {one_write_s / read_s:.1f}x |")
    print(
        f"| the old way for {args.asks} asks before the snapshot applied | "
        f"{one_write_s * args.asks:.0f} | {one_write_s * args.asks / read_s:.0f}x |"
    )
    # the first read that starts after the revocation applies it: a read already under way
    # (read), the pause (poll), then that read (read)
    bound = args.poll + 2 * read_s
    ok = worst <= bound
    print(
        f"target: revocation by the next poll, <= poll + 2 reads = {bound:.2f} s: worst "
        f"{worst:.2f} s ({'met' if ok else 'NOT met'})"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--asks", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--poll", type=float, default=1.0)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
