"""rotor.env: the agent's environment, as the webhook writes it and the agent reads it."""

from __future__ import annotations

import pytest

from rotor import env as e
from rotor.annotations import Reload
from rotor.errors import InvalidSpec
from rotor.names import SecretRef


def base(**extra: str) -> dict[str, str]:
    return {e.MODE: "rw", e.SECRETS: "db", e.POD_NAMESPACE: "shop", **extra}


def test_round_trip():
    env = e.AgentEnv.from_env(
        base(
            **{
                e.RO_SECRETS: "other/x",
                e.RELOAD: "signal:HUP",
                e.APPLY_HOOK_ENV: "http://127.0.0.1:8080/apply",
                e.METRICS_PORT: "9999",
            }
        )
    )
    assert env.secrets == (SecretRef("shop", "db"),)
    assert env.ro_secrets == (SecretRef("other", "x"),)
    assert env.reload == Reload("signal", signal="HUP")
    assert env.metrics_port == 9999
    again = e.AgentEnv.from_env({**env.to_env(), e.POD_NAMESPACE: "shop"})
    assert again == env


def test_defaults():
    env = e.AgentEnv.from_env(base())
    assert env.mount_path == "/var/run/secrets/rotor"
    assert env.metrics_port == e.DEFAULT_METRICS_PORT == 9753
    assert env.service_account == "default"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({e.MODE: "rx", e.SECRETS: "db", e.POD_NAMESPACE: "shop"}, e.MODE),
        ({e.MODE: "ro", e.SECRETS: "db"}, e.POD_NAMESPACE),
        ({e.MODE: "ro", e.SECRETS: " , ", e.POD_NAMESPACE: "shop"}, e.SECRETS),
        (base(**{e.METRICS_PORT: "http"}), e.METRICS_PORT),
        (base(**{e.METRICS_PORT: "70000"}), e.METRICS_PORT),
        (base(**{e.RELOAD: "restart"}), e.RELOAD),
        (
            {
                e.MODE: "ro",
                e.SECRETS: "db",
                e.POD_NAMESPACE: "shop",
                e.APPLY_HOOK_ENV: "http://127.0.0.1:1/a",
            },
            e.APPLY_HOOK_ENV,
        ),
    ],
)
def test_bad_env_names_the_variable(env, field):
    with pytest.raises(InvalidSpec) as exc:
        e.AgentEnv.from_env(env)
    assert exc.value.field == field
