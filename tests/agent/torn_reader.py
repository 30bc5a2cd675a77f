"""A reader process for the torn-read test: reads a secret folder in a tight loop.

Usage: python torn_reader.py FOLDER STOPFILE. Prints one JSON line when STOPFILE appears:
{"sets": n, "singles": n, "retries": n, "versions": n, "bad": [first few problems]}.
The writer puts ``<name>:<v>:`` followed by a body that depends on the name and ``v`` into each
file, and ``a.previous`` holds version ``v - 1`` of ``a``.
"""

from __future__ import annotations

import json
import os
import sys


def expected(name: str, v: int) -> bytes:
    return f"{name}:{v}:".encode() + (f"{name}{v}," * (50 + v % 400)).encode()


def version_of(name: str, data: bytes) -> int | None:
    try:
        head, v, _ = data.split(b":", 2)
        n = int(v)
    except ValueError:
        return None
    return n if head.decode() == name and data == expected(name, n) else None


def main() -> None:
    folder, stop = sys.argv[1], sys.argv[2]
    sets = singles = retries = 0
    bad: list[str] = []
    seen: set[int] = set()
    print("ready", flush=True)
    while not os.path.exists(stop):
        # 1) one file through its visible name: always complete.
        try:
            with open(os.path.join(folder, "a"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            retries += 1
        else:
            singles += 1
            if version_of("a", data) is None:
                bad.append(f"single a: torn or empty ({len(data)} bytes)")
        # 2) every file of one version: resolve ..data once, read from that folder.
        #    If ..data moved on while reading, the folder may be half deleted: read again.
        try:
            link = os.readlink(os.path.join(folder, "..data"))
            payload = os.path.join(folder, link)
            names = sorted(os.listdir(payload))
            values = {}
            for n in names:
                with open(os.path.join(payload, n), "rb") as f:
                    values[n] = f.read()
            if os.readlink(os.path.join(folder, "..data")) != link:
                raise FileNotFoundError
        except FileNotFoundError:
            retries += 1
            continue
        sets += 1
        versions = set()
        for n in ("a", "b", "c"):
            if n not in values:
                bad.append(f"set: {n} missing from {names}")
                continue
            v = version_of(n, values[n])
            if v is None:
                bad.append(f"set: {n} torn or empty ({len(values[n])} bytes)")
            versions.add(v)
        if len(versions) != 1:
            bad.append(f"set: mixed versions {sorted(map(str, versions))}")
            continue
        (v,) = versions
        seen.add(v)  # type: ignore[arg-type]
        if "a.previous" in values and version_of("a", values["a.previous"]) != v - 1:  # type: ignore[operator]
            bad.append("set: a.previous is not the version before a")
        if len(bad) > 10:
            break
    print(
        json.dumps(
            {
                "sets": sets,
                "singles": singles,
                "retries": retries,
                "versions": len(seen),
                "bad": bad[:10],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
