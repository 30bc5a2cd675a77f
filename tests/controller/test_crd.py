"""The CRDs: generated from rotor.crd, structural, and in step with the rotor.spec parser."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotor import crd
from rotor.errors import InvalidSpec
from rotor.spec import ExternalStoreSpec, RotatingSecretSpec
from tests.kubeemu import CRD_DIR

# Rules only the parser checks (a schema cannot say them); the controller reports them as a
# Ready=False/InvalidSpec condition. A spec the schema accepts may fail the parser only here.
PARSER_ONLY = ("rotation.overlap", "rotation.interval", ".length", ".symbols", ".path", ".name")


def strict(schema: Any) -> Any:
    """The schema as the API server applies it under strict field validation: unknown fields
    are errors (``additionalProperties: false`` on every typed object with properties), and
    ``x-kubernetes-list-type: set`` items are unique."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
            if node.get("x-kubernetes-list-type") == "set":
                node["uniqueItems"] = True
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out)
    return out


def spec_validator(c: dict[str, Any]) -> jsonschema.Draft4Validator:
    schema = c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return jsonschema.Draft4Validator(strict(schema))


RSEC = spec_validator(crd.rotating_secret_crd())
STORE = spec_validator(crd.external_store_crd())


def test_committed_files_match_the_generator():
    committed = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    generated = {name: crd.render(c) for name, c in crd.all_crds().items()}
    assert committed == generated, "crds/ drifted: run `python -m rotor.crd --write crds`"


@pytest.mark.parametrize("name", sorted(crd.all_crds()))
def test_crd_is_a_valid_kubernetes_object(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        kubernetes_validate.validate(
            yaml.safe_load((CRD_DIR / name).read_text()), "1.33", strict=True
        )


def _structural(node: Any, where: str, in_logic: bool) -> list[str]:
    """Violations of the structural-schema rules apiextensions v1 enforces."""
    errors: list[str] = []
    if not isinstance(node, dict):
        return errors
    if in_logic:
        for banned in ("type", "description", "default", "nullable", "additionalProperties"):
            if banned in node:
                errors.append(f"{where}: {banned} inside oneOf/anyOf/not")
    elif "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        errors.append(f"{where}: no type")
    for key, sub in (node.get("properties") or {}).items():
        errors += _structural(sub, f"{where}.{key}", in_logic)
    if "items" in node:
        errors += _structural(node["items"], f"{where}[]", in_logic)
    for logic in ("oneOf", "anyOf", "allOf"):
        for i, sub in enumerate(node.get(logic) or []):
            errors += _structural(sub, f"{where}.{logic}[{i}]", True)
    if "not" in node:
        errors += _structural(node["not"], f"{where}.not", True)
    if "uniqueItems" in node:
        errors.append(f"{where}: uniqueItems is not allowed")
    return errors


@pytest.mark.parametrize("name", sorted(crd.all_crds()))
def test_schemas_are_structural(name):
    c = crd.all_crds()[name]
    version = c["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert _structural(version["schema"]["openAPIV3Schema"], "root", False) == []


def test_printer_columns_and_short_name():
    c = crd.rotating_secret_crd()
    cols = [col["name"] for col in c["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == ["Version", "Phase", "Writer", "Next rotation", "Age"]
    assert c["spec"]["names"]["shortNames"] == ["rsec"]


KEY = {"name": "password", "generator": {"type": "password"}}
VALID = [
    {"keys": [KEY]},
    {"keys": [{"name": "k", "generator": {"type": "password", "length": 8, "classes": ["digit"]}}]},
    {"keys": [{"name": "t", "generator": {"type": "token", "bytes": 16, "encoding": "hex"}}]},
    {"keys": [{"name": "h", "generator": {"type": "hex", "length": 2048}}]},
    {"keys": [{"name": "u", "generator": {"type": "uuid"}}]},
    {"keys": [{"name": "r", "generator": {"type": "rsa", "bits": 4096}}]},
    {"keys": [{"name": "e", "generator": {"type": "ecdsa", "curve": "P-384"}}]},
    {"keys": [{"name": "signing-key", "generator": {"type": "ed25519"}}, KEY]},
    {"keys": [KEY], "rotation": {"interval": "1h30m", "overlap": "0s"}, "suspend": True},
    {"keys": [KEY], "externalStores": [{"storeRef": {"name": "vault"}, "path": "shop/db"}]},
    {"keys": [KEY], "target": {"postgres": {"host": "pg.shop.svc", "role": "app"}}},
    {
        "keys": [KEY],
        "target": {
            "postgres": {
                "host": "/var/run/postgresql",
                "port": 5433,
                "database": "shop",
                "sslmode": "verify-full",
                "sslRootCert": "/etc/ca.pem",
                "connectTimeout": "10s",
                "role": "app",
                "strategy": "alternating",
                "template": "app_rw",
                "onOverlapEnd": "terminate",
                "usernameKey": "user",
                "admin": {"user": "rotor", "secretRef": {"name": "pg-admin", "passwordKey": "pw"}},
            }
        },
    },
    {"keys": [KEY], "target": {"hook": {"overlapEnd": "http://127.0.0.1:8080/retire"}}},
]
INVALID = [  # (spec, field the parser names)
    ({}, "spec.keys"),
    ({"keys": []}, "spec.keys"),
    ({"keys": [{"generator": {"type": "password"}}]}, "spec.keys[0].name"),
    ({"keys": [{"name": "a.b", "generator": {"type": "uuid"}}]}, "spec.keys[0].name"),
    ({"keys": [{"name": "a"}]}, "spec.keys[0].generator"),
    ({"keys": [{"name": "a", "generator": {"type": "md5"}}]}, "spec.keys[0].generator.type"),
    ({"keys": [{"name": "a", "generator": {}}]}, "spec.keys[0].generator.type"),
    (
        {"keys": [{"name": "a", "generator": {"type": "password", "length": 7}}]},
        "spec.keys[0].generator.length",
    ),
    (
        {"keys": [{"name": "a", "generator": {"type": "hex", "length": 15}}]},
        "spec.keys[0].generator.length",
    ),
    (
        {"keys": [{"name": "a", "generator": {"type": "password", "classes": ["emoji"]}}]},
        "spec.keys[0].generator.classes[0]",
    ),
    (
        {"keys": [{"name": "a", "generator": {"type": "password", "symbols": "ab"}}]},
        "spec.keys[0].generator.symbols",
    ),
    (
        {"keys": [{"name": "a", "generator": {"type": "uuid", "length": 32}}]},
        "spec.keys[0].generator.length",
    ),
    (
        {"keys": [{"name": "a", "generator": {"type": "token", "bits": 2048}}]},
        "spec.keys[0].generator.bits",
    ),
    (
        {"keys": [{"name": "a", "generator": {"type": "rsa", "bits": 1024}}]},
        "spec.keys[0].generator.bits",
    ),
    (
        {"keys": [{"name": "a", "generator": {"type": "ecdsa", "curve": "P-521"}}]},
        "spec.keys[0].generator.curve",
    ),
    ({"keys": [KEY], "rotation": {"interval": "24"}}, "spec.rotation.interval"),
    ({"keys": [KEY], "rotation": {"overlap": 5}}, "spec.rotation.overlap"),
    ({"keys": [KEY], "rotation": {"every": "1h"}}, "spec.rotation.every"),
    ({"keys": [KEY], "suspend": "yes"}, "spec.suspend"),
    ({"keys": [KEY], "extra": 1}, "spec.extra"),
    ({"keys": [KEY], "externalStores": [{"path": "a"}]}, "spec.externalStores[0].storeRef"),
    (
        {"keys": [KEY], "externalStores": [{"storeRef": {"name": "Vault"}, "path": "a"}]},
        "spec.externalStores[0].storeRef.name",
    ),
    (
        {"keys": [KEY], "externalStores": [{"storeRef": {"name": "v"}, "path": "/"}]},
        "spec.externalStores[0].path",
    ),
    ({"keys": [KEY], "target": {}}, "spec.target"),
    ({"keys": [KEY], "target": {"postgres": {"role": "app"}}}, "spec.target.postgres.host"),
    ({"keys": [KEY], "target": {"postgres": {"host": "h"}}}, "spec.target.postgres.role"),
    (
        {"keys": [KEY], "target": {"postgres": {"host": "h", "role": "App-1"}}},
        "spec.target.postgres.role",
    ),
    (
        {"keys": [KEY], "target": {"postgres": {"host": "h", "role": "a", "strategy": "x"}}},
        "spec.target.postgres.strategy",
    ),
    (
        {"keys": [KEY], "target": {"postgres": {"host": "h", "role": "a", "port": 0}}},
        "spec.target.postgres.port",
    ),
    (
        {"keys": [KEY], "target": {"postgres": {"host": "h", "role": "a", "sslmode": "on"}}},
        "spec.target.postgres.sslmode",
    ),
    (
        {
            "keys": [KEY],
            "target": {
                "postgres": {
                    "host": "h",
                    "role": "a",
                    "admin": {"secretRef": {"name": "s"}, "passwordFile": "/p"},
                }
            },
        },
        "spec.target.postgres.admin",
    ),
    (
        {"keys": [KEY], "target": {"postgres": {"host": "h", "role": "a", "admin": {"pw": 1}}}},
        "spec.target.postgres.admin.pw",
    ),
    (
        {"keys": [KEY], "target": {"hook": {"overlapEnd": "http://10.0.0.1:80/x"}}},
        "spec.target.hook.overlapEnd",
    ),
    # A user part moves the host: the agent would POST the previous values to the host after @.
    (
        {"keys": [KEY], "target": {"hook": {"overlapEnd": "http://127.0.0.1:1@10.0.0.1:80/x"}}},
        "spec.target.hook.overlapEnd",
    ),
    (
        {"keys": [KEY], "target": {"hook": {"overlapEnd": "http://localhost:1@evil.example/"}}},
        "spec.target.hook.overlapEnd",
    ),
    (
        {"keys": [KEY], "target": {"hook": {"overlapEnd": "http://127.0.0.1:80#frag"}}},
        "spec.target.hook.overlapEnd",
    ),
    (
        {
            "keys": [KEY],
            "target": {
                "postgres": {"host": "h", "role": "a"},
                "hook": {"overlapEnd": "http://127.0.0.1:1/x"},
            },
        },
        "spec.target",
    ),
]


@pytest.mark.parametrize("spec", VALID)
def test_valid_specs_pass_both(spec):
    RotatingSecretSpec.from_dict(spec)
    RSEC.validate(spec)


@pytest.mark.parametrize(("spec", "field"), INVALID)
def test_invalid_specs_fail_both(spec, field):
    with pytest.raises(InvalidSpec) as exc:
        RotatingSecretSpec.from_dict(spec)
    assert exc.value.field == field
    assert not RSEC.is_valid(spec)


STORE_VALID = [
    {"vault": {"server": "https://v:8200", "auth": {"kubernetes": {"role": "rotor"}}}},
    {
        "vault": {
            "server": "http://127.0.0.1:8200",
            "mount": "kv",
            "auth": {"token": {"secretRef": {"name": "vault-token", "key": "t"}}},
        }
    },
]
STORE_INVALID = [
    ({}, "spec.vault"),
    ({"vault": {"server": "v:8200", "auth": {"kubernetes": {"role": "r"}}}}, "spec.vault.server"),
    ({"vault": {"server": "https://v", "auth": {}}}, "spec.vault.auth"),
    (
        {
            "vault": {
                "server": "https://v",
                "auth": {"kubernetes": {"role": "r"}, "token": {"secretRef": {"name": "t"}}},
            }
        },
        "spec.vault.auth",
    ),
    (
        {"vault": {"server": "https://v", "auth": {"kubernetes": {}}}},
        "spec.vault.auth.kubernetes.role",
    ),
    (
        {"vault": {"server": "https://v", "caBundle": "x", "auth": {"kubernetes": {"role": "r"}}}},
        "spec.vault.caBundle",
    ),
]


@pytest.mark.parametrize("spec", STORE_VALID)
def test_valid_stores_pass_both(spec):
    ExternalStoreSpec.from_dict(spec)
    STORE.validate(spec)


@pytest.mark.parametrize(("spec", "field"), STORE_INVALID)
def test_invalid_stores_fail_both(spec, field):
    with pytest.raises(InvalidSpec) as exc:
        ExternalStoreSpec.from_dict(spec)
    assert exc.value.field == field
    assert not STORE.is_valid(spec)


# -- every spec the parser accepts, the schema accepts ----------------------------------------
_any_int = st.sampled_from([-1, 0, 7, 8, 15, 16, 32, 64, 1024, 1025, 2048, 2049, 3072, 4096])
_generators = st.fixed_dictionaries(
    {"type": st.sampled_from(["password", "token", "hex", "uuid", "rsa", "ecdsa", "ed25519", "x"])},
    optional={
        "length": _any_int,
        "classes": st.lists(
            st.sampled_from(["lower", "upper", "digit", "symbol", "x"]), max_size=5
        ),
        "symbols": st.sampled_from(["!#", "!!", "a!", "", "-_.", " "]),
        "bytes": _any_int,
        "encoding": st.sampled_from(["hex", "base64", "base64url", "b32"]),
        "bits": _any_int,
        "curve": st.sampled_from(["P-256", "P-384", "P-521"]),
    },
)
_durations = st.sampled_from(
    ["0s", "500ms", "1s", "90s", "1h", "1h30m", "24h", "7d", "1.5h", "h", "10"]
)
_specs = st.fixed_dictionaries(
    {
        "keys": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["password", "api_key", "tls-key", "a", "a.b", "-x"]),
                    "generator": _generators,
                }
            ),
            max_size=3,
        )
    },
    optional={
        "rotation": st.fixed_dictionaries(
            {}, optional={"interval": _durations, "overlap": _durations}
        ),
        "externalStores": st.lists(
            st.fixed_dictionaries(
                {
                    "storeRef": st.fixed_dictionaries(
                        {"name": st.sampled_from(["vault", "Vault", "a.b"])}
                    ),
                    "path": st.sampled_from(["shop/db", "/", "a/../b", "x"]),
                }
            ),
            max_size=2,
        ),
        "suspend": st.sampled_from([True, False, "yes"]),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs)
def test_parser_and_schema_agree(spec):
    try:
        RotatingSecretSpec.from_dict(spec)
        error = None
    except InvalidSpec as e:
        error = e
    if error is None:
        RSEC.validate(spec)
    elif RSEC.is_valid(spec):  # only the rules a schema cannot express may differ
        assert error.field.endswith(PARSER_ONLY), error
