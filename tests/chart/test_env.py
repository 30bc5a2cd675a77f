"""Every ROTOR_* variable the chart sets is one the process reads, and its value parses."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from rotor.settings.audit import AuditSettings
from rotor.settings.controller import ControllerSettings
from rotor.settings.webhook import WebhookSettings
from tests.chart.chartlib import (
    CANISTER_ID,
    COMBINATIONS,
    NAMESPACE,
    containers,
    env_of,
    find,
    render,
)


class Recorder(Mapping[str, str]):
    """An empty environment that remembers which variables were asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def read_by(
    settings: type[ControllerSettings] | type[WebhookSettings] | type[AuditSettings],
) -> set[str]:
    rec = Recorder()
    settings.from_env(rec)
    return rec.asked


PROCESSES: dict[str, Any] = {
    "controller": ControllerSettings,
    "webhook": WebhookSettings,
    "audit-receiver": AuditSettings,
}


def process_envs(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The env of every controller and webhook container, by container name."""
    out: dict[str, dict[str, str]] = {}
    for dep in find(render(values), "Deployment"):
        for name, c in containers(dep).items():
            assert name in PROCESSES, f"unexpected container {name}"
            out[name] = env_of(c)
    return out


def test_recorder_sees_the_settings_reads() -> None:
    assert {"ROTOR_ACL_BACKEND", "ROTOR_MANAGE_CERTS"} <= read_by(ControllerSettings)
    assert {"ROTOR_AGENT_IMAGE", "ROTOR_SIDECAR_MODE"} <= read_by(WebhookSettings)


@pytest.mark.parametrize("combo", COMBINATIONS)
def test_chart_sets_only_variables_the_process_reads(combo: str) -> None:
    envs = process_envs(COMBINATIONS[combo])
    assert {"controller", "webhook"} <= set(envs)
    for process, env in envs.items():
        unknown = set(env) - read_by(PROCESSES[process])
        assert not unknown, f"{process} does not read {sorted(unknown)}"
        assert all(k.startswith("ROTOR_") for k in env)


@pytest.mark.parametrize("combo", COMBINATIONS)
def test_rendered_env_parses(combo: str) -> None:
    envs = process_envs(COMBINATIONS[combo])
    c = ControllerSettings.from_env(envs["controller"])
    w = WebhookSettings.from_env(envs["webhook"])
    assert c.namespace == w.own_namespace == NAMESPACE
    assert c.webhook_config_name == "rotor-webhook"
    assert w.own_app_label == "rotor"
    assert w.cert_file == "/etc/rotor/tls/tls.crt"
    assert w.key_file == "/etc/rotor/tls/tls.key"


def test_values_arrive_in_the_settings() -> None:
    envs = process_envs(COMBINATIONS["everything"])
    c = ControllerSettings.from_env(envs["controller"])
    w = WebhookSettings.from_env(envs["webhook"])
    assert c.acl_backend == "canister"
    assert c.canister_verify == "strict"
    assert c.manage_certs is False
    assert c.leader_election is True
    assert c.log_level == "DEBUG" == w.log_level
    assert w.sidecar_mode == "classic"
    assert w.agent_image == "registry.example/rotor-agent:0.1.0"  # the tag: the appVersion
    envs = process_envs(
        {
            "acl": {"poll": "1m", "maxStaleness": "1h", "onStale": "revoke"},
            "controller": {"metricsPort": 9999, "restartUninjected": False},
            "webhook": {"port": 9443},
        }
    )
    c = ControllerSettings.from_env(envs["controller"])
    assert (c.acl_poll, c.max_staleness, c.on_stale) == (60.0, 3600.0, "revoke")
    assert c.metrics_port == 9999
    assert c.restart_uninjected is False
    assert c.acl_configmap == "rotor-acl"
    assert WebhookSettings.from_env(envs["webhook"]).port == 9443


def test_defaults_match_the_settings_defaults() -> None:
    """A default install runs with the same values a process has without any env."""
    envs = process_envs({})
    assert ControllerSettings.from_env(envs["controller"]) == ControllerSettings(
        namespace=NAMESPACE
    )
    # the agent image has no default (the chart fails without it; tests set IMAGES)
    assert WebhookSettings.from_env(envs["webhook"]) == WebhookSettings(
        own_namespace=NAMESPACE, agent_image="registry.example/rotor-agent:0.1.0"
    )
    envs = process_envs(COMBINATIONS["canister"])
    assert ControllerSettings.from_env(envs["controller"]) == ControllerSettings(
        namespace=NAMESPACE,
        acl_backend="canister",
        canister_id=CANISTER_ID,
    )
