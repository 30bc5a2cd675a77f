"""ACL backends (:class:`rotor.acl.AclBackend`): the ConfigMap (default) and the ICP canister."""

from __future__ import annotations

import importlib
from typing import Any

from kubernetes import client

from rotor.acl import AclBackend
from rotor.settings.controller import ControllerSettings


def make_backend(settings: ControllerSettings, core_v1: client.CoreV1Api) -> AclBackend:
    """The backend ``settings.acl_backend`` names, built from the settings."""
    if settings.acl_backend == "canister":
        # Imported lazily (ic-py is heavy and only the canister backend needs it); by name, so
        # this module does not depend on the canister module's typing.
        canister = importlib.import_module("controller.acl.canister")
        factory: Any = canister.CanisterAclBackend
        backend: AclBackend = factory.from_settings(settings, core_v1)
        return backend
    from controller.acl.configmap import ConfigMapAclBackend

    return ConfigMapAclBackend(core_v1, settings.namespace, settings.acl_configmap)
