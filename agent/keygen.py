"""Key pairs made in a short-lived child process, so ``cryptography`` never stays resident.

``cryptography`` with its OpenSSL bindings adds about 18 MiB to a process that loads its
ed25519 part (docs/benchmarks.md), more than the rest of the agent's own code; the agent runs in
every annotated pod and makes a key pair once per rotation (hours or days apart). So
:func:`key_pairs` starts a child (the agent's own interpreter running :func:`main`), which
imports ``cryptography``, makes the keys from the OS CSPRNG (through OpenSSL) and writes their PEM
to its stdout, a pipe; the parent reads it and the child exits. A value is never written to a
disk, an argument or an environment variable, and never logged: the arguments only name the
types (``rsa:3072``, ``ecdsa:P-384``, ``ed25519``), and a child that fails reports its exit
status and the type of its error only.

One child makes every key pair of a secret (all keys rotate together), so a secret with an rsa
and an ed25519 key pays one start of the interpreter (about 60-90 ms here with the import of
``cryptography``), not two.

Output: for each spec, in order, the PKCS#8 PEM private key then the SubjectPublicKeyInfo PEM
public key.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

TIMEOUT = 120.0
"""Seconds a child may take (an RSA-4096 key takes about a second, on a slow node a few)."""
_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----\n[A-Za-z0-9+/=\n]+-----END \1-----\n")
_SRC = str(Path(__file__).resolve().parent.parent)
_CHILD = "import sys; sys.path.append(sys.argv.pop(1)); from agent.keygen import main; main()"
"""The child: ``-P`` keeps the working folder off ``sys.path``; the folder that holds this
``agent`` package is appended, so an agent run from a source tree finds it too."""


class KeygenError(RuntimeError):
    """The child did not deliver the key pairs (the message never holds key material)."""


def spec_arg(gtype: str, bits: int | None = None, curve: str | None = None) -> str:
    """The child's argument for one key pair: ``rsa:BITS``, ``ecdsa:CURVE`` or ``ed25519``."""
    if gtype == "rsa":
        return f"rsa:{bits}"
    if gtype == "ecdsa":
        return f"ecdsa:{curve}"
    if gtype == "ed25519":
        return "ed25519"
    raise ValueError(f"{gtype!r} is not a key pair type")


def key_pairs(specs: Sequence[str], timeout: float = TIMEOUT) -> list[tuple[bytes, bytes]]:
    """``(private PEM, public PEM)`` for each of ``specs`` (see :func:`spec_arg`), made by one
    child process. Blocking: the engine calls it in a worker thread."""
    if not specs:
        return []
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-c", _CHILD, _SRC, *specs],
            input=b"",
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise KeygenError(f"key generation took more than {timeout:g} s") from None
    except OSError as e:
        raise KeygenError(f"cannot start the key generator: {e.strerror}") from None
    if done.returncode != 0:
        # Only the last line (the exception's type and message, which name a type, never a key).
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise KeygenError(f"the key generator failed (exit {done.returncode}): {last[0][:200]}")
    blocks = [(m.group(1), m.group(0)) for m in _PEM.finditer(done.stdout)]
    kinds = [k for k, _ in blocks]
    if kinds != [b"PRIVATE KEY", b"PUBLIC KEY"] * len(specs):
        raise KeygenError(f"the key generator printed {len(blocks)} PEM blocks, not a pair per key")
    pems = [pem for _, pem in blocks]
    return [(pems[i], pems[i + 1]) for i in range(0, len(pems), 2)]


def _pair(spec: str) -> tuple[bytes, bytes]:
    """In the child: one key pair for ``spec``."""
    from cryptography.hazmat.primitives import serialization

    gtype, _, opt = spec.partition(":")
    key: PrivateKeyTypes
    if gtype == "rsa":
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=int(opt))
    elif gtype == "ecdsa":
        from cryptography.hazmat.primitives.asymmetric import ec

        curve = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}[opt]
        key = ec.generate_private_key(curve())
    elif gtype == "ed25519":
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"{gtype!r} is not a key pair type")
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def main(argv: Sequence[str] | None = None) -> None:
    """The child's work: the PEM of every pair on stdout (all made before anything is written)."""
    specs = sys.argv[1:] if argv is None else argv
    out = [b"".join(_pair(spec)) for spec in specs]
    sys.stdout.buffer.write(b"".join(out))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
