"""Value generators: one function per :data:`rotor.spec.GeneratorType`, all from the OS CSPRNG.

:func:`generate` turns a :class:`~rotor.spec.KeySpec` into its files: ``{<key>: value}``, or for
key pairs ``{<key>: private PEM, <key>.pub: public PEM}``. Values are bytes of ASCII text:

=========  ==================================================================================
type       value
=========  ==================================================================================
password   ``length`` characters from the union of the requested classes; every class present
token      ``bytes`` random bytes, encoded ``hex``, ``base64`` (padded) or ``base64url`` (no
           padding, safe in URLs and headers)
hex        ``length`` lower-case hex digits
uuid       a random (version 4) UUID, canonical text form
rsa        PKCS#8 PEM private key of ``bits`` (2048/3072/4096); ``.pub``: SubjectPublicKeyInfo PEM
ecdsa      PKCS#8 PEM private key on P-256 or P-384; ``.pub``: SubjectPublicKeyInfo PEM
ed25519    PKCS#8 PEM private key; ``.pub``: SubjectPublicKeyInfo PEM
=========  ==================================================================================

Passwords: characters come from :func:`secrets.choice` (``randbelow`` underneath: rejection
sampling, so no modulo bias), and a draw that misses a requested class is thrown away and drawn
again. That keeps every valid password equally likely (placing one character of each class first
and shuffling would favour passwords with few characters of each class). With at least 8
characters and the default alphabet a draw succeeds about 40 % of the time, so a few draws suffice.

Key pairs are made by a short-lived child process (:mod:`agent.keygen`), so ``cryptography``
(about 18 MiB once its ed25519 part is loaded) is never resident in the long-running agent; the
PEM comes back on a pipe and never touches a disk or a log.
"""

from __future__ import annotations

import base64
import secrets
import string

from agent.keygen import key_pairs, spec_arg
from rotor.spec import (
    DEFAULT_ECDSA_CURVE,
    DEFAULT_HEX_LENGTH,
    DEFAULT_PASSWORD_LENGTH,
    DEFAULT_RSA_BITS,
    DEFAULT_SYMBOLS,
    DEFAULT_TOKEN_BYTES,
    PASSWORD_CLASSES,
    PUB_SUFFIX,
    GeneratorSpec,
    KeySpec,
    RotatingSecretSpec,
)

CLASS_ALPHABETS: dict[str, str] = {
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digit": string.digits,
}
MAX_PASSWORD_DRAWS = 10_000
"""Bound on rejection draws; even length 8 with four classes needs about 3 on average."""


def password_alphabets(gen: GeneratorSpec) -> list[str]:
    """The alphabet of each requested class, in the spec's order."""
    classes = gen.classes or PASSWORD_CLASSES
    return [
        CLASS_ALPHABETS[c] if c != "symbol" else (gen.symbols or DEFAULT_SYMBOLS) for c in classes
    ]


def password(gen: GeneratorSpec) -> bytes:
    length = gen.length or DEFAULT_PASSWORD_LENGTH
    alphabets = password_alphabets(gen)
    alphabet = "".join(alphabets)
    for _ in range(MAX_PASSWORD_DRAWS):
        chars = [secrets.choice(alphabet) for _ in range(length)]
        if all(any(ch in a for ch in chars) for a in alphabets):
            return "".join(chars).encode()
    raise RuntimeError("password: no draw held every class")  # unreachable in practice


def token(gen: GeneratorSpec) -> bytes:
    raw = secrets.token_bytes(gen.bytes or DEFAULT_TOKEN_BYTES)
    if gen.encoding == "hex":
        return raw.hex().encode()
    if gen.encoding == "base64":
        return base64.b64encode(raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def hex_value(gen: GeneratorSpec) -> bytes:
    length = gen.length or DEFAULT_HEX_LENGTH
    return secrets.token_hex((length + 1) // 2)[:length].encode()


def uuid_value(_gen: GeneratorSpec) -> bytes:
    import uuid  # only where a uuid key is configured

    return str(uuid.uuid4()).encode()


def key_pair(gen: GeneratorSpec) -> tuple[bytes, bytes]:
    """``(private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)``, made in a child process."""
    return key_pairs([_keygen_arg(gen)])[0]


def _keygen_arg(gen: GeneratorSpec) -> str:
    return spec_arg(gen.type, gen.bits or DEFAULT_RSA_BITS, gen.curve or DEFAULT_ECDSA_CURVE)


_SINGLE = {"password": password, "token": token, "hex": hex_value, "uuid": uuid_value}


def generate_key(key: KeySpec) -> dict[str, bytes]:
    """The files of one key: ``{name: value}`` or ``{name: private, name.pub: public}``."""
    gen = key.generator
    if gen.is_key_pair:
        private, public = key_pair(gen)
        return {key.name: private, key.name + PUB_SUFFIX: public}
    return {key.name: _SINGLE[gen.type](gen)}


def generate(spec: RotatingSecretSpec) -> dict[str, bytes]:
    """New values for every file of a secret (all keys rotate together); every key pair of the
    secret is made by one child process."""
    pairs = [k for k in spec.keys if k.generator.is_key_pair]
    made = dict(
        zip(
            (k.name for k in pairs),
            key_pairs([_keygen_arg(k.generator) for k in pairs]),
            strict=True,
        )
    )
    out: dict[str, bytes] = {}
    for key in spec.keys:
        if key.name in made:
            private, public = made[key.name]
            out.update({key.name: private, key.name + PUB_SUFFIX: public})
        else:
            out.update(generate_key(key))
    return out
