"""What the strict emulator's authentication and RBAC cost per request (kubeemu/emulator.py).

One GET of a Secret by name, over one kept-alive connection, repeated; the median per request of:

* baseline: ``EmulatorThread()`` (plain HTTP, no token checked, no RBAC);
* ``secure`` as the admin (HTTPS, token lookup, RBAC: the cluster-admin binding matches);
* ``secure`` as a service account whose one resourceNames-scoped RoleBinding sits among
  ``--bindings`` others in its namespace (the agent's case, with many grants around).

Ratios are against the baseline measured in the same run.

    python bench/kubeemu_auth.py [--requests 400] [--bindings 500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubeemu.emulator import EmulatorThread  # noqa: E402

NS = "bench"


def connection(emu: EmulatorThread) -> http.client.HTTPConnection:
    host, _, port = emu.url.split("://", 1)[1].partition(":")
    ctx = emu.ssl_context()
    if ctx is None:
        return http.client.HTTPConnection(host, int(port), timeout=10)
    return http.client.HTTPSConnection(host, int(port), timeout=10, context=ctx)


def send(
    conn: http.client.HTTPConnection, method: str, path: str, token: str, body: Any = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    r = conn.getresponse()
    return r.status, r.read()


def setup(emu: EmulatorThread, bindings: int) -> None:
    conn = connection(emu)
    admin = emu.admin_token if emu.secure else ""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NS}}
    assert send(conn, "POST", f"/api/v1/namespaces/{NS}/secrets", admin, secret)[0] in (200, 201)
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}"
    for i in range(bindings + 1):
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": f"r{i}", "namespace": NS},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": ["s" if i == bindings else f"other-{i}"],
                    "verbs": ["get"],
                }
            ],
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"r{i}", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"r{i}"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "reader" if i == bindings else f"sa{i}"}
            ],
        }
        send(conn, "POST", f"{rbac}/roles", admin, role)
        send(conn, "POST", f"{rbac}/rolebindings", admin, binding)
    conn.close()


def measure(emu: EmulatorThread, token: str, requests: int) -> float:
    conn = connection(emu)
    path = f"/api/v1/namespaces/{NS}/secrets/s"
    for _ in range(20):  # warm up (TLS handshake, policy index)
        assert send(conn, "GET", path, token)[0] == 200
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        status, _ = send(conn, "GET", path, token)
        times.append(time.perf_counter() - t)
        assert status == 200
    conn.close()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--bindings", type=int, default=500)
    args = ap.parse_args(argv)
    with EmulatorThread() as plain:
        setup(plain, 0)
        base = measure(plain, "", args.requests)
    with EmulatorThread(secure=True) as emu:
        setup(emu, args.bindings)
        admin = measure(emu, emu.admin_token, args.requests)
        sa = measure(emu, emu.issue_token(NS, "reader"), args.requests)
    print(f"GET a Secret by name, median of {args.requests} (one kept-alive connection)")
    print(f"{'':52} {'median':>9} {'ratio':>7}")
    rows = [
        ("plain HTTP, no authn/authz (baseline)", base),
        ("secure, admin (HTTPS, token, RBAC)", admin),
        (f"secure, service account among {args.bindings} RoleBindings", sa),
    ]
    for label, t in rows:
        print(f"{label:52} {t * 1000:7.2f} ms {t / base:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
