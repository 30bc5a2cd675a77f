"""Decode and apply an ACL of 10,000 grants from the canister; target <= 1 s in total.

Steps timed (median of --runs), on the answer of the canister's ``acl`` query:

1. Candid decode of the ``CertifiedAcl`` record by the bounded decoder
   (``controller.acl.canister.wire``, what the controller runs);
2. validation into rotor.acl types (:func:`controller.acl.canister.to_snapshot`);
3. certificate check, as ``canister_verify=strict`` does: sha256 of the canonical encoding,
   hash tree, /time, BLS signature;
4. apply: the grants in force (``effective_grants``) and the Roles/RoleBindings each secret
   needs (``desired_rbac``), as the controller computes its desired state.

Baselines measured in the same run: the same decode by ic-py 1.0.1 (which the bounded decoder
replaced), ``json.loads`` of the same ACL, and the ConfigMap backend's YAML parse
(``parse_document``) of the same ACL.

    python bench/acl_decode.py [--grants 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import cbor2
from ic.candid import Types, decode, encode
from pyblst import BlstP1Element, BlstP2Element

from controller.acl.canister import (
    CERTIFIED_ACL,
    acl_hash,
    decode_one,
    to_snapshot,
    tree_digest,
    verify_certificate,
)
from controller.acl.canister.certificate import BLS_DST, G2_GENERATOR, ROOT_KEY_DER_PREFIX
from controller.acl.configmap import parse_document, render_document
from controller.decide import Staleness, desired_rbac, effective_grants
from rotor.acl import Grant

CANISTER = bytes.fromhex("00000000000000010101")
TARGET = 1.0


def make_acl(n: int) -> dict[str, Any]:
    per_secret = 20
    secrets = [f"ns{i % 50}/secret-{i}" for i in range(max(1, n // per_secret))]
    grants = []
    for i in range(n):
        secret = secrets[i // per_secret % len(secrets)]
        ns = secret.split("/")[0]
        j = i % per_secret
        if j == 0:
            grants.append({"secret": secret, "principal": f"{ns}/writer", "mode": {"rw": None}})
        else:
            grants.append({"secret": secret, "principal": f"app{j}/reader", "mode": {"ro": None}})
    grants.sort(key=lambda g: (g["secret"], g["principal"], next(iter(g["mode"]))))
    requests = [
        {
            "secret": secrets[k % len(secrets)],
            "principal": f"late{k}/sa",
            "mode": {"ro": None},
            "state": {"pending": None},
        }
        for k in range(100)
    ]
    return {"version": n, "secrets": sorted(secrets), "grants": grants, "requests": requests}


def labeled(*path: bytes, leaf: bytes) -> list[Any]:
    node: list[Any] = [3, leaf]
    for label in reversed(path):
        node = [2, label, node]
    return node


def certificate(acl: dict[str, Any], secret_key: int) -> bytes:
    now = time.time_ns()
    time_leaf = bytearray()
    n = now
    while True:
        byte, n = n & 0x7F, n >> 7
        time_leaf.append(byte | (0x80 if n else 0))
        if not n:
            break
    tree = [
        1,
        labeled(b"canister", CANISTER, b"certified_data", leaf=acl_hash(acl)),
        labeled(b"time", leaf=bytes(time_leaf)),
    ]
    message = b"\x0dic-state-root" + tree_digest(tree)
    sig = BlstP1Element().hash_to_group(message, BLS_DST).scalar_mul(secret_key).compress()
    return bytes(cbor2.dumps({"tree": tree, "signature": sig}))


def plain_ic_py_types() -> Any:
    """CERTIFIED_ACL in ic-py's types, for ic-py's own decoder (the baseline)."""
    mode = Types.Variant({"rw": Types.Null, "ro": Types.Null})
    state = Types.Variant({"pending": Types.Null, "denied": Types.Null})
    grant = Types.Record({"secret": Types.Text, "principal": Types.Text, "mode": mode})
    request = Types.Record(
        {"secret": Types.Text, "principal": Types.Text, "mode": mode, "state": state}
    )
    acl = Types.Record(
        {
            "version": Types.Nat64,
            "secrets": Types.Vec(Types.Text),
            "grants": Types.Vec(grant),
            "requests": Types.Vec(request),
        }
    )
    return Types.Record({"acl": acl, "certificate": Types.Opt(Types.Vec(Types.Nat8))})


def median(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def apply(snapshot: Any) -> int:
    grants = effective_grants(snapshot, Staleness(stale=False, age=0.0, revoke=False))
    by_secret: dict[Any, list[Grant]] = defaultdict(list)
    for g in grants:
        by_secret[g.secret].append(g)
    return sum(len(desired_rbac(s, gs)) for s, gs in by_secret.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    acl = make_acl(args.grants)
    secret_key = 0x1234567890ABCDEF1234567890ABCDEF
    root = (
        ROOT_KEY_DER_PREFIX
        + BlstP2Element().uncompress(G2_GENERATOR).scalar_mul(secret_key).compress()
    )
    payload = bytes(
        encode(
            [
                {
                    "type": CERTIFIED_ACL,
                    "value": {"acl": acl, "certificate": [certificate(acl, secret_key)]},
                }
            ]
        )
    )
    json_text = json.dumps(acl)
    yaml_text = render_document(to_snapshot(acl, "bench"))

    t_decode, value = median(lambda: decode_one(payload, CERTIFIED_ACL, "bench"), args.runs)
    plain = plain_ic_py_types()
    t_plain, plain_value = median(lambda: decode(payload, plain)[0]["value"], args.runs)
    assert plain_value["acl"] == value["acl"]
    t_validate, snap = median(lambda: to_snapshot(value["acl"], "bench"), args.runs)

    def check() -> None:
        verify_certificate(
            bytes(value["certificate"][0]),
            canister_id=CANISTER,
            certified_data=acl_hash(value["acl"]),
            verify="strict",
            root_key_der=root,
            now=time.time(),
            max_age=300.0,
        )

    t_verify, _ = median(check, args.runs)
    t_apply, objects = median(lambda: apply(snap), args.runs)
    total = t_decode + t_validate + t_verify + t_apply
    t_json, _ = median(lambda: to_snapshot(json.loads(json_text), "bench"), args.runs)
    t_json_raw, _ = median(lambda: json.loads(json_text), args.runs)
    t_yaml, _ = median(lambda: parse_document(yaml_text, "bench"), args.runs)

    assert len(snap.grants) == args.grants
    print(
        f"ACL: {args.grants} grants, {len(acl['secrets'])} secrets, {len(acl['requests'])} "
        f"requests; Candid answer {len(payload) / 1024:.0f} KiB; median of {args.runs} runs"
    )
    rows = [
        ("Candid decode (bounded decoder, wire.py)", t_decode),
        ("validate into rotor.acl types", t_validate),
        ("certificate: sha256 + hash tree + BLS", t_verify),
        (f"apply: grants -> {objects} Roles/RoleBindings", t_apply),
        ("total (canister backend)", total),
        ("baseline: Candid decode by ic-py (unbounded)", t_plain),
        ("baseline: json.loads only", t_json_raw),
        ("baseline: json.loads + validate", t_json),
        ("baseline: ConfigMap YAML parse + validate", t_yaml),
    ]
    for name, seconds in rows:
        print(f"  {name:<45} {seconds * 1000:9.1f} ms")
    verdict = "meets" if total <= TARGET else "MISSES"
    print(f"target <= {TARGET:.1f} s: {verdict} ({total:.3f} s)")


if __name__ == "__main__":
    main()
