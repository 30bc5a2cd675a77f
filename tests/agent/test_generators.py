"""Generators: format and properties of every type (keys load and sign; alphabets hold)."""

from __future__ import annotations

import base64
import json
import re
import string
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from agent import keygen
from agent.generators import generate, generate_key, password_alphabets
from agent.keygen import KeygenError, key_pairs
from rotor.spec import DEFAULT_SYMBOLS, GeneratorSpec, KeySpec, RotatingSecretSpec


def gen(**kw: object) -> GeneratorSpec:
    return GeneratorSpec.from_dict(kw, "generator")


def one(g: GeneratorSpec) -> bytes:
    return generate_key(KeySpec("k", g))["k"]


@pytest.mark.parametrize(
    ("spec", "alphabet"),
    [
        ({"type": "password"}, string.ascii_letters + string.digits + DEFAULT_SYMBOLS),
        ({"type": "password", "length": 8, "classes": ["digit"]}, string.digits),
        (
            {"type": "password", "length": 8, "classes": ["lower", "upper", "digit", "symbol"]},
            string.ascii_letters + string.digits + DEFAULT_SYMBOLS,
        ),
        (
            {"type": "password", "length": 200, "classes": ["upper", "symbol"], "symbols": "#$"},
            string.ascii_uppercase + "#$",
        ),
    ],
)
def test_password_length_alphabet_and_every_class(spec: dict[str, object], alphabet: str) -> None:
    g = gen(**spec)
    values = {one(g).decode() for _ in range(200)}
    assert len(values) == 200  # values differ
    for v in values:
        assert len(v) == g.length
        assert set(v) <= set(alphabet)
        for class_alphabet in password_alphabets(g):
            assert set(v) & set(class_alphabet), f"class {class_alphabet!r} missing"


def test_password_characters_are_spread_evenly() -> None:
    # 8-character digit-only passwords: 20 000 characters over 10 digits; each digit should
    # appear close to 2 000 times (a modulo-biased draw over a byte would skew 0-5 by ~2 %,
    # a place-then-shuffle scheme would not show here but a broken alphabet would).
    g = gen(type="password", length=8, classes=["digit"])
    counts = dict.fromkeys(string.digits, 0)
    for _ in range(2500):
        for ch in one(g).decode():
            counts[ch] += 1
    assert all(1700 < n < 2300 for n in counts.values()), counts


@pytest.mark.parametrize(
    ("encoding", "decode", "size"),
    [
        ("hex", bytes.fromhex, 32),
        ("base64", lambda s: base64.b64decode(s, validate=True), 48),
        ("base64url", lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), 16),
    ],
)
def test_token_encodings(encoding: str, decode: object, size: int) -> None:
    g = gen(type="token", bytes=size, encoding=encoding)
    a, b = one(g).decode(), one(g).decode()
    assert a != b
    assert len(decode(a)) == size  # type: ignore[operator]
    if encoding == "base64url":
        assert re.fullmatch(r"[A-Za-z0-9_-]+", a)


@pytest.mark.parametrize("length", [16, 17, 64, 2048])
def test_hex(length: int) -> None:
    v = one(gen(type="hex", length=length)).decode()
    assert len(v) == length
    assert re.fullmatch(r"[0-9a-f]+", v)


def test_uuid_is_random_v4() -> None:
    a, b = one(gen(type="uuid")).decode(), one(gen(type="uuid")).decode()
    assert a != b
    assert uuid.UUID(a).version == 4
    assert str(uuid.UUID(a)) == a


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"type": "rsa", "bits": 2048}, rsa.RSAPrivateKey),
        ({"type": "ecdsa", "curve": "P-256"}, ec.EllipticCurvePrivateKey),
        ({"type": "ecdsa", "curve": "P-384"}, ec.EllipticCurvePrivateKey),
        ({"type": "ed25519"}, ed25519.Ed25519PrivateKey),
    ],
)
def test_key_pairs_load_sign_and_verify(spec: dict[str, object], kind: type) -> None:
    files = generate_key(KeySpec("sig", gen(**spec)))
    assert sorted(files) == ["sig", "sig.pub"]
    assert files["sig"].startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    assert files["sig.pub"].startswith(b"-----BEGIN PUBLIC KEY-----\n")
    key = serialization.load_pem_private_key(files["sig"], password=None)
    pub = serialization.load_pem_public_key(files["sig.pub"])
    assert isinstance(key, kind)
    msg = b"rotor"
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == spec["bits"]
        sig = key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
        pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg,union-attr]
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        assert key.curve.name == {"P-256": "secp256r1", "P-384": "secp384r1"}[str(spec["curve"])]
        sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
        pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,union-attr]
    else:
        pub.verify(key.sign(msg), msg)  # type: ignore[call-arg,union-attr]
    again = generate_key(KeySpec("sig", gen(**spec)))
    assert again["sig"] != files["sig"]


@pytest.mark.parametrize("bits", [3072, 4096])
def test_rsa_sizes(bits: int) -> None:
    key = serialization.load_pem_private_key(one(gen(type="rsa", bits=bits)), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == bits


def test_generate_makes_every_file_of_a_secret() -> None:
    spec = RotatingSecretSpec.from_dict(
        {
            "keys": [
                {"name": "password", "generator": {"type": "password"}},
                {"name": "signing-key", "generator": {"type": "ed25519"}},
            ]
        }
    )
    values = generate(spec)
    assert sorted(values) == sorted(spec.files) == ["password", "signing-key", "signing-key.pub"]
    assert len(values["password"]) == 32


PROBE = """
import json, subprocess, sys
from agent.generators import generate
from rotor.spec import RotatingSecretSpec
runs = []
real = subprocess.run
def counting(*a, **kw):
    runs.append(a[0][:3])
    return real(*a, **kw)
subprocess.run = counting
spec = RotatingSecretSpec.from_dict({"keys": [
    {"name": "ed", "generator": {"type": "ed25519"}},
    {"name": "pw", "generator": {"type": "password"}},
    {"name": "rsa", "generator": {"type": "rsa", "bits": 2048}},
]})
values = generate(spec)
print(json.dumps({
    "files": {k: v.decode() for k, v in values.items()},
    "children": len(runs),
    "resident": sorted(m for m in sys.modules if m.split(".")[0] == "cryptography"),
}))
"""


def test_key_pairs_are_made_by_one_child_and_cryptography_never_loads_in_the_agent(
    tmp_path: Path,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    doc = json.loads(out.stdout)
    assert doc["resident"] == []  # the agent process never imported cryptography
    assert doc["children"] == 1  # both key pairs of the secret from one child
    files = {k: v.encode() for k, v in doc["files"].items()}
    assert sorted(files) == ["ed", "ed.pub", "pw", "rsa", "rsa.pub"]
    ed = serialization.load_pem_private_key(files["ed"], password=None)
    assert isinstance(ed, ed25519.Ed25519PrivateKey)
    pub = serialization.load_pem_public_key(files["ed.pub"])
    pub.verify(ed.sign(b"m"), b"m")  # type: ignore[call-arg,union-attr]
    key = serialization.load_pem_private_key(files["rsa"], password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert list(tmp_path.iterdir()) == []  # nothing was written to the working folder


def test_a_failing_key_generator_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(KeygenError, match="exit 1"):
        key_pairs(["ed25519"], timeout=30)


def test_a_key_generator_error_names_the_error_type_only() -> None:
    with pytest.raises(KeygenError) as e:
        key_pairs(["ed25519", "rsa:many"], timeout=30)
    assert "ValueError" in str(e.value)
    assert "PRIVATE KEY" not in str(e.value)


def test_a_key_generator_that_prints_garbage_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keygen, "_CHILD", "print('-----BEGIN PRIVATE KEY-----')")
    with pytest.raises(KeygenError, match="not a pair per key"):
        key_pairs(["ed25519"], timeout=30)
