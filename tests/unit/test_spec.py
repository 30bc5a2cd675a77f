"""rotor.spec: RotatingSecret specs read from dicts; every error names its field and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from rotor.errors import InvalidSpec
from rotor.spec import (
    DEFAULT_SYMBOLS,
    ExternalStoreSpec,
    GeneratorSpec,
    RotatingSecretSpec,
)

PW = {"name": "password", "generator": {"type": "password"}}


def spec(**kw: Any) -> dict[str, Any]:
    return {"keys": [PW], **kw}


@pytest.mark.parametrize(
    ("gen", "expected"),
    [
        (
            {"type": "password"},
            GeneratorSpec(
                "password",
                length=32,
                classes=("lower", "upper", "digit", "symbol"),
                symbols=DEFAULT_SYMBOLS,
            ),
        ),
        (
            {"type": "password", "length": 8, "classes": ["digit"]},
            GeneratorSpec("password", length=8, classes=("digit",)),
        ),
        ({"type": "token"}, GeneratorSpec("token", bytes=32, encoding="base64url")),
        (
            {"type": "token", "bytes": 16, "encoding": "hex"},
            GeneratorSpec("token", bytes=16, encoding="hex"),
        ),
        ({"type": "hex"}, GeneratorSpec("hex", length=64)),
        ({"type": "uuid"}, GeneratorSpec("uuid")),
        ({"type": "rsa"}, GeneratorSpec("rsa", bits=3072)),
        ({"type": "rsa", "bits": 4096}, GeneratorSpec("rsa", bits=4096)),
        ({"type": "ecdsa"}, GeneratorSpec("ecdsa", curve="P-256")),
        ({"type": "ecdsa", "curve": "P-384"}, GeneratorSpec("ecdsa", curve="P-384")),
        ({"type": "ed25519"}, GeneratorSpec("ed25519")),
    ],
)
def test_generator_defaults_and_round_trip(gen: dict[str, Any], expected: GeneratorSpec) -> None:
    got = GeneratorSpec.from_dict(gen, "g")
    assert got == expected
    assert GeneratorSpec.from_dict(got.to_dict(), "g") == got


@pytest.mark.parametrize(
    ("value", "field", "problem", "fix"),
    [
        (spec(keys=[]), "spec.keys", "at least one key is required", "add e.g. keys:"),
        ({}, "spec.keys", "at least one key is required", "add e.g. keys:"),
        ("nope", "spec", "expected a mapping, got str", ""),
        (spec(extra=1), "spec.extra", "unknown field", "remove it; allowed here: externalStores"),
        (
            spec(keys=[{"name": "pw"}]),
            "spec.keys[0].generator",
            "generator is required",
            "add e.g. generator: {type: password, length: 32}",
        ),
        (
            spec(keys=[{"generator": {"type": "uuid"}}]),
            "spec.keys[0].name",
            "a key name is required",
            "give a name like password",
        ),
        (
            spec(keys=[{"name": "a.b", "generator": {"type": "uuid"}}]),
            "spec.keys[0].name",
            "'a.b' is not a valid key name",
            "use letters, digits",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "pasword"}}]),
            "spec.keys[0].generator.type",
            "'pasword' is not a generator type",
            "use one of password, token, hex, uuid, rsa, ecdsa, ed25519",
        ),
        (
            spec(keys=[{"name": "k", "generator": {}}]),
            "spec.keys[0].generator.type",
            "type is required",
            "use one of password",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "password", "length": 4}}]),
            "spec.keys[0].generator.length",
            "4 is out of range",
            "use 8 to 1024",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "password", "length": "32"}}]),
            "spec.keys[0].generator.length",
            "expected an integer, got '32'",
            "",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "password", "classes": ["greek"]}}]),
            "spec.keys[0].generator.classes[0]",
            "'greek' is not a character class",
            "use one of lower",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "password", "classes": []}}]),
            "spec.keys[0].generator.classes",
            "expected a non-empty list",
            "list some of",
        ),
        (
            spec(
                keys=[
                    {"name": "k", "generator": {"type": "password", "classes": ["digit", "digit"]}}
                ]
            ),
            "spec.keys[0].generator.classes",
            "a class is listed twice",
            "list each once",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "password", "symbols": "ab"}}]),
            "spec.keys[0].generator.symbols",
            "expected distinct printable ASCII symbols",
            "e.g.",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "password", "bits": 8}}]),
            "spec.keys[0].generator.bits",
            "unknown field",
            "allowed here: classes, length, symbols, type",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "token", "encoding": "base32"}}]),
            "spec.keys[0].generator.encoding",
            "'base32' is not supported",
            "use one of hex, base64, base64url",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "token", "bytes": 8}}]),
            "spec.keys[0].generator.bytes",
            "8 is out of range",
            "use 16 to 1024",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "rsa", "bits": 1024}}]),
            "spec.keys[0].generator.bits",
            "1024 is not supported",
            "use one of 2048, 3072, 4096",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "ecdsa", "curve": "P-521"}}]),
            "spec.keys[0].generator.curve",
            "'P-521' is not supported",
            "use one of P-256, P-384",
        ),
        (
            spec(keys=[{"name": "k", "generator": {"type": "uuid", "length": 3}}]),
            "spec.keys[0].generator.length",
            "unknown field",
            "allowed here: type",
        ),
        (
            spec(
                keys=[
                    {"name": "sig", "generator": {"type": "ed25519"}},
                    {"name": "sig", "generator": {"type": "uuid"}},
                ]
            ),
            "spec.keys[1].name",
            "file 'sig' is already made by keys[0]",
            "give every key a distinct name",
        ),
        (
            spec(rotation={"interval": "500ms"}),
            "spec.rotation.interval",
            "'500ms' is too short",
            "use at least 1s",
        ),
        (
            spec(rotation={"interval": "1h", "overlap": "1h"}),
            "spec.rotation.overlap",
            "overlap 1h is not shorter than the shortest jittered interval 57m (interval 1h "
            "less jitter 0.05)",
            "make overlap shorter than 57m (0s turns it off)",
        ),
        (  # a rotation may come 5% early: inside the overlap, the previous value dies early
            spec(rotation={"interval": "20m", "overlap": "19m30s"}),
            "spec.rotation.overlap",
            "overlap 19m30s is not shorter than the shortest jittered interval 19m",
            "make overlap shorter than 19m",
        ),
        (
            spec(rotation={"interval": "daily"}),
            "spec.rotation.interval",
            "'daily' is not a duration",
            "write a number with a unit",
        ),
        (
            spec(rotation={"every": "1h"}),
            "spec.rotation.every",
            "unknown field",
            "allowed here: interval, overlap",
        ),
        (spec(suspend="yes"), "spec.suspend", "expected true or false, got 'yes'", ""),
        (spec(externalStores={}), "spec.externalStores", "expected a list", ""),
        (
            spec(externalStores=[{"storeRef": {"name": "vault"}, "path": "../x"}]),
            "spec.externalStores[0].path",
            "'../x' is not a KV path",
            "give a path under the store's mount",
        ),
        (
            spec(externalStores=[{"storeRef": {"name": "Vault"}, "path": "a"}]),
            "spec.externalStores[0].storeRef.name",
            "'Vault' is not a valid name",
            "use lower-case",
        ),
    ],
)
def test_rotating_secret_errors(value: object, field: str, problem: str, fix: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        RotatingSecretSpec.from_dict(value)
    assert e.value.field == field
    assert e.value.problem.startswith(problem)
    assert fix in e.value.fix
    assert str(e.value).startswith(f"{field}: {problem}")


@pytest.mark.parametrize(
    ("rotation", "interval", "overlap"),
    [
        (None, 86400.0, 3600.0),
        ({"interval": "30s"}, 30.0, 15.0),  # default overlap: 1h or half the interval
        ({"interval": "1h", "overlap": "0s"}, 3600.0, 0.0),
        ({"interval": "1h30m", "overlap": "10m"}, 5400.0, 600.0),
    ],
)
def test_rotation_defaults(rotation: Any, interval: float, overlap: float) -> None:
    s = RotatingSecretSpec.from_dict(spec(rotation=rotation) if rotation else spec())
    assert (s.rotation.interval, s.rotation.overlap) == (interval, overlap)


def test_files_round_trip_and_key_pairs() -> None:
    value = {
        "keys": [PW, {"name": "signing-key", "generator": {"type": "ed25519"}}],
        "rotation": {"interval": "24h", "overlap": "1h"},
        "externalStores": [{"storeRef": {"name": "vault"}, "path": "/shop/db/"}],
        "suspend": True,
    }
    s = RotatingSecretSpec.from_dict(value)
    assert s.files == ("password", "signing-key", "signing-key.pub")
    assert s.external_stores[0].path == "shop/db"
    assert s.suspend
    assert RotatingSecretSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    ("value", "field", "problem"),
    [
        ({}, "spec.vault", "vault is required"),
        (
            {"vault": {"server": "vault:8200", "auth": {}}},
            "spec.vault.server",
            "'vault:8200' is not a URL",
        ),
        (
            {"vault": {"server": "https://v", "auth": {}}},
            "spec.vault.auth",
            "exactly one auth method",
        ),
        (
            {"vault": {"server": "https://v", "auth": {"kubernetes": {}}}},
            "spec.vault.auth.kubernetes.role",
            "a role is required",
        ),
        (
            {
                "vault": {
                    "server": "https://v",
                    "caBundle": "x",
                    "auth": {"kubernetes": {"role": "r"}},
                }
            },
            "spec.vault.caBundle",
            "expected a PEM certificate bundle",
        ),
    ],
)
def test_external_store_errors(value: object, field: str, problem: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        ExternalStoreSpec.from_dict(value)
    assert e.value.field == field
    assert e.value.problem.startswith(problem)


def test_external_store_reads_token_auth() -> None:
    s = ExternalStoreSpec.from_dict(
        {
            "vault": {
                "server": "https://vault:8200/",
                "mount": "/kv/",
                "auth": {"token": {"secretRef": {"name": "vault-token"}}},
            }
        }
    )
    assert s.vault.server == "https://vault:8200"
    assert s.vault.mount == "kv"
    assert s.vault.auth.token_secret is not None
    assert (s.vault.auth.token_secret.name, s.vault.auth.token_secret.key) == (
        "vault-token",
        "token",
    )


# -- spec.target ----------------------------------------------------------------------------------
def pg_spec(**target: Any) -> dict[str, Any]:
    return spec(target={"postgres": {"host": "pg.shop.svc", "role": "app", **target}})


def test_postgres_target_defaults_files_and_round_trip() -> None:
    s = RotatingSecretSpec.from_dict(pg_spec())
    assert s.target is not None
    pg = s.target.postgres
    assert pg is not None
    assert (pg.port, pg.database, pg.sslmode, pg.strategy, pg.on_overlap_end) == (
        5432, "postgres", "prefer", "alternating", "lock"
    )  # fmt: skip
    assert pg.roles == ("app_a", "app_b")
    assert (pg.admin.user, pg.admin.secret_ref, pg.admin.password_file) == ("postgres", None, None)
    assert s.files == ("password", "username")  # the target adds the username file
    assert RotatingSecretSpec.from_dict(s.to_dict()) == s
    single = RotatingSecretSpec.from_dict(pg_spec(strategy="single"))
    assert single.target is not None
    assert single.target.postgres is not None
    assert single.target.postgres.roles == ("app",)


@pytest.mark.parametrize(
    ("value", "field", "problem", "fix"),
    [
        (
            pg_spec(passwordKey="pw"),
            "spec.target.postgres.passwordKey",
            "no key is named 'pw'",
            "name one of password",
        ),
        (
            spec(
                keys=[{"name": "password", "generator": {"type": "ed25519"}}],
                target={"postgres": {"host": "h", "role": "app"}},
            ),
            "spec.target.postgres.passwordKey",
            "key 'password' is a ed25519 key pair",
            "use a password, token or hex generator",
        ),
        (
            spec(
                keys=[PW, {"name": "username", "generator": {"type": "uuid"}}],
                target={"postgres": {"host": "h", "role": "app"}},
            ),
            "spec.target.postgres.usernameKey",
            "file 'username' is already made by keys[1]",
            "rename the key or set usernameKey",
        ),
        (
            pg_spec(strategy="single", template="app_rw"),
            "spec.target.postgres.template",
            "a template is used only by strategies alternating and per-version",
            "remove it",
        ),
        (
            pg_spec(role="x" * 62),
            "spec.target.postgres.role",
            f"{'x' * 62!r} is not a role name",
            "at most 61 characters",
        ),
        (
            pg_spec(role="app\n"),  # `$` matches before a final newline: the whole name is checked
            "spec.target.postgres.role",
            "'app\\n' is not a role name",
            "lower-case letters",
        ),
        (
            pg_spec(connectTimeout="0s"),
            "spec.target.postgres.connectTimeout",
            "'0s' is out of range",
            "use 1s to 2m",
        ),
        (
            pg_spec(admin={"passwordFile": "relative/path"}),
            "spec.target.postgres.admin.passwordFile",
            "'relative/path' is not an absolute path",
            "",
        ),
        (
            pg_spec(usernameKey="password"),
            "spec.target.postgres.usernameKey",
            "is the same as passwordKey",
            "give them different names",
        ),
    ],
)
def test_postgres_target_errors_name_the_field(
    value: object, field: str, problem: str, fix: str
) -> None:
    with pytest.raises(InvalidSpec) as e:
        RotatingSecretSpec.from_dict(value)
    assert e.value.field == field
    assert e.value.problem.startswith(problem)
    assert fix in e.value.fix


def test_per_version_needs_an_overlap() -> None:
    value = pg_spec(strategy="per-version")
    value["rotation"] = {"interval": "1h", "overlap": "0s"}
    with pytest.raises(InvalidSpec) as e:
        RotatingSecretSpec.from_dict(value)
    assert e.value.field == "spec.rotation.overlap"
    assert "per-version needs an overlap" in e.value.problem
    ok = RotatingSecretSpec.from_dict(pg_spec(strategy="per-version"))
    assert ok.target is not None
    assert ok.target.postgres is not None
    assert ok.target.postgres.owns("app_v12")
    assert not ok.target.postgres.owns("app_a")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1@127.0.0.1:18099/x",  # the agent would POST to the host after @
        "http://127.0.0.1:1@other.example/x",
        "http://localhost:80@10.0.0.1:80/",
        "http://@127.0.0.1:80/x",
        "http://127.0.0.1:80/x#frag",
        "http://127.0.0.1:80/x y",
        "http://127.0.0.1/x",  # no port
        "http://127.0.0.1:99999/x",
        "http://127.0.0.1.example:80/",
    ],
)
def test_hook_target_url_is_parsed_not_matched_by_prefix(url: str) -> None:
    value = spec(target={"hook": {"overlapEnd": url}})
    with pytest.raises(InvalidSpec) as e:
        RotatingSecretSpec.from_dict(value)
    assert e.value.field == "spec.target.hook.overlapEnd"
    assert "http://127.0.0.1:PORT/PATH" in e.value.fix


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/retire", "http://localhost:1/", "http://[::1]:80/a@b?c=d"]
)
def test_hook_target_accepts_loopback_urls(url: str) -> None:
    s = RotatingSecretSpec.from_dict(spec(target={"hook": {"overlapEnd": url}}))
    assert s.target is not None
    assert s.target.hook is not None
    assert s.target.hook.overlap_end == url


def test_the_agent_checks_the_overlap_with_its_own_jitter() -> None:
    """Issue 24: interval 2s, overlap 1.5s and ROTOR_JITTER=0.5 revoked the previous pair early
    in 98 of 203 rotations; the agent refuses it naming the field and the fix."""
    rotation = RotatingSecretSpec.from_dict(
        spec(rotation={"interval": "2s", "overlap": "1500ms"})
    ).rotation
    rotation.check_jitter(0.2, "spec.rotation.overlap")  # 1.6s > 1.5s: fine
    with pytest.raises(InvalidSpec) as e:
        rotation.check_jitter(0.5, "db: spec.rotation.overlap")
    assert e.value.field == "db: spec.rotation.overlap"
    assert "shortest jittered interval 1s" in e.value.problem
    assert "make overlap shorter than 1s" in e.value.fix
