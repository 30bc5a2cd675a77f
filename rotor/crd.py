"""The CustomResourceDefinitions of Rotor, generated from the rotor.spec types and limits.

One source of truth: the limits, enums and patterns below are the constants
:mod:`rotor.spec`, :mod:`rotor.names` and :mod:`rotor.durations` use, and ``crds/*.yaml`` is this
module's output (a test fails when the committed files drift)::

    python -m rotor.crd --write crds        # regenerate
    python -m rotor.crd                     # print every CRD as one YAML stream

The schemas are structural (apiextensions.k8s.io/v1): every field has a type, ``oneOf``/``not``
carry value validations only. Unknown fields are pruned by the API server and rejected under
``kubectl``'s default strict field validation. A few rules a schema cannot say (``overlap`` shorter
than ``interval``, a minimum interval of 1s, as many password characters as classes, distinct
symbols, no ``..`` in a KV path) are checked by :mod:`rotor.spec`; the controller reports a
violation as the ``Ready=False`` condition with reason ``InvalidSpec`` naming the field and the fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from rotor import API_GROUP, API_VERSION
from rotor import spec as s
from rotor.durations import PATTERN as DURATION_PATTERN
from rotor.names import DNS1123_SUBDOMAIN, KEY_NAME, LOOPBACK_URL
from rotor.status import STATUS_SCHEMA

Schema = dict[str, Any]
SHORT_NAME = "rsec"
CATEGORIES = ["rotor"]
_PASSWORD_FIELDS = ("length", "classes", "symbols")
_TOKEN_FIELDS = ("bytes", "encoding")
_ALL_FIELDS = (*_PASSWORD_FIELDS, *_TOKEN_FIELDS, "bits", "curve")
SYMBOLS_PATTERN = r"^[!-/:-@\[-`{-~]+$"
"""Printable ASCII that is neither a letter, a digit nor a space."""


def _name(description: str) -> Schema:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": DNS1123_SUBDOMAIN,
        "description": description,
    }


def _only(gtype: str, allowed: tuple[str, ...], extra: Schema | None = None) -> Schema:
    """One ``oneOf`` branch: ``type`` is ``gtype`` and no other generator's fields are set."""
    props: Schema = {"type": {"enum": [gtype]}}
    props.update(extra or {})
    branch: Schema = {"properties": props}
    banned = [f for f in _ALL_FIELDS if f not in allowed]
    if banned:
        branch["not"] = {"anyOf": [{"required": [f]} for f in banned]}
    return branch


def generator_schema() -> Schema:
    return {
        "type": "object",
        "description": "How the value is made. Only the fields of the chosen type may be set.",
        "required": ["type"],
        "properties": {
            "type": {
                "type": "string",
                "enum": list(s.GENERATOR_TYPES),
                "description": "password | token | hex | uuid | rsa | ecdsa | ed25519 "
                "(key pairs also write <key>.pub)",
            },
            "length": {
                "type": "integer",
                "minimum": min(s.MIN_PASSWORD_LENGTH, s.MIN_HEX_LENGTH),
                "maximum": max(s.MAX_PASSWORD_LENGTH, s.MAX_HEX_LENGTH),
                "description": f"password: characters (default {s.DEFAULT_PASSWORD_LENGTH}, "
                f"{s.MIN_PASSWORD_LENGTH}-{s.MAX_PASSWORD_LENGTH}); hex: digits (default "
                f"{s.DEFAULT_HEX_LENGTH}, {s.MIN_HEX_LENGTH}-{s.MAX_HEX_LENGTH})",
            },
            "classes": {
                "type": "array",
                "minItems": 1,
                "x-kubernetes-list-type": "set",
                "items": {"type": "string", "enum": list(s.PASSWORD_CLASSES)},
                "description": "password: character classes, each used at least once "
                "(default: all)",
            },
            "symbols": {
                "type": "string",
                "minLength": 1,
                "pattern": SYMBOLS_PATTERN,
                "description": f"password: the symbol alphabet (default {s.DEFAULT_SYMBOLS!r})",
            },
            "bytes": {
                "type": "integer",
                "minimum": s.MIN_TOKEN_BYTES,
                "maximum": s.MAX_TOKEN_BYTES,
                "description": f"token: random bytes (default {s.DEFAULT_TOKEN_BYTES})",
            },
            "encoding": {
                "type": "string",
                "enum": list(s.TOKEN_ENCODINGS),
                "description": "token: encoding (default base64url)",
            },
            "bits": {
                "type": "integer",
                "enum": list(s.RSA_BITS),
                "description": f"rsa: modulus size (default {s.DEFAULT_RSA_BITS})",
            },
            "curve": {
                "type": "string",
                "enum": list(s.ECDSA_CURVES),
                "description": f"ecdsa: curve (default {s.DEFAULT_ECDSA_CURVE})",
            },
        },
        "oneOf": [
            _only(
                "password",
                _PASSWORD_FIELDS,
                {
                    "length": {
                        "minimum": s.MIN_PASSWORD_LENGTH,
                        "maximum": s.MAX_PASSWORD_LENGTH,
                    }
                },
            ),
            _only("token", _TOKEN_FIELDS),
            _only(
                "hex",
                ("length",),
                {"length": {"minimum": s.MIN_HEX_LENGTH, "maximum": s.MAX_HEX_LENGTH}},
            ),
            _only("rsa", ("bits",)),
            _only("ecdsa", ("curve",)),
            *(
                _only(t, ())
                for t in s.GENERATOR_TYPES
                if t not in ("password", "token", "hex", "rsa", "ecdsa")
            ),
        ],
    }


def rotating_secret_spec_schema() -> Schema:
    duration = {"type": "string", "pattern": DURATION_PATTERN}
    return {
        "type": "object",
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "minItems": 1,
                "description": "Each key is one file; all keys of a secret rotate together.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {
                    "type": "object",
                    "required": ["name", "generator"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 200,
                            "pattern": KEY_NAME,
                            "description": "The file and Secret data key (letters, digits, "
                            "'-', '_').",
                        },
                        "generator": generator_schema(),
                    },
                },
            },
            "rotation": {
                "type": "object",
                "properties": {
                    "interval": {
                        **duration,
                        "description": "How often to rotate, e.g. 24h (default 24h, at least 1s).",
                    },
                    "overlap": {
                        **duration,
                        "description": "How long <key>.previous stays (default 1h or half the "
                        "interval; shorter than interval; 0s turns it off).",
                    },
                },
            },
            "externalStores": {
                "type": "array",
                "description": "Committed values are pushed here first.",
                "items": {
                    "type": "object",
                    "required": ["storeRef", "path"],
                    "properties": {
                        "storeRef": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": _name("An ExternalStore in the same namespace.")
                            },
                        },
                        "path": {
                            "type": "string",
                            "minLength": 1,
                            "pattern": "[^/]",
                            "description": "KV v2 path under the store's mount, e.g. "
                            "shop/db-password.",
                        },
                    },
                },
            },
            "suspend": {
                "type": "boolean",
                "description": "Stop rotating (values already published stay).",
            },
            "target": target_schema(),
        },
    }


def _role(description: str) -> Schema:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": s.MAX_ROLE_LENGTH,
        "pattern": s.ROLE_PATTERN,
        "description": description,
    }


def target_schema() -> Schema:
    """``spec.target``: exactly one of ``postgres`` and ``hook`` (docs/database.md)."""
    key = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": KEY_NAME}
    duration = {"type": "string", "pattern": DURATION_PATTERN}
    return {
        "type": "object",
        "description": "What the writer's agent does with each value besides writing files: "
        "exactly one of postgres and hook.",
        "properties": {
            "postgres": {
                "type": "object",
                "required": ["host", "role"],
                "description": "Change a PostgreSQL role's password (a SCRAM verifier) before "
                "each commit; the payload gets a username file too.",
                "properties": {
                    "host": {
                        "type": "string",
                        "minLength": 1,
                        "description": "Host name or IP, or the folder of a Unix socket.",
                    },
                    "port": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 65535,
                        "description": f"Default {s.DEFAULT_POSTGRES_PORT}.",
                    },
                    "database": {
                        "type": "string",
                        "minLength": 1,
                        "description": f"Database to connect to (default "
                        f"{s.DEFAULT_POSTGRES_DATABASE}).",
                    },
                    "sslmode": {
                        "type": "string",
                        "enum": list(s.SSL_MODES),
                        "description": "libpq sslmode (default prefer).",
                    },
                    "sslRootCert": {
                        "type": "string",
                        "minLength": 1,
                        "description": "Path of the CA file for verify-ca / verify-full.",
                    },
                    "connectTimeout": {
                        **duration,
                        "description": "Default 5s (1s to 2m).",
                    },
                    "role": _role(
                        "The role (single) or the base name of the two roles <role>_a and "
                        "<role>_b (alternating)."
                    ),
                    "strategy": {
                        "type": "string",
                        "enum": list(s.POSTGRES_STRATEGIES),
                        "description": "alternating (default; zero failed logins), per-version "
                        "(a role per version, dropped when its overlap ends) or single (clients "
                        "must retry a failed login).",
                    },
                    "template": _role(
                        "alternating, per-version: roles that do not exist are created as "
                        "members of this role (its grants)."
                    ),
                    "onOverlapEnd": {
                        "type": "string",
                        "enum": list(s.OVERLAP_END_ACTIONS),
                        "description": "What happens to the retired role when the overlap "
                        "ends: lock (default; NOLOGIN; per-version: dropped, its sessions ended), "
                        "terminate (lock and end its sessions) or keep.",
                    },
                    "usernameKey": {**key, "description": "The username file (default username)."},
                    "passwordKey": {
                        **key,
                        "description": "The key whose value is the password (default password).",
                    },
                    "admin": {
                        "type": "object",
                        "description": "Who changes the passwords; with neither secretRef nor "
                        "passwordFile, no password (peer or trust authentication).",
                        "properties": {
                            "user": {
                                "type": "string",
                                "minLength": 1,
                                "description": f"Default {s.DEFAULT_POSTGRES_ADMIN}.",
                            },
                            "secretRef": {
                                "type": "object",
                                "required": ["name"],
                                "description": "A Secret in the same namespace; the writer's "
                                "Role is granted get on it.",
                                "properties": {
                                    "name": _name("The Secret's name."),
                                    "usernameKey": {
                                        **key,
                                        "description": "Default username (absent: user).",
                                    },
                                    "passwordKey": {**key, "description": "Default password."},
                                },
                            },
                            "passwordFile": {
                                "type": "string",
                                "pattern": "^/",
                                "description": "An absolute path of a file holding the password.",
                            },
                        },
                        "not": {"required": ["secretRef", "passwordFile"]},
                    },
                },
            },
            "hook": {
                "type": "object",
                "required": ["overlapEnd"],
                "description": "For apps that are not PostgreSQL.",
                "properties": {
                    "overlapEnd": {
                        "type": "string",
                        "pattern": LOOPBACK_URL,
                        "description": "Loopback URL POSTed when the previous value's overlap "
                        "ends.",
                    }
                },
            },
        },
        "oneOf": [{"required": ["postgres"]}, {"required": ["hook"]}],
    }


def external_store_spec_schema() -> Schema:
    return {
        "type": "object",
        "required": ["vault"],
        "properties": {
            "vault": {
                "type": "object",
                "required": ["server", "auth"],
                "properties": {
                    "server": {
                        "type": "string",
                        "pattern": "^https?://",
                        "description": "Vault or OpenBao address, e.g. https://vault.vault:8200",
                    },
                    "mount": {
                        "type": "string",
                        "minLength": 1,
                        "pattern": "[^/]",
                        "description": "KV v2 mount (default secret).",
                    },
                    "caBundle": {
                        "type": "string",
                        "pattern": "BEGIN CERTIFICATE",
                        "description": "PEM CA certificates.",
                    },
                    "auth": {
                        "type": "object",
                        "description": "Exactly one of token and kubernetes.",
                        "properties": {
                            "token": {
                                "type": "object",
                                "required": ["secretRef"],
                                "properties": {
                                    "secretRef": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {
                                            "name": _name("A Secret in the same namespace."),
                                            "key": {
                                                "type": "string",
                                                "minLength": 1,
                                                "description": "Key holding the token "
                                                "(default token).",
                                            },
                                        },
                                    }
                                },
                            },
                            "kubernetes": {
                                "type": "object",
                                "required": ["role"],
                                "properties": {
                                    "role": {"type": "string", "minLength": 1},
                                    "mountPath": {
                                        "type": "string",
                                        "minLength": 1,
                                        "description": "Auth mount (default kubernetes).",
                                    },
                                },
                            },
                        },
                        "oneOf": [{"required": ["token"]}, {"required": ["kubernetes"]}],
                    },
                },
            }
        },
    }


def _crd(
    kind: str,
    plural: str,
    spec_schema: Schema,
    status_schema: Schema,
    columns: list[Schema],
    short_names: list[str],
    description: str,
) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "rotor"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def rotating_secret_crd() -> Schema:
    return _crd(
        "RotatingSecret",
        "rotatingsecrets",
        rotating_secret_spec_schema(),
        STATUS_SCHEMA,
        [
            {"name": "Version", "type": "integer", "jsonPath": ".status.version"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Writer", "type": "string", "jsonPath": ".status.writer.pod"},
            {"name": "Next rotation", "type": "date", "jsonPath": ".status.nextRotation"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        [SHORT_NAME],
        "What to generate and how often; Rotor rotates it and delivers it to granted workloads.",
    )


def external_store_crd() -> Schema:
    return _crd(
        "ExternalStore",
        "externalstores",
        external_store_spec_schema(),
        {
            "type": "object",
            "properties": {"conditions": STATUS_SCHEMA["properties"]["conditions"]},
        },
        [
            {"name": "Server", "type": "string", "jsonPath": ".spec.vault.server"},
            {"name": "Mount", "type": "string", "jsonPath": ".spec.vault.mount"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        [],
        "How to reach an external store (Vault/OpenBao KV v2) that committed values go to.",
    )


def all_crds() -> dict[str, Schema]:
    """File name -> CRD."""
    out = {}
    for crd in (rotating_secret_crd(), external_store_crd()):
        out[f"{crd['metadata']['name']}.yaml"] = crd
    return out


HEADER = "# Generated by `python -m rotor.crd --write crds` from rotor/crd.py; do not edit.\n"


def render(crd: Schema) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, crd in all_crds().items():
        path = directory / name
        path.write_text(render(crd))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rotor.crd", description=__doc__)
    parser.add_argument("--write", metavar="DIR", type=Path, help="write one file per CRD")
    args = parser.parse_args(argv)
    if args.write:
        for p in write(args.write):
            print(p)
    else:
        sys.stdout.write("---\n".join(render(c) for c in all_crds().values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
