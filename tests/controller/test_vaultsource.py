"""controller.vaultsource: which paths the audit receiver watches, and whose writes are Rotor's."""

from __future__ import annotations

import json

from controller.model import read_rotating_secret
from controller.vaultsource import audit_config, targets
from rotor import API
from rotor.errors import InvalidSpec
from rotor.names import SecretRef
from rotor.spec import ExternalStoreSpec


def rsec(ns: str, name: str, stores: list[tuple[str, str]]):
    return read_rotating_secret(
        {
            "apiVersion": API,
            "kind": "RotatingSecret",
            "metadata": {"name": name, "namespace": ns, "uid": "u", "resourceVersion": "1"},
            "spec": {
                "keys": [{"name": "password", "generator": {"type": "password"}}],
                "externalStores": [{"storeRef": {"name": s}, "path": p} for s, p in stores],
            },
        }
    )


def store(mount: str, role: str | None = None) -> ExternalStoreSpec:
    auth = {"kubernetes": {"role": role}} if role else {"token": {"secretRef": {"name": "t"}}}
    return ExternalStoreSpec.from_dict(
        {"vault": {"server": "https://v:8200", "mount": mount, "auth": auth}}
    )


def test_paths_of_valid_stores_and_rotor_roles():
    rsecs = {
        SecretRef("shop", "db"): rsec("shop", "db", [("vault", "shop/db"), ("kv", "/x/y/")]),
        SecretRef("shop", "api"): rsec("shop", "api", [("broken", "shop/api")]),
        SecretRef("web", "w"): rsec("web", "w", [("missing", "web/w")]),
    }
    stores = {
        ("shop", "vault"): store("secret", role="rotor-agent"),
        ("shop", "kv"): store("team/kv"),
        ("shop", "broken"): InvalidSpec("spec.vault", "bad", "fix"),
    }
    assert [(t.secret.name, t.full) for t in targets(rsecs, stores)] == [
        ("db", "secret/shop/db"),
        ("db", "team/kv/x/y"),
    ]
    cfg = json.loads(audit_config(rsecs, stores))
    assert cfg["paths"] == ["secret/shop/db", "team/kv/x/y"]
    assert cfg["rotor"]["roles"] == ["rotor-agent"]


def test_no_references_no_paths():
    assert json.loads(audit_config({}, {}))["paths"] == []
