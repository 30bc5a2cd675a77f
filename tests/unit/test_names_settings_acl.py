"""rotor.names, rotor.settings and rotor.acl."""

from __future__ import annotations

import pytest

from rotor.acl import AclSnapshot, Grant
from rotor.errors import InvalidSpec
from rotor.names import Principal, SecretRef, check_key_name, check_name, check_namespace
from rotor.settings.agent import AgentSettings
from rotor.settings.controller import ControllerSettings
from rotor.settings.webhook import WebhookSettings


@pytest.mark.parametrize("name", ["db", "db-password", "a.b-c", "x" * 253])
def test_good_names(name):
    assert check_name(name, "f") == name


@pytest.mark.parametrize("name", ["", "DB", "-db", "db-", "a_b", "x" * 254, None, 3])
def test_bad_names(name):
    with pytest.raises(InvalidSpec) as exc:
        check_name(name, "metadata.name")
    assert exc.value.field == "metadata.name"
    assert exc.value.fix


@pytest.mark.parametrize("name", ["password", "API_KEY", "tls-key", "k1"])
def test_good_key_names(name):
    assert check_key_name(name, "f") == name


@pytest.mark.parametrize("name", ["a.b", "-a", "a b", "a/b", "", "x" * 201])
def test_bad_key_names(name):
    with pytest.raises(InvalidSpec):
        check_key_name(name, "spec.keys[0].name")


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (check_name, "db\n"),
        (check_namespace, "shop\n"),
        (check_key_name, "password\n"),
    ],
    ids=["name", "namespace", "key"],
)
def test_a_trailing_newline_is_not_a_name(check, value):
    """`$` also matches before a final newline; names are matched whole (fullmatch)."""
    with pytest.raises(InvalidSpec, match="is not a valid"):
        check(value, "field")


def test_a_principal_namespace_with_a_newline_is_refused():
    with pytest.raises(InvalidSpec, match="is not a valid namespace"):
        Principal.parse("shop\n/web")


def test_refs():
    assert str(SecretRef.parse("db", "shop", "f")) == "shop/db"
    assert SecretRef.parse("other/db", "shop", "f") == SecretRef("other", "db")
    with pytest.raises(InvalidSpec):
        SecretRef.parse("db", None, "f")
    assert str(Principal.parse("shop/api")) == "shop/api"
    with pytest.raises(InvalidSpec):
        Principal.parse("api")


def test_acl_allows_exact_grant_and_writer_reads():
    s, p = SecretRef("shop", "db"), Principal("shop", "api")
    snap = AclSnapshot(version=1, grants=frozenset({Grant(s, p, "rw")}))
    assert snap.allows(s, p, "rw")
    assert snap.allows(s, p, "ro")
    assert not snap.allows(s, Principal("shop", "web"), "ro")
    ro_only = AclSnapshot(version=2, grants=frozenset({Grant(s, p, "ro")}))
    assert not ro_only.allows(s, p, "rw")


def test_settings_defaults_and_env():
    assert ControllerSettings.from_env({}) == ControllerSettings()
    assert WebhookSettings.from_env({}) == WebhookSettings()
    assert AgentSettings.from_env({}).jitter == 0.05
    c = ControllerSettings.from_env({"ROTOR_ACL_POLL": "5s", "ROTOR_ACL_BACKEND": "canister"})
    assert c.acl_poll == 5.0
    assert c.acl_backend == "canister"


@pytest.mark.parametrize(
    ("cls", "env", "var"),
    [
        (ControllerSettings, {"ROTOR_ACL_POLL": "30"}, "ROTOR_ACL_POLL"),
        (ControllerSettings, {"ROTOR_ACL_BACKEND": "etcd"}, "ROTOR_ACL_BACKEND"),
        (ControllerSettings, {"ROTOR_LEADER_ELECTION": "perhaps"}, "ROTOR_LEADER_ELECTION"),
        (WebhookSettings, {"ROTOR_WEBHOOK_PORT": "0"}, "ROTOR_WEBHOOK_PORT"),
        (WebhookSettings, {"ROTOR_SIDECAR_MODE": "sidecar"}, "ROTOR_SIDECAR_MODE"),
        (AgentSettings, {"ROTOR_JITTER": "0.9"}, "ROTOR_JITTER"),
        (AgentSettings, {"ROTOR_FILE_MODE": "rw"}, "ROTOR_FILE_MODE"),
        (AgentSettings, {"ROTOR_FILE_MODE": "0666"}, "ROTOR_FILE_MODE"),
    ],
)
def test_bad_settings_name_the_variable(cls, env, var):
    with pytest.raises(InvalidSpec) as exc:
        cls.from_env(env)
    assert exc.value.field == var
