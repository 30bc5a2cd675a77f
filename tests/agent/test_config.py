"""The in-cluster agent's configuration, read once from its environment (agent/config.py)."""

from __future__ import annotations

import pytest

from agent.config import InClusterConfig
from rotor.errors import InvalidSpec

POD = {
    "ROTOR_MODE": "rw",
    "ROTOR_SECRETS": "shop/db",
    "ROTOR_POD_NAME": "api-0",
    "ROTOR_POD_NAMESPACE": "shop",
    "ROTOR_KUBE_URL": "http://127.0.0.1:8080",
}


def test_every_part_is_read_from_one_environment() -> None:
    config = InClusterConfig.from_env(
        POD
        | {
            "ROTOR_HOOK_TIMEOUT": "3s",
            "ROTOR_RELOAD_PROCESS": "nginx",
            "ROTOR_VAULT_TOKEN_FILE": "/run/vault/token",
            "ROTOR_VAULT_TIMEOUT": "4.5",
        }
    )
    assert config.env.pod_name == "api-0"
    assert config.kube.url == "http://127.0.0.1:8080"
    assert config.kube.timeout == config.settings.api_timeout
    s = config.settings
    assert (s.hook_timeout, s.reload_process) == (3.0, "nginx")
    assert (s.vault_token_file, s.vault_timeout) == ("/run/vault/token", 4.5)


def test_a_vault_token_never_shows_in_the_settings_repr() -> None:
    config = InClusterConfig.from_env(POD | {"ROTOR_VAULT_TOKEN": "hvs.secret"})
    assert config.settings.vault_token == "hvs.secret"
    assert "hvs.secret" not in repr(config)


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"ROTOR_MODE": "rx"}, "ROTOR_MODE"),
        ({"ROTOR_POD_NAME": ""}, "ROTOR_POD_NAME"),
        ({"ROTOR_JITTER": "2"}, "ROTOR_JITTER"),
        ({"ROTOR_VAULT_TIMEOUT": "ten"}, "ROTOR_VAULT_TIMEOUT"),
        ({"ROTOR_KUBE_URL": "127.0.0.1"}, "ROTOR_KUBE_URL"),
    ],
)
def test_a_bad_variable_is_named(change: dict[str, str], variable: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        InClusterConfig.from_env(POD | change)
    assert e.value.field == variable
