"""The in-cluster agent's configuration, read from its environment once, at start
(``agent/cli.py``), then passed down: nothing else in the agent reads ``ROTOR_*``.

Three parts, each with its own reader: :class:`rotor.env.AgentEnv` (the pod's contract, what
the webhook writes), :class:`rotor.settings.agent.AgentSettings` (tuning and the Vault login)
and :class:`agent.kube.KubeConfig` (how to reach the API server). The standalone agent reads
only the settings (its secrets come from flags or a file: ``agent/cli.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.kube import KubeConfig
from rotor import env as agent_env
from rotor.env import AgentEnv
from rotor.errors import InvalidSpec
from rotor.settings.agent import AgentSettings


@dataclass(frozen=True)
class InClusterConfig:
    env: AgentEnv
    settings: AgentSettings
    kube: KubeConfig

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> InClusterConfig:
        """Raises InvalidSpec naming the variable for a bad or missing one."""
        env = AgentEnv.from_env(environ)
        settings = AgentSettings.from_env(environ)
        kube = KubeConfig.from_env(environ, timeout=settings.api_timeout)
        if env.mode == "rw" and not env.pod_name:
            raise InvalidSpec(agent_env.POD_NAME, "is not set", "set it from the downward API")
        return cls(env, settings, kube)
